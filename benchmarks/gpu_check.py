"""CUDA check of the fast paths (run where a GPU is present; not part of the tests or `make bench`).

Checks that the fast inference path and the fused-LIF training path run on CUDA and agree with
the reference model there, and measures single-image latency, batch throughput and a training
step on the GPU. Writes JSON (``--out``) and prints it.

    python benchmarks/gpu_check.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F
from bench_speed import calibrated_model

from nalln.analysis.profiling import summarize
from nalln.models.fast import fast_model
from nalln.models.fast_lif import set_lif_backend


def _time(fn, repeats: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        s.append((time.perf_counter() - t0) * 1e3)
    out = summarize(s)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_check.json")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    dev = torch.device("cuda")
    r: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}

    # 1. inference: fast vs reference on the GPU (TF32 off: fp32 convolutions, then default)
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for size in (64, 224):
            model = calibrated_model(size, 4).to(dev)
            x = torch.randn(8, 3, size, size, device=dev)
            with torch.no_grad():
                ref = model(x)
                fast = fast_model(model)(x)
                cpu = model.cpu()(x.cpu())
                model.to(dev)
            r[f"inference_{size}_tf32_{tf32}"] = {
                "fast_vs_reference_max_abs": float((fast - ref).abs().max()),
                "same_predictions": bool(torch.equal(fast.argmax(1), ref.argmax(1))),
                "cuda_vs_cpu_reference_max_abs": float((ref.cpu() - cpu).abs().max()),
            }
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    # 2. training: fused LIF vs snnTorch LIF on the GPU
    model = calibrated_model(224, 4).to(dev).train()
    fused = set_lif_backend(copy.deepcopy(model), "fused")
    x = torch.randn(16, 3, 224, 224, device=dev)
    y = torch.randint(0, 4, (16,), device=dev)
    la, lb = F.cross_entropy(model(x), y), F.cross_entropy(fused(x), y)
    la.backward()
    lb.backward()
    worst = 0.0
    for (_, pa), (_, pb) in zip(model.named_parameters(), fused.named_parameters(), strict=True):
        scale = float(pa.grad.abs().max()) or 1.0
        worst = max(worst, float((pa.grad - pb.grad).abs().max()) / scale)
    r["training_equivalence"] = {
        "loss_abs_diff": float((la - lb).abs()),
        "max_grad_diff_relative_to_param_max": worst,
    }
    for name, net in (("reference", model), ("fused", fused)):
        opt = torch.optim.Adam(net.parameters(), 1e-3)

        def step(net=net, opt=opt) -> None:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = _time(step, 10, 3)
        r[f"train_step_b16_{name}"] = t | {"images_per_s": 16 / (t["median_ms"] / 1e3)}

    # 3. latency and throughput, fp32
    model = calibrated_model(224, 4).to(dev).eval()
    fast = fast_model(model)
    x1 = torch.randn(1, 3, 224, 224, device=dev)
    x64 = torch.randn(64, 3, 224, 224, device=dev)
    with torch.inference_mode():
        for name, net in (("reference", model), ("fast", fast)):
            r[f"latency_b1_{name}"] = _time(lambda net=net: net(x1), 50)
            t = _time(lambda net=net: net(x64), 10)
            r[f"throughput_b64_{name}"] = t | {"images_per_s": 64 / (t["median_ms"] / 1e3)}
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        fast(x1)
    r["fast_b1_cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 1e6

    # 4. the profile library on CUDA
    from nalln.analysis.profiling import ProfileSpec, profile

    s = profile(
        overrides={"image_size": 224},
        spec=ProfileSpec(threads=(1,), repeats=10, batch_sizes=(1, 16), batch_repeats=2),
    ).summary
    r["profile_cuda_latency"] = [
        {k: v for k, v in lat.items() if k != "samples_ms"} for lat in s["latency"]
    ]
    r["profile_cuda_memory"] = s["memory"]["cuda"]
    text = json.dumps(r, indent=2)
    Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
