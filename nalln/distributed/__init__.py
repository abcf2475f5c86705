"""Running nalln under ``torchrun``: the process group, sharding and merging, and a CPU-capable
synchronised BatchNorm. PyTorch's own engine (torchrun, SLURM) starts the processes; this package
only joins them (docs/distributed.md)."""

from nalln.distributed.collect import agree, gather_shards, shard_range
from nalln.distributed.world import SINGLE, World, current, init_from_env, shutdown

__all__ = [
    "SINGLE",
    "World",
    "agree",
    "current",
    "gather_shards",
    "init_from_env",
    "shard_range",
    "shutdown",
]
