"""``nalln finetune-fixed-point``: fine-tune a trained run for Loihi fixed point (new run folder).

BatchNorm (and, with --se static, the SE gates) is folded, the weights are put on the per-layer
8-bit grid that the fixed-point conversion uses and fine-tuned there with straight-through
rounding. The new run is an ordinary run folder whose float model spikes exactly as Loihi's
fixed point does; `nalln convert/simulate RUN_FP --fixed-point` deploy it on the recorded grid.
See docs/conversion.md ("Fixed-point fine-tuning").
"""

from __future__ import annotations

import argparse

from nalln.cli import common as cc
from nalln.ir.se_mode import SEMode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune-fixed-point",
        help="fine-tune a trained run for Loihi fixed point (quantisation-aware)",
        description=__doc__,
    )
    cc.add_input(p, "run", help="trained run folder")
    cc.add_output(
        p, "--out", kind="folder", required=True, help="new run folder for the fine-tuned model"
    )
    cc.add_input(p, "--data", help="data-set root (default: the one the run was trained on)")
    p.add_argument(
        "--se",
        default=SEMode.STATIC,
        type=SEMode,
        choices=(*SEMode.deployable(), SEMode.ONCHIP),
        help="SE gates: folded static scales (default; NIR-native, exact on Loihi), a "
        "side-car (host), or onchip (computed by neuro-cores in integers, "
        "docs/conversion.md 'SE on the chip')",
    )
    p.add_argument(
        "--se-lag",
        type=int,
        default=1,
        metavar="STEPS",
        help="--se onchip: a current is gated by the gate of STEPS steps earlier (0-4, "
        "default 1; the first STEPS steps of an image use the gate at rest)",
    )
    p.add_argument(
        "--epochs", type=int, default=12, help="fine-tuning epochs (default 12; 0: quantise only)"
    )
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    cc.add_calibration_flag(p, "choosing the fixed-point grid")
    p.add_argument(
        "--train-images",
        type=int,
        metavar="N",
        help="training images per epoch (default: the whole training split)",
    )
    p.add_argument("--no-augment", action="store_true", help="no training augmentation")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--distill",
        type=float,
        default=0.7,
        metavar="ALPHA",
        help="weight of distillation from the trained float model, 0-1 (default 0.7; 0: "
        "cross-entropy only)",
    )
    cc.add_json_flag(p, "finetune_report.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.deploy.finetune_fixed_point import FinetuneConfig, finetune_fixed_point

    cfg = FinetuneConfig(
        se=args.se,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        calibration=args.calibration,
        train_images=args.train_images,
        augment=not args.no_augment,
        seed=args.seed,
        distill=args.distill,
        se_lag=args.se_lag,
    )
    quiet = args.json or getattr(args, "quiet", False)
    res = finetune_fixed_point(
        args.run,
        args.out,
        args.data,
        cfg,
        progress=cc.show_progress(args),
        echo=(lambda _m: None) if quiet else print,
    )
    r = res.report
    if cc.json_or_banner(args, r, r["synthetic"]):
        return 0
    for split in ("test", "val"):
        if split not in r:
            continue
        s = r[split]
        rows = [[k.replace("_", " "), v] for k, v in s["accuracy"].items()]
        rows += [
            [f"top-1 agreement: {k.replace('_', ' ')}", v] for k, v in s["top1_agreement"].items()
        ]
        print(f"{split} split, {s['images']} images (measured):")
        print(cc.format_table(rows, ["measure", "value"], "lr"))
    print(
        f"fine-tuned run: {res.run.path} (best epoch {r['best_epoch']}); files: "
        + ", ".join(res.files)
    )
    return 0
