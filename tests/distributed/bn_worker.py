"""Run by torchrun from test_units.py: each of 2 ranks normalises its half of 6 images with
the global BatchNorm and saves its output, input gradient and state to OUT.rankR.pt."""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from nalln.distributed.sync_bn import convert_global_batch_norm


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(64))


if __name__ == "__main__":
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x = torch.load(out + ".input.pt")
    model = net()
    assert convert_global_batch_norm(model) == 2
    half = x[rank * 3 : (rank + 1) * 3].clone().requires_grad_(True)
    y = model(half)
    y.square().sum().backward()
    state = model.state_dict()
    torch.save(
        {"y": y.detach(), "grad": half.grad, "state": state, "wgrad": model[0].weight.grad},
        f"{out}.rank{rank}.pt",
    )
    dist.destroy_process_group()
    os._exit(0)
