"""nalln: NeurALLNet, an attention-based convolutional SNN for ALL subtypes, from training to
neuromorphic hardware.

The public entry points are the model registry (:func:`create`), the run folder
(:class:`nalln.runs.RunDir`) and the command line (``nalln --help``).
"""

__version__ = "0.1.0"

import os as _os

if (_os.environ.get("WORLD_SIZE") or "1").strip() not in ("0", "1"):
    # Under torchrun: c10d's C++ layer prints a stack trace for every failed connect attempt
    # (read once, when torch loads); nalln reports a failed rendezvous in one line. An explicit
    # TORCH_CPP_LOG_LEVEL wins.
    _os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from nalln.models import create, list_models

__all__ = ["__version__", "create", "list_models"]
