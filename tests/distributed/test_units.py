"""The pieces under torchrun: shards, merging, the global BatchNorm (in 2 real gloo processes
started by torch.multiprocessing) and merged energy counts."""

from __future__ import annotations

import pytest
import torch

from nalln.distributed import SINGLE, World, agree, gather_shards, shard_range
from nalln.distributed.collect import world_fits
from nalln.errors import NallnError


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_partition_in_order(n: int, size: int):
    shards = [shard_range(n, World(r, size)) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_one_process_is_a_no_op():
    assert gather_shards([3, 1], SINGLE) == [3, 1]
    assert agree(lambda: 7, SINGLE) == 7
    with pytest.raises(NallnError, match="world size is larger than the data"):
        world_fits(1, World(0, 2), "images")


def test_global_batch_norm_in_two_processes_equals_batch_norm_on_the_whole_batch(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from .bn_worker import net
    from .helpers import env

    torch.manual_seed(1)
    x = torch.randn(6, 3, 6, 6)
    base = str(tmp_path / "bn")
    torch.save(x, base + ".input.pt")
    worker = Path(__file__).with_name("bn_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    p = subprocess.run([*cmd, str(worker), base], env=env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    got = [torch.load(f"{base}.rank{r}.pt") for r in (0, 1)]

    ref = net()
    whole = x.clone().requires_grad_(True)
    y = ref(whole)
    y.square().sum().backward()
    close = {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([g["grad"] for g in got]), whole.grad, **close)
    # each rank's weight gradient is its share: together, the whole batch's
    torch.testing.assert_close(got[0]["wgrad"] + got[1]["wgrad"], ref[0].weight.grad, **close)
    for g in got:
        for key, value in ref.state_dict().items():
            torch.testing.assert_close(g["state"][key], value, **close)


def test_counts_of_two_shards_add_up_to_one_pass(tiny_run):
    from nalln.energy.counting import count_model, merge_counts
    from nalln.runs import load_model

    loaded = load_model(tiny_run)
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)

    def count(x):
        return count_model(loaded.model, x, preprocess=loaded.preprocess, batch_size=4)

    whole, merged = count(images), merge_counts([count(images[:3]), count(images[3:])])
    assert merged.n == whole.n == 7
    assert merged.totals == whole.totals
    for a, b in zip(merged.layers, whole.layers, strict=True):
        assert (a.ac == b.ac).all() and (a.mac == b.mac).all() and (a.dense == b.dense).all()
    for a, b in zip(merged.populations, whole.populations, strict=True):
        assert (a.spikes == b.spikes).all()
