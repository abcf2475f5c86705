"""Does a trained run give the same answers on CUDA as on the CPU, with and without TF32?

Runs the run's test split (or another split) through the model on the CPU, on CUDA in full
float32 (nalln's default there) and on CUDA with PyTorch's TF32 convolutions, all through the
fast inference path, and compares predictions and probabilities with the CPU's. Needs a GPU.

    python benchmarks/compare_devices.py RUN --data ROOT [--split test] [--json OUT.json]

Prints a table and writes JSON (default ``benchmarks/results/compare_devices.json``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from nalln.data.dataset import load_images
from nalln.evaluation.evaluate import class_labels, select_records
from nalln.inference import pick_device, predict_logits
from nalln.io import write_json
from nalln.runs import load_model


def _logits(loaded, images: torch.Tensor, device: str, tf32: bool) -> torch.Tensor:
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
    model, pre = copy.deepcopy(loaded.model).to(dev), loaded.preprocess.to(dev)
    return predict_logits(model, pre, images, 64, dev).cpu()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "compare_devices.json"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("compare_devices: no CUDA device here; run it on a machine with a GPU")
        return 1
    settings = {
        "cpu": ("cpu", False),
        "cuda_fp32": ("cuda", False),
        "cuda_tf32": ("cuda", True),
    }
    # the model and the images are loaded once; each setting gets its own copy on its device
    loaded = load_model(args.run, "best", "cpu")
    index, records, _ = select_records(loaded, args.data, args.split, None, "auto")
    y = torch.from_numpy(class_labels(records, loaded.class_names, index))
    images = load_images(index, records, loaded.image_size, False, "loading")
    synthetic = bool(index.synthetic or loaded.synthetic)
    out = {k: _logits(loaded, images, d, t) for k, (d, t) in settings.items()}
    ref = out["cpu"]
    p_ref = F.softmax(ref, 1)
    rows = []
    for name, logits in out.items():
        p = F.softmax(logits, 1)
        rows.append(
            {
                "setting": name,
                "images": len(y),
                "accuracy": float((logits.argmax(1) == y).float().mean()),
                "same_predictions_as_cpu": int((logits.argmax(1) == ref.argmax(1)).sum()),
                "max_abs_logit_diff": float((logits - ref).abs().max()),
                "max_abs_probability_diff": float((p - p_ref).abs().max()),
            }
        )
    label = " (SYNTHETIC data)" if synthetic else ""
    print(f"{args.run}, split {args.split}{label}; measured on {torch.cuda.get_device_name(0)}")
    print(f"{'setting':<11}{'images':>7}{'accuracy':>10}{'same':>6}{'logit d':>10}{'prob d':>10}")
    for r in rows:
        print(
            f"{r['setting']:<11}{r['images']:>7}{r['accuracy']:>10.4f}"
            f"{r['same_predictions_as_cpu']:>6}{r['max_abs_logit_diff']:>10.2e}"
            f"{r['max_abs_probability_diff']:>10.2e}"
        )
    result = {
        "source": "measured",
        "run": args.run,
        "split": args.split,
        "synthetic": synthetic,
        "cuda_device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "rows": rows,
    }
    write_json(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
