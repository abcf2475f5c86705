"""``nalln gradcam``: temporal-fusion Grad-CAM overlays (activations and gradients averaged over
the T time steps) for image files, and a per-class grid from a split of the run's data."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gradcam", help="Grad-CAM heat maps of a trained run", description=__doc__)
    cc.add_input(p, "run", help="run folder or checkpoint")
    cc.add_input(p, "images", nargs="*", help="image files and/or folders to explain")
    p.add_argument(
        "--layer",
        help="layer to explain (default 'auto': the deepest conv with a map of at least 7x7, "
        "which at 224 px is refine.pw.conv, the refinement block's last pointwise conv, as in "
        "the paper, and an earlier one at small sizes; 'paper': refine.pw.conv at any size; "
        "see --list-layers)",
    )
    p.add_argument("--list-layers", action="store_true", help="print the valid layer names")
    p.add_argument(
        "--class",
        dest="target_class",
        metavar="C",
        help="class (name or index) to explain (default: the predicted class)",
    )
    p.add_argument(
        "--per-class",
        type=int,
        default=0,
        metavar="N",
        help="also draw a grid of N images per class from --split",
    )
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    cc.add_input(p, "--data", help="data-set root for --per-class (default: the run's)")
    cc.add_output(p, "--out", kind="folder", help="output folder (default RUN/gradcam)")
    p.add_argument("--seed", type=int, default=0, help="seed for picking the grid images")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--device", default="cpu")
    cc.add_json_flag(p, "gradcam.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.analysis.gradcam_report import run_gradcam

    if args.list_layers:
        from nalln.analysis.gradcam import auto_layer, default_layer, feature_map_sizes
        from nalln.runs import load_model

        loaded = load_model(args.run, args.checkpoint, "cpu")
        paper = default_layer(loaded.model)
        sizes = feature_map_sizes(loaded.model, loaded.image_size)
        auto = auto_layer(loaded.model, sizes)
        for name, (h, w) in sizes.items():
            tags = [t for t, n in (("default, auto", auto), ("paper", paper)) if n == name]
            print(f"{name}  {h}x{w}" + (f"  ({', '.join(tags)})" if tags else ""))
        return 0
    res = run_gradcam(
        args.run,
        args.images,
        layer=args.layer,
        target_class=args.target_class,
        per_class=args.per_class,
        split=args.split,
        data=args.data,
        out=args.out,
        checkpoint=args.checkpoint,
        device=args.device,
        seed=args.seed,
    )
    d = res.data
    if cc.json_or_banner(args, d, d["synthetic"], d["synthetic_model"]):
        return 0
    print(
        f"Grad-CAM of layer {d['layer']} (feature map {d['feature_map']}, T={d['num_steps']}), "
        f"target: {d['target']}"
    )
    rows = [
        [e["image"], e["true"] or "-", e["predicted"], round(e["probability"], 3), e["target"]]
        for e in d["images"]
    ]
    print(cc.format_table(rows, ["image", "true", "predicted", "probability", "explained"]))
    print(f"files in {res.out}: " + ", ".join(sorted(res.files)))
    return 0
