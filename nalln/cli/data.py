"""``nalln data``: make synthetic data, check a data set, write a split manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from nalln.cli import common as cc
from nalln.errors import NallnError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthetic data, data-set checks and splits")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    s = dsub.add_parser("synth", help="generate a SYNTHETIC blood-smear data set (primary layout)")
    cc.add_output(s, "out", kind="folder", help="folder to create")
    s.add_argument("--n-per-class", type=int, default=200)
    s.add_argument("--size", type=int, default=224, help="image side in pixels")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--spread", type=float, default=1.0, help="within-class variation (overlap)")
    cc.add_progress_flag(s)
    s.set_defaults(func=run_synth)

    c = dsub.add_parser("check", help="integrity, formats and duplicates of a data set")
    cc.add_input(c, "root", help="data-set root")
    cc.add_input(c, "--against", help="second data set to look for shared images (e.g. external)")
    cc.add_input(
        c, "--splits", help="split manifest CSV or run folder: check across train/val/test"
    )
    cc.add_input(
        c,
        "--groups",
        help="with --splits: CSV path,group (patient or slide id); check no group straddles splits",
    )
    c.add_argument("--layout", default="auto")
    c.add_argument("--against-layout", default="auto")
    c.add_argument("--variant", help="sub-folder of the primary set (Original or Segmented)")
    c.add_argument("--threshold", type=int, default=6, help="near-duplicate pHash distance (bits)")
    cc.add_output(
        c, "--out", kind="folder", help="folder for check.json, files.csv, duplicates.csv"
    )
    cc.add_json_flag(c, "the check report")
    cc.add_progress_flag(c)
    c.set_defaults(func=run_check)

    sp = dsub.add_parser("split", help="write a stratified split manifest (CSV)")
    cc.add_input(sp, "root", help="data-set root")
    cc.add_output(sp, "--out", kind="file", required=True, help="CSV file to write")
    sp.add_argument("--train", type=float, default=0.8)
    sp.add_argument("--val", type=float, default=0.1)
    sp.add_argument("--test", type=float, default=0.1)
    sp.add_argument("--seed", type=int, default=42)
    sp.add_argument("--layout", default="auto")
    sp.add_argument("--variant")
    sp.add_argument(
        "--threshold",
        type=int,
        default=6,
        help="near-duplicate pHash distance (bits) for grouping, as data check (default 6)",
    )
    cc.add_input(
        sp, "--groups", help="CSV path,group (patient or slide id): each group in one split"
    )
    sp.add_argument(
        "--no-group-duplicates",
        action="store_true",
        help="let exact and near duplicates fall into different splits (they leak)",
    )
    sp.set_defaults(func=run_split)


def run_synth(args: argparse.Namespace) -> int:
    from nalln.data.synth import SynthSpec, generate

    spec = SynthSpec(args.n_per_class, args.size, args.seed, args.spread)
    root = generate(args.out, spec, progress=cc.show_progress(args))
    n = spec.n_per_class * 4
    print(f"wrote {n} SYNTHETIC images ({spec.size}x{spec.size}) to {root / spec.variant}")
    return 0


def _load_splits(spec: str | None):
    if not spec:
        return None
    from nalln.data.splits import read_manifest

    p = Path(spec)
    return read_manifest(p / "splits.csv" if p.is_dir() else p)


def run_check(args: argparse.Namespace) -> int:
    from nalln.data.audit import audit
    from nalln.data.quality import quality_flags
    from nalln.io import write_csv, write_json

    if args.groups and not args.splits:  # before any reading
        raise NallnError("--groups checks a split: pass --splits MANIFEST (or RUN) as well")
    rep = audit(
        args.root,
        layout=args.layout,
        variant=args.variant,
        against=args.against,
        against_layout=args.against_layout,
        splits=_load_splits(args.splits),
        threshold=args.threshold,
        progress=cc.show_progress(args),
        quality_fn=quality_flags,
    )
    data = rep.to_json()
    data["group_check"] = _group_check(args)
    out = Path(args.out) if args.out else None
    if out:
        write_json(out / "check.json", data)
        write_csv(
            out / "files.csv",
            [
                [
                    f.dataset,
                    f.path,
                    f.label,
                    f.status,
                    f.width,
                    f.height,
                    f.mode,
                    f.format,
                    f.split or "",
                    ";".join(f.quality),
                    f.sha256,
                    f.phash,
                    f.detail,
                ]
                for f in rep.files
            ],
            [
                "dataset",
                "path",
                "label",
                "status",
                "width",
                "height",
                "mode",
                "format",
                "split",
                "quality",
                "sha256",
                "phash",
                "detail",
            ],
        )
        write_csv(
            out / "duplicates.csv",
            [
                [d.kind, d.scope, d.a, d.b, d.distance, d.a_split or "", d.b_split or ""]
                for d in rep.duplicates
            ],
            ["kind", "scope", "a", "b", "hamming_bits", "a_split", "b_split"],
        )
    if cc.json_or_banner(args, data):
        return 0
    tag = "SYNTHETIC data set" if rep.synthetic else "data set"
    print(f"{tag} {rep.root} (layout {rep.layout}); counted from every file")
    print(cc.format_table([[c, n] for c, n in rep.counts.items()], ["class", "readable images"]))
    print()
    status = [[s, n] for s, n in sorted(rep.status_counts.items())]
    print(cc.format_table(status, ["file status", "count"]))
    for f in rep.problems()[:20]:
        print(f"  {f.status}: {f.path} {('- ' + f.detail) if f.detail else ''}")
    if len(rep.problems()) > 20:
        print(f"  ... and {len(rep.problems()) - 20} more (see files.csv)")
    if rep.skipped_non_images:
        names = rep.skipped_non_images
        more = f" and {len(names) - 5} more (see files.csv)" if names[5:] else ""
        print(f"non-image files skipped: {len(names)}: " + ", ".join(names[:5]) + more)
    print("sizes: " + ", ".join(f"{k} x{v}" for k, v in list(rep.sizes.items())[:5]))
    print("modes: " + ", ".join(f"{k} x{v}" for k, v in rep.modes.items()))
    if rep.quality_counts:
        print(
            "image quality flags: " + ", ".join(f"{k} x{v}" for k, v in rep.quality_counts.items())
        )
    dup = rep.duplicate_summary()
    print(
        f"duplicates (exact = same bytes; near = pHash distance <= {rep.threshold} bits): "
        + (", ".join(f"{k} {v}" for k, v in dup.items()) if dup else "none")
    )
    for d in rep.duplicates[:20]:
        sp = f" [{d.a_split} / {d.b_split}]" if d.a_split or d.b_split else ""
        print(f"  {d.kind} {d.scope}: {d.a} ~ {d.b} (distance {d.distance}){sp}")
    if len(rep.duplicates) > 20:
        print(f"  ... and {len(rep.duplicates) - 20} more (see duplicates.csv)")
    if (check := rep.split_check()) is not None:
        n = check["pairs_across_splits"]
        print(
            "splits: no duplicate pair straddles train/val/test"
            if n == 0
            else f"splits: {n} duplicate pair(s) straddle two splits - a leak that inflates "
            "test figures; make the split again with `nalln data split` (duplicates grouped)"
        )
    if (gc := data["group_check"]) is not None:
        print(
            f"groups: none of {gc['groups']} group(s) from {args.groups} straddles train/val/test"
            if gc["clean"]
            else f"groups: {len(gc['straddling'])} of {gc['groups']} group(s) from {args.groups} "
            "straddle two splits - a leak; make the split again with `nalln data split --groups`"
        )
    if out:
        print(f"reports: {out / 'check.json'}, {out / 'files.csv'}, {out / 'duplicates.csv'}")
    return 0


def _group_check(args: argparse.Namespace) -> dict | None:
    """``--groups`` with ``--splits``: which patient/slide groups straddle splits."""
    if not args.groups:
        return None
    from nalln.data.dataset import scan
    from nalln.data.groups import file_groups, straddling_groups

    groups = file_groups(scan(args.root, args.layout, args.variant), args.groups)
    bad = straddling_groups(groups, _load_splits(args.splits))
    return {"file": str(args.groups), "groups": len(groups), "straddling": bad, "clean": not bad}


def run_split(args: argparse.Namespace) -> int:
    from nalln.data.dataset import scan
    from nalln.data.groups import duplicate_groups, file_groups, merge_groups
    from nalln.data.splits import SplitSpec, make_splits, write_manifest

    index = scan(args.root, args.layout, args.variant)
    spec = SplitSpec(args.train, args.val, args.test, args.seed)
    given = file_groups(index, args.groups) if args.groups else []
    if given:
        print(f"groups: {len(given)} group(s) of 2+ images from {args.groups}, each in one split")
    groups = given
    if args.no_group_duplicates:
        print("duplicates: not grouped (--no-group-duplicates); they may straddle splits")
    else:
        if not 0 <= args.threshold <= 32:
            raise NallnError("--threshold is a Hamming distance in bits between 0 and 32")
        found = duplicate_groups(index, args.threshold)
        print(found.describe())
        groups = merge_groups(given, found.groups)
    splits = make_splits(index, spec, groups)
    write_manifest(args.out, splits)
    print(", ".join(f"{k} {len(v)}" for k, v in splits.items()) + f" -> {args.out}")
    return 0
