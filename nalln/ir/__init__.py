"""The deployment plan every back-end builds from: frozen stage dataclasses
(:mod:`~nalln.ir.plan`), the SE-mode type (:mod:`~nalln.ir.se_mode`), the reset-rule and
spike-mode types (:mod:`~nalln.ir.semantics`), the input-drive type
(held or per-step inputs, :mod:`~nalln.ir.drive`), the float reference
simulation (:mod:`~nalln.ir.reference`) and the SE gate in numpy (:mod:`~nalln.ir.se_gate`).

It sits below :mod:`nalln.loihi` and :mod:`nalln.conversion` and imports neither.
"""
