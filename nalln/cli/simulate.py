"""``nalln simulate``: run a run's images or a NIR graph's inputs through Norse, Lava or the Loihi
emulator and measure the fidelity to the reference (the torch model, or nalln's float64
simulation of a NIR graph).

Reports top-1 agreement, spike agreement (overall and per layer), accuracy (only with labels:
the run's split, or y in --inputs X.npz), output spike-count difference and seconds per input,
as report.json / report.md / spike_agreement.png, and outputs.npz (back-end and reference
output per input and step).
"""

from __future__ import annotations

import argparse

from nalln.cli import common as cc
from nalln.conversion.backend import BACKENDS
from nalln.ir.se_mode import SEMode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate a converted model on Norse or Lava", description=__doc__
    )
    cc.add_input(p, "run", help="run folder, checkpoint, or a .nir file / converted folder")
    p.add_argument(
        "--backend",
        required=True,
        choices=BACKENDS,
        help="norse, lava, or loihi-emulator (bit-exact Loihi 2 fixed point, batched; always "
        "fixed point)",
    )
    cc.add_conversion_flags(
        p,
        "(Lava) Loihi fixed point: the recorded grid or a calibration",
        (*SEMode.deployable(), SEMode.ONCHIP),
    )
    p.add_argument(
        "--n",
        type=int,
        help="number of images (default 50; loihi-emulator: the whole split)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="split of the run's manifest (default test)",
    )
    cc.add_graph_input_flags(p)
    cc.add_semantics_flags(p)
    cc.add_output(
        p, "--out", kind="folder", help="report folder (default RUN/simulate-<backend>-<se>)"
    )
    cc.add_json_flag(p, "report.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.conversion.simulate import simulate

    res = simulate(
        args.run,
        backend=args.backend,
        se=args.se,
        fixed_point=args.fixed_point,
        data=args.data,
        n=args.n,
        split=args.split,
        out=args.out,
        calibration=cc.checked_calibration(args),
        steps=args.steps,
        inputs=args.inputs,
        progress=cc.show_progress(args),
        choices=cc.semantics_choices(args),
    )
    m = res.metrics
    if cc.json_or_banner(args, m, m["synthetic"]):
        return 0
    print(
        f"{m['backend']} ({m['mode']}, SE {m['se_mode']}) vs {m['reference']} on "
        f"{m['images']} inputs - measured:"
    )
    rows = [
        ["top-1 agreement", m["top1_agreement"]],
        ["spike agreement (all layers)", m["spike_agreement"]["overall"]],
        ["accuracy (back-end)", _or_none(m["accuracy"])],
        ["accuracy (reference)", _or_none(m["reference_accuracy"])],
        ["seconds per image", m["seconds_per_image"]],
        ["build seconds", m["build_seconds"]],
    ]
    print(cc.format_table(rows, ["measure", "value"], "lr"))
    layers = [[k, v] for k, v in m["spike_agreement"]["per_layer"].items()]
    print(cc.format_table(layers, ["layer", "spike agreement"], "lr"))
    print(f"reports in {res.out}: " + ", ".join(res.files))
    return 0


def _or_none(value: float | None) -> float | str:
    return "not measured (no labels)" if value is None else value
