"""The process group a command runs in: one process (``SINGLE``), or the ranks torchrun started.

torchrun (and SLURM via ``srun torchrun``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` joins that group with gloo on CPU or
NCCL on CUDA. The store is connected with a short timeout (``NALLN_RENDEZVOUS_TIMEOUT``, default
60 s) so that an unreachable rendezvous is one line, not a 30-minute hang; collectives get a long
one (``NALLN_COLLECTIVE_TIMEOUT``, default 1800 s) because rank 0 writes checkpoints and plots
while the others wait.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from nalln.errors import NallnError

RENDEZVOUS_TIMEOUT_ENV = "NALLN_RENDEZVOUS_TIMEOUT"
COLLECTIVE_TIMEOUT_ENV = "NALLN_COLLECTIVE_TIMEOUT"


class RendezvousError(NallnError):
    """The group could not be joined: every rank says so (there is no rank 0 to speak)."""


@dataclass(frozen=True)
class World:
    """Where this process stands among the ranks of one job."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """A CUDA device becomes this rank's own GPU (``cuda:LOCAL_RANK``)."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE = World()
_current: World = SINGLE
_store: dist.Store | None = None
EXIT_KEY = "nalln/rank0-reported"


def current() -> World:
    """The world :func:`init_from_env` joined, else one process."""
    return _current


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise NallnError(f"{name}={raw!r} is not an integer; torchrun sets it, do not") from None


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise NallnError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise NallnError(f"{name} must be positive seconds; got {raw}")
    return value


def requested() -> bool:
    """Whether the environment asks for more than one process (torchrun or a hand-set env)."""
    return _env_int("WORLD_SIZE", 1) > 1


def init_from_env(device_type: str = "cpu") -> World:
    """Join the process group torchrun describes; one process when ``WORLD_SIZE`` is unset or 1.

    ``device_type`` picks the backend: NCCL for CUDA, gloo otherwise.
    """
    global _current
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        _current = SINGLE
        return SINGLE
    if dist.is_initialized():
        return _current
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise NallnError(f"RANK={rank} is outside WORLD_SIZE={size}; start the job with torchrun")
    host = os.environ.get("MASTER_ADDR", "")
    port = _env_int("MASTER_PORT", 0)
    if not host or not port:
        raise NallnError(
            f"WORLD_SIZE={size} but MASTER_ADDR/MASTER_PORT are not set; start the job with "
            "torchrun (it sets them) or unset WORLD_SIZE to run in one process"
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    wait = _seconds(RENDEZVOUS_TIMEOUT_ENV, 60.0)
    # torchrun's agent hosts the store itself; a hand-set environment makes rank 0 host it.
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    try:
        store = dist.TCPStore(
            host,
            port,
            size,
            is_master=(rank == 0 and not agent),
            timeout=timedelta(seconds=wait),
            wait_for_workers=True,  # rank 0 hosting the store waits for all, within `wait`
        )
    except (RuntimeError, OSError, dist.DistError) as exc:
        raise RendezvousError(
            f"rank {rank} of {size} could not reach the rendezvous at {host}:{port} within "
            f"{wait:g} s ({str(exc).splitlines()[0][:120]}); check MASTER_ADDR/MASTER_PORT or "
            f"torchrun's --rdzv-endpoint, or raise {RENDEZVOUS_TIMEOUT_ENV}"
        ) from None
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=size,
        timeout=timedelta(seconds=_seconds(COLLECTIVE_TIMEOUT_ENV, 1800.0)),
    )
    global _store
    _store = store
    _current = World(rank, size, local, backend)
    return _current


def report_and_wait(seconds: float = 10.0) -> None:
    """On a user error under torchrun: rank 0 marks that it has printed; the other ranks wait
    (at most ``seconds``) for that mark before exiting, because torchrun stops every rank as
    soon as one exits non-zero - a fast rank 1 would otherwise silence rank 0's message."""
    if _store is None or not _current.distributed:
        return
    try:
        if _current.main:
            _store.set(EXIT_KEY, "1")
        else:
            _store.wait([EXIT_KEY], timedelta(seconds=seconds))
    except (RuntimeError, dist.DistError):
        pass  # rank 0 is gone or never errs: nothing to wait for


def shutdown() -> None:
    """Leave the process group (idempotent)."""
    global _current, _store
    if dist.is_initialized():
        dist.destroy_process_group()
    _current, _store = SINGLE, None
