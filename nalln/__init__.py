"""nalln: NeurALLNet, an attention-based convolutional SNN for ALL subtypes, from training to
neuromorphic hardware.

The public entry points are the model registry (:func:`create`), the run folder
(:class:`nalln.runs.RunDir`) and the command line (``nalln --help``).
"""

__version__ = "0.1.0"

from nalln.models import create, list_models

__all__ = ["__version__", "create", "list_models"]
