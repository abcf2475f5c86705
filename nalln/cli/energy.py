"""``nalln energy report``: spikes, synaptic operations, MACs and energy per layer and target."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc
from nalln.errors import NallnError


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "energy", help="count operations and estimate energy per target", description=__doc__
    )
    esub = p.add_subparsers(dest="energy_command", metavar="COMMAND")
    esub.required = True
    r = esub.add_parser(
        "report",
        help="per-layer spikes / SOPs / MACs and energy per inference on each target",
        description=(
            "Count a trained run on real images (forward hooks, NeuroBench rules), or a NIR "
            "graph on --inputs X.npz (its deployment plan, same rules), next to the same "
            "network as a ReLU ANN, and price both on each hardware target. Writes "
            "energy.json, CSV tables, energy.md and PNG plots into --out."
        ),
    )
    cc.add_input(
        r,
        "run",
        help="run folder (or checkpoint file), or a NIR graph (.nir file or converted folder) "
        "with --inputs",
    )
    cc.add_input(r, "--data", help="data-set root (default: the one the run was trained on)")
    cc.add_graph_input_flags(r)
    r.add_argument(
        "--targets",
        type=_csv,
        default=(),
        help="comma-separated target ids or .toml paths (default: every known target; "
        "see `nalln hardware list`)",
    )
    cc.add_output(r, "--out", kind="folder", required=True, help="output folder")
    r.add_argument("--n", type=int, default=100, help="images to count (default 100)")
    r.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test", "all"),
        help="which images: a split of the run's manifest, or all images of --data",
    )
    r.add_argument(
        "--models",
        type=_csv,
        default=(),
        help="energy models: ops, ops+memory, dense (default: every model a target supports)",
    )
    r.add_argument(
        "--baseline",
        default="asic45-int8",
        help="ASIC target the ANN runs on when a neuromorphic target is compared (default "
        "asic45-int8: a fair quantised ANN)",
    )
    r.add_argument(
        "--host",
        default="asic45-int8",
        help="ASIC target that runs what a neuromorphic chip cannot (analog-input layers)",
    )
    cc.add_input(
        r, "--targets-dir", action="append", default=[], help="extra folder of target .toml files"
    )
    r.add_argument("--checkpoint", default="best", choices=("best", "last"))
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    r.add_argument("--layout", default="auto", help="data layout (auto, primary, external, FILE)")
    r.add_argument("--seed", type=int, default=0, help="seed for picking --n images")
    cc.add_json_flag(r, "energy.json")
    cc.add_progress_flag(r)
    r.set_defaults(func=run_report)


def is_graph(args: argparse.Namespace) -> bool:
    """Whether RUN names a NIR graph (a .nir file or a converted folder), not a run."""
    from pathlib import Path

    from nalln.conversion.sources import is_nir_path

    return is_nir_path(Path(args.run).expanduser())


def run_report(args: argparse.Namespace) -> int:
    from nalln.energy.render import terminal_text, write_report
    from nalln.energy.report import ReportOptions, build_report

    opts = ReportOptions(
        targets=args.targets,
        models=args.models,
        n=args.n,
        split=args.split,
        baseline=args.baseline,
        host=args.host,
        targets_dirs=tuple(args.targets_dir),
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        device=args.device,
        layout=args.layout,
        seed=args.seed,
    )
    if is_graph(args):
        from nalln.energy.graph_report import build_graph_report

        if args.data is not None:
            raise NallnError(
                "--data is for runs; a NIR graph is counted on --inputs X.npz (see "
                "docs/conversion.md, 'Graphs other tools wrote')"
            )
        report = build_graph_report(args.run, args.inputs, opts, args.steps)
    else:
        if args.inputs is not None or args.steps is not None:
            raise NallnError(
                "--inputs and --steps are for NIR graphs; a run is counted on its own images "
                "(--data ROOT) with its own T"
            )
        report = build_report(args.run, args.data, opts, progress=cc.show_progress(args))
    files = write_report(report, args.out)
    if not cc.json_or_banner(args, report.data):  # terminal_text carries its own SYNTHETIC line
        print(terminal_text(report.data, files))
    return 0
