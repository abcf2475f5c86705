"""``nalln ablate``: train the full model and its ablation variants (no SE, no refinement, small
head, no BatchNorm) under one protocol, seed and split manifest; table of test accuracy (95% CI),
parameters and training time, and a bar plot. Re-running resumes: finished variants are skipped.
Training settings are those of ``nalln train`` (same flags, --config and --set)."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def register(sub: argparse._SubParsersAction) -> None:
    from nalln.cli.train import FLAGS
    from nalln.models.registry import ABLATION_VARIANTS

    p = sub.add_parser("ablate", help="ablation study of NeurALLNet", description=__doc__)
    cc.add_input(p, "--data", required=True, help="data-set root")
    cc.add_output(
        p, "--out", kind="folder", required=True, help="study folder (one run folder per variant)"
    )
    p.add_argument(
        "--variants",
        default=",".join(ABLATION_VARIANTS),
        help="comma-separated registry names (default all: " + ", ".join(ABLATION_VARIANTS) + ")",
    )
    cc.add_input(p, "--config", help="TOML or JSON file with training settings")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any training setting (repeatable)",
    )
    for flag, (_, typ, help_) in FLAGS.items():
        if flag != "--model":
            p.add_argument(flag, type=typ, help=help_)
    p.add_argument("--no-augment", action="store_true", help="disable training augmentation")
    p.add_argument("--photometric", action="store_true", help="add photometric augmentation")
    p.add_argument("--clahe", action="store_true", help="CLAHE as fixed preprocessing")
    p.add_argument("--n-resamples", type=int, default=10_000, help="bootstrap resamples")
    cc.add_json_flag(p, "ablation.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run, distributed=True)


def run(args: argparse.Namespace) -> int:
    from nalln.analysis.ablation import run_ablation
    from nalln.cli.train import build_config

    args.model = None
    base = build_config(args)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.interrupt_hint = "run the same command again to resume"
    res = run_ablation(
        args.data,
        args.out,
        base,
        variants,
        n_resamples=args.n_resamples,
        progress=cc.show_progress(args),
        echo=(lambda _m: None) if args.json else print,
    )
    if not res.data:  # a rank other than 0 under torchrun: rank 0 reports for the job
        return 0
    if cc.json_or_banner(args, res.data, res.data["synthetic"]):
        return 0
    rows = [
        [
            r["variant"],
            round(r["accuracy"], 4),
            f"{r['ci_low']:.4f}-{r['ci_high']:.4f}",
            r["parameters"],
            round(r["train_seconds"], 1),
            r["epochs_run"],
        ]
        for r in res.rows
    ]
    print(
        cc.format_table(rows, ["variant", "test acc", "95% CI", "parameters", "train s", "epochs"])
    )
    print("accuracy measured on the test split; parameters counted; time measured")
    print(f"files in {res.out}: " + ", ".join(sorted(res.files)))
    return 0
