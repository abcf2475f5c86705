"""Which commands run under torchrun, and joining its process group before they start.

A command opts in with ``p.set_defaults(distributed=True)`` (its module then shards its work
over ``nalln.distributed.current()``); any other command started with ``WORLD_SIZE > 1`` is
refused with one line instead of running N copies that overwrite each other's files. On ranks
other than 0, standard output is silenced: rank 0 prints for the job.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from nalln.distributed import world as dist_world
from nalln.errors import NallnError


def _device_type(args: argparse.Namespace) -> str:
    spec = str(getattr(args, "device", "") or "cpu")
    if spec == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if spec.startswith("cuda") else "cpu"


def join_world(args: argparse.Namespace) -> dist_world.World | None:
    """The world this command runs in (None: one process, nothing joined)."""
    if not dist_world.requested():
        return None
    name = " ".join(str(getattr(args, k)) for k in ("command", "action") if getattr(args, k, None))
    if not getattr(args, "distributed", False):
        raise NallnError(
            f"`nalln {name}` does not run under torchrun (WORLD_SIZE="
            f"{os.environ.get('WORLD_SIZE')}); run it as one process. Commands that do: "
            "train, finetune-fixed-point, predict, evaluate, ablate, robustness, energy report, "
            "simulate --backend loihi-emulator"
        )
    world = dist_world.init_from_env(_device_type(args))
    if not world.main:  # warnings too: every rank would repeat them
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        logging.getLogger().setLevel(logging.ERROR)
    return world


def leave_world() -> None:
    dist_world.shutdown()
