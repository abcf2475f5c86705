"""``nalln robustness``: accuracy against the severity of noise, blur, occlusion, rotation and
illumination changes, measured on a split of the run's data (CSV, JSON, Markdown, PNG plots)."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def _grid(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 0,0.01,0.05; got {text!r}"
        ) from None


def register(sub: argparse._SubParsersAction) -> None:
    from nalln.analysis.perturbations import BRIGHTNESS_MODES, PADDINGS, PERTURBATIONS

    p = sub.add_parser(
        "robustness",
        help="accuracy under image perturbations (noise, blur, occlusion, rotation, brightness)",
        description=__doc__,
    )
    cc.add_input(p, "run", help="run folder")
    cc.add_input(p, "--data", help="data-set root (default: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    cc.add_output(p, "--out", kind="folder", help="output folder (default RUN/robustness)")
    p.add_argument(
        "--only",
        help="comma-separated perturbations to run (default all: " + ", ".join(PERTURBATIONS) + ")",
    )
    for name, pert in PERTURBATIONS.items():
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=_grid,
            metavar="LIST",
            help=(
                f"{pert.description}: {pert.parameter} values ({pert.unit}); range "
                f"[{pert.low:g}, {pert.high:g}]; default "
                + ",".join(f"{v:g}" for v in pert.defaults)
            ).replace("%", "%%"),  # argparse formats help with %: a literal one must be doubled
        )
    p.add_argument(
        "--clahe-compare",
        action="store_true",
        help="also run the sweep with CLAHE switched on at the model input (a model trained "
        "without CLAHE sees a distribution shift; compare with --compare-run for a fair test)",
    )
    cc.add_input(
        p,
        "--compare-run",
        action="append",
        default=[],
        metavar="RUN2",
        help="also sweep another run (e.g. trained with --clahe) on the same images (repeatable)",
    )
    p.add_argument("--brightness-mode", default="multiplicative", choices=BRIGHTNESS_MODES)
    p.add_argument(
        "--rotation-padding",
        choices=PADDINGS,
        help="fill of the corners rotation uncovers (default: the run's training padding)",
    )
    p.add_argument("--max-images", type=int, help="class-stratified subset of the split")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples per point")
    p.add_argument("--no-quality", action="store_true", help="skip the review-flag counts")
    p.add_argument("--seed", type=int, default=0, help="seed of the random perturbations")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--device", default="auto")
    cc.add_json_flag(p, "robustness.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run, distributed=True)


def build_spec(args: argparse.Namespace):
    from nalln.analysis.perturbations import PERTURBATIONS, PerturbOptions
    from nalln.analysis.robustness import RobustnessSpec
    from nalln.errors import NallnError

    names = list(PERTURBATIONS)
    if args.only:
        names = [n.strip().replace("-", "_") for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in PERTURBATIONS]
        if unknown:
            raise NallnError(
                f"unknown perturbation(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}"
            )
    grids = {}
    for name in names:
        given = getattr(args, name)
        grids[name] = given if given is not None else PERTURBATIONS[name].defaults
    options = None
    if args.rotation_padding or args.brightness_mode != "multiplicative":
        options = PerturbOptions(args.brightness_mode, args.rotation_padding or "zeros")
    if args.n_resamples < 0:
        raise NallnError("--n-resamples must be >= 0")
    return RobustnessSpec(
        grids=grids,
        options=options,
        seed=args.seed,
        n_resamples=args.n_resamples,
        batch_size=args.batch_size,
        max_images=args.max_images,
        quality=not args.no_quality,
    )


def run(args: argparse.Namespace) -> int:
    from nalln.analysis.robustness import robustness

    spec = build_spec(args)
    res = robustness(
        args.run,
        args.data,
        split=args.split,
        spec=spec,
        clahe_compare=args.clahe_compare,
        compare_runs=args.compare_run,
        out=args.out,
        checkpoint=args.checkpoint,
        device=args.device,
        progress=cc.show_progress(args),
    )
    d = res.data
    if cc.json_or_banner(args, d, d["synthetic"], d["synthetic_model"]):
        return 0
    print(
        f"{d['source']['n_images']} {d['source']['subset']} images; accuracy measured per "
        f"severity ({d['confidence']:.0%} bootstrap CI in robustness.csv)"
    )
    labels = [v["label"] for v in d["variants"]]
    rows = []
    for r in res.rows:
        if r["variant"] != labels[0]:
            continue
        others = [
            next(
                x["accuracy"]
                for x in res.rows
                if x["variant"] == lab
                and x["perturbation"] == r["perturbation"]
                and x["severity"] == r["severity"]
            )
            for lab in labels[1:]
        ]
        review = "-" if r["flagged_for_review"] is None else round(r["flagged_for_review"], 3)
        rows.append([r["perturbation"], r["severity"], round(r["accuracy"], 4), *others, review])
    headers = ["perturbation", "severity", labels[0], *labels[1:], "flagged for review"]
    print(cc.format_table(rows, headers))
    print(f"files in {res.out}: " + ", ".join(sorted(res.files)))
    return 0
