"""``nalln predict``: class and probabilities per image; flags images that need manual review."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files or folders", description=__doc__)
    cc.add_input(p, "run", help="run folder or checkpoint")
    cc.add_input(p, "images", nargs="+", help="image files and/or folders")
    cc.add_output(p, "--out", kind="file", help="CSV file to write (default: print only)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-unreadable", action="store_true", help="report unreadable files, go on")
    cc.add_json_flag(p, "the predictions")
    p.set_defaults(func=run, distributed=True)


def run(args: argparse.Namespace) -> int:
    from nalln.distributed import current
    from nalln.io import write_csv
    from nalln.predict import predict_paths

    loaded, preds = predict_paths(
        args.run,
        args.images,
        checkpoint=args.checkpoint,
        device=args.device,
        skip_unreadable=args.skip_unreadable,
    )
    classes = list(loaded.class_names)
    header = ["path", "predicted", *(f"p_{c}" for c in classes), "needs_review", "quality", "error"]
    rows = [
        [
            p.path,
            p.predicted or "",
            *(f"{p.probabilities.get(c, float('nan')):.4f}" for c in classes),
            "yes" if p.needs_review else "no",
            ";".join(p.quality),
            p.error or "",
        ]
        for p in preds
    ]
    if args.out and current().main:  # under torchrun rank 0 writes the merged file
        write_csv(args.out, rows, header)
    if cc.json_or_banner(
        args,
        {
            "synthetic_model": loaded.synthetic,
            "predictions": [
                {
                    "path": p.path,
                    "predicted": p.predicted,
                    "probabilities": p.probabilities,
                    "needs_review": p.needs_review,
                    "quality": p.quality,
                    "error": p.error,
                }
                for p in preds
            ],
        },
        False,  # the images' origin is unknown: only the model's is a fact
        loaded.synthetic,
    ):
        return 0
    # an unreadable file has no probability (not 0) and says why in place of quality flags
    shown = [
        [
            r[0],
            r[1] or "-",
            round(max(p.probabilities.values()), 4) if p.probabilities else "-",
            r[-3],
            f"unreadable: {p.error}" if p.error else (r[-2] or "-"),
        ]
        for r, p in zip(rows, preds, strict=True)
    ]
    print(cc.format_table(shown, ["image", "predicted", "probability", "review", "quality"]))
    review = sum(p.needs_review for p in preds)
    if review:
        print(f"{review} image(s) need manual review (quality flags or unreadable)")
    if args.out:
        print(f"wrote {args.out}")
    return 0
