"""Making a trained run deployable on a chip: fine-tuning onto Loihi 2's exact fixed-point grid
(:mod:`~nalln.deploy.finetune_fixed_point`) and its demo step.

It sits above :mod:`nalln.training` (whose loop pieces it reuses) and :mod:`nalln.conversion`
(whose export and lowering define the plan that runs on the chip).
"""
