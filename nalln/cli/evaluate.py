"""``nalln evaluate``: metrics with bootstrapped 95% CIs on a split or an external data set."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run", description=__doc__)
    cc.add_input(p, "run", help="run folder (or checkpoint file with --external)")
    cc.add_input(p, "--data", help="data-set root (default: the one the run was trained on)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="split of the run's manifest",
    )
    cc.add_input(g, "--external", metavar="ROOT2", help="evaluate every image of another data set")
    p.add_argument(
        "--layout",
        default="auto",
        help="layout of the data set (auto, primary, external, FILE.toml)",
    )
    cc.add_output(
        p, "--out", kind="folder", help="output folder (default RUN/eval-<split|external>)"
    )
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument(
        "--n-resamples", type=int, default=10_000, help="bootstrap resamples (paper: 10,000)"
    )
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out images that cannot be decoded (listed in metrics.json) instead of stopping",
    )
    cc.add_json_flag(p, "metrics.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run, distributed=True)


def run(args: argparse.Namespace) -> int:
    from nalln.errors import NallnError
    from nalln.evaluation.bootstrap import BootstrapSpec
    from nalln.evaluation.evaluate import evaluate

    if args.n_resamples < 100:
        raise NallnError("--n-resamples must be at least 100 for a percentile interval")
    res = evaluate(
        args.run,
        args.data,
        split=args.split,
        external=args.external,
        out=args.out,
        layout=args.layout,
        checkpoint=args.checkpoint,
        bootstrap=BootstrapSpec(n_resamples=args.n_resamples, seed=args.seed),
        device=args.device,
        progress=cc.show_progress(args),
        skip_unreadable=args.skip_unreadable,
    )
    m = res.metrics
    if cc.json_or_banner(args, m, m["synthetic"], m["synthetic_model"]):
        return 0
    ci = m["accuracy_ci"]
    print(
        f"{m['source']['subset']}: {m['n']} images; accuracy {m['accuracy']:.4f} "
        f"(95% CI {ci[0]:.4f}-{ci[1]:.4f}; measured, percentile bootstrap)"
    )
    rows = [
        [c, r["precision"], r["recall"], r["f1"], r["support"]] for c, r in m["per_class"].items()
    ]
    for avg in ("macro", "weighted"):
        a = m[avg]
        rows.append(
            [f"{avg} avg", a["precision"]["value"], a["recall"]["value"], a["f1"]["value"], m["n"]]
        )
    print(cc.format_table(rows, ["class", "precision", "recall", "F1", "support"]))
    print(f"reports in {res.out}: " + ", ".join(res.files))
    return 0
