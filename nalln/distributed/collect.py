"""Sharding work over ranks and merging it back in one process's order.

Shards are contiguous (rank r takes items ``[r*n/W, (r+1)*n/W)``), so concatenating the ranks'
results in rank order gives exactly the list one process makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch.distributed as dist

from nalln.distributed.world import World
from nalln.errors import NallnError

T = TypeVar("T")


def shard_range(n: int, world: World) -> range:
    """This rank's contiguous share of ``n`` items (sizes differ by at most one)."""
    start = n * world.rank // world.size
    stop = n * (world.rank + 1) // world.size
    return range(start, stop)


def gather_shards(part: list[T], world: World) -> list[T]:
    """Every rank's ``part`` concatenated in rank order, on every rank."""
    if not world.distributed:
        return list(part)
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, part)
    return [item for p in parts for item in p]


def all_equal(value: Any, world: World, what: str, describe: Callable[[Any, Any], str]) -> None:
    """Refuse ranks that were given different ``value`` s (e.g. settings): one line naming the
    first rank that differs from rank 0 and how (``describe(rank0_value, its_value)``)."""
    if not world.distributed:
        return
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    for rank, other in enumerate(values[1:], start=1):
        if other != values[0]:
            raise NallnError(
                f"ranks were started with different {what}: rank {rank} differs from rank 0 in "
                f"{describe(values[0], other)}; start every rank with the same command"
            )


def agree(step: Callable[[], T], world: World) -> T:
    """Run ``step`` on every rank; if it raises a user error on any rank, raise it on all.

    Without this, one rank stopping at a bad input would leave the others waiting in the next
    collective until the timeout. The message is the lowest failing rank's, prefixed with that
    rank when it is not 0.
    """
    if not world.distributed:
        return step()
    result: T | None = None
    error: str | None = None
    try:
        result = step()
    except NallnError as exc:
        error = str(exc)
    errors: list[Any] = [None] * world.size
    dist.all_gather_object(errors, error)
    for rank, msg in enumerate(errors):
        if msg is not None:
            raise NallnError(msg if rank == 0 else f"rank {rank}: {msg}")
    return result  # type: ignore[return-value]


def broadcast(value: T, world: World) -> T:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    box: list[Any] = [value if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def world_fits(n: int, world: World, what: str) -> None:
    """Refuse a world larger than the items it shares (some ranks would have nothing to do)."""
    if world.size > n:
        raise NallnError(
            f"{world.size} processes for {n} {what}: the world size is larger than the data; "
            f"start at most {n} processes (torchrun --nproc-per-node)"
        )


def sequence_shard(items: Sequence[T], world: World) -> list[T]:
    r = shard_range(len(items), world)
    return list(items[r.start : r.stop])
