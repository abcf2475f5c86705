"""Training-schedule sweep on 64x64 synthetic data: why the demo uses a slower LR decay.

Runs each configuration below as its own process (2 threads each) on the same synthetic set
(500 images per class, seed 42), trains with a wall-clock deadline (DEADLINE seconds, default
330), evaluates the best checkpoint on the test split and writes one JSON per configuration to
$OUT (default /tmp/out), then prints a summary. Needs about 2 cores per configuration; results
are recorded in docs/architecture.md ("Trainability").

    OUT=/tmp/sweep python benchmarks/schedule_sweep.py
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
OUT = os.environ.get("OUT", "/tmp/out")
DATA = "/tmp/syn64"
BASE = {"model_config": {"image_size": 64}, "epochs": 20, "patience": 6}
SLOW = {"epochs": 30, "patience": 10, "lr_decay_epochs": 40.0}
CONFIGS = {
    # first sweep (paper schedule unless stated)
    "default": {"precise_bn_images": 0},
    "se_spikes": {"model_config": {"image_size": 64, "se_position": "spikes"}},
    "vth05": {"model_config": {"image_size": 64, "v_threshold": 0.5}},
    "tau4": {"model_config": {"image_size": 64, "tau": 4.0}},
    "noaug": {"augment": {"enabled": False}},
    "slowdecay_p10": SLOW,
    "no_se": {"model_config": {"image_size": 64, "use_se": False}},
    "cuda_default": {"device": "cuda"},
    # second sweep (precise BatchNorm statistics, 1,024 images per epoch)
    "pbn_default": {"precise_bn_images": 1024},
    "pbn_slowdecay": {**SLOW, "precise_bn_images": 1024},
    "pbn_tau4": {"model_config": {"image_size": 64, "tau": 4.0}, "precise_bn_images": 1024},
    "pbn_se_spikes": {
        "model_config": {"image_size": 64, "se_position": "spikes"},
        "precise_bn_images": 1024,
    },
    "pbn_tau4_slow": {
        "model_config": {"image_size": 64, "tau": 4.0},
        **SLOW,
        "precise_bn_images": 1024,
    },
}
SELECTED = os.environ.get("CONFIGS", "").split(",") if os.environ.get("CONFIGS") else list(CONFIGS)


def worker(name):
    import torch

    torch.set_num_threads(2)
    from nalln.config import TrainConfig
    from nalln.evaluation.evaluate import evaluate
    from nalln.training.loop import train

    cfg = {**BASE, **CONFIGS[name]}
    import signal

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(int(os.environ.get("DEADLINE", "330")))
    t = time.time()
    hist = []
    try:
        r = train(
            DATA,
            f"/tmp/runs/{name}",
            TrainConfig.from_dict(cfg),
            progress=False,
            echo=lambda m: None,
        )
        hist, ep, be, bv, trunc = r.history, r.epochs_run, r.best_epoch, r.best_val_accuracy, False
    except KeyboardInterrupt:
        from nalln.checkpoint import load_checkpoint

        m = load_checkpoint(f"/tmp/runs/{name}/checkpoints/last.safetensors").meta
        hist, ep, be, bv, trunc = (
            m["history"],
            len(m["history"]),
            m["early_stopping"]["best_epoch"],
            m["early_stopping"]["best"],
            True,
        )
    signal.alarm(0)
    tt = time.time() - t
    e = evaluate(f"/tmp/runs/{name}", progress=False, device=cfg.get("device", "cpu"))
    res = {
        "name": name,
        "config": cfg,
        "train_seconds": tt,
        "epochs": ep,
        "best_epoch": be,
        "truncated": trunc,
        "best_val": bv,
        "test_acc": e.metrics["accuracy"],
        "test_ci": e.metrics["accuracy_ci"],
        "cm": e.metrics["confusion_matrix"]["rows_true_cols_predicted"],
        "history": [
            {k: h[k] for k in ("epoch", "train_accuracy", "val_accuracy", "seconds")} for h in hist
        ],
    }
    Path(f"{OUT}/{name}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        try:
            worker(sys.argv[2])
        except Exception as exc:
            Path(f"{OUT}/{sys.argv[2]}.json").write_text(json.dumps({"error": repr(exc)}))
        sys.exit(0)
    from nalln.data.synth import SynthSpec, generate

    t = time.time()
    generate(DATA, SynthSpec(n_per_class=500, size=64), progress=False)
    print("data", time.time() - t, flush=True)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    procs = {
        n: subprocess.Popen(
            [sys.executable, __file__, "worker", n],
            env=env,
            stdout=Path(f"/tmp/{n}.log").open("w"),  # noqa: SIM115 (closed at exit)
            stderr=subprocess.STDOUT,
        )
        for n in SELECTED
    }
    for n, p in procs.items():
        p.wait()
        print(n, "rc", p.returncode, flush=True)
        if p.returncode:
            print(Path(f"/tmp/{n}.log").read_text()[-3000:])
    summary = {}
    for n in SELECTED:
        try:
            r = json.loads(Path(f"{OUT}/{n}.json").read_text())
            summary[n] = {
                k: r[k]
                for k in (
                    "train_seconds",
                    "epochs",
                    "best_epoch",
                    "best_val",
                    "test_acc",
                    "truncated",
                )
            }
        except Exception as exc:
            summary[n] = str(exc)
    print(json.dumps(summary, indent=1))
