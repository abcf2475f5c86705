"""``nalln report``: one self-contained HTML page (images inlined) with everything that exists
for a run: metrics, confusion matrices, curves, robustness, Grad-CAM, INT8, profile, energy."""

from __future__ import annotations

import argparse

from nalln.cli.common import add_input, add_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report of a run", description=__doc__)
    add_input(p, "run", help="run folder")
    add_output(p, "--out", kind="file", help="HTML file to write (default RUN/report.html)")
    add_input(
        p,
        "--search",
        action="append",
        default=[],
        metavar="DIR",
        help="another folder holding eval-*/, robustness/, gradcam/, profile/, energy/ "
        "(e.g. a demo folder); repeatable",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.analysis.report_html import build_report
    from nalln.cli.common import synthetic_banner

    res = build_report(args.run, args.out, args.search)
    print(synthetic_banner(res.synthetic, res.synthetic_model), end="")
    print(f"report: {res.path}")
    print("sections found: " + (", ".join(res.found) or "none"))
    for name, cmd in res.missing.items():
        print(f"  not found: {name} (make it with `{cmd}`)")
    return 0
