"""``nalln convert``: a trained run (or a NIR graph) -> an artefact a neuromorphic tool chain runs.

--to nir: NIR 1.0.8 graph (hybrid SE: segments + SE side-car); --to norse: plus Norse's loaded
parameters; --to lava: plus the Lava process-graph description, the netx HDF5 network (static SE)
and, with --fixed-point, the calibrated Loihi fixed-point parameters. --to nir --portable: the
graph rewritten so that stock nir.read, snnTorch's import_from_nir and Norse's from_nir (dt=1e-4)
read and run it as nalln does (dense depthwise convs: larger file). See docs/conversion.md.
"""

from __future__ import annotations

import argparse

from nalln.cli import common as cc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="export a trained model to NIR / Norse / Lava", description=__doc__
    )
    cc.add_input(p, "run", help="run folder, checkpoint, or a .nir file from any tool")
    p.add_argument("--to", required=True, choices=("nir", "lava", "norse"), help="target")
    cc.add_output(p, "--out", kind="folder", required=True, help="output folder")
    cc.add_conversion_flags(
        p, "(--to lava) calibrate Loihi fixed point: 8-bit weights, 24-bit state"
    )
    p.set_defaults(se=None)  # hybrid, or static with --portable
    p.add_argument(
        "--portable",
        action="store_true",
        help="(--to nir) write the graph in the form stock nir.read, snnTorch and Norse read "
        "right: depthwise convs dense (larger), pooling folded, r folded, dt 1e-4; implies "
        "--se static",
    )
    cc.add_graph_input_flags(p)
    cc.add_semantics_flags(p)
    cc.add_json_flag(p, "convert.json")
    cc.add_progress_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nalln.conversion.convert import convert

    se = args.se or ("static" if args.portable else "hybrid")
    res = convert(
        args.run,
        to=args.to,
        out=args.out,
        se=se,
        fixed_point=args.fixed_point,
        data=args.data,
        calibration=cc.checked_calibration(args),
        progress=cc.show_progress(args),
        portable=args.portable,
        steps=args.steps,
        inputs=args.inputs,
        choices=cc.semantics_choices(args),
    )
    s = res.summary
    if cc.json_or_banner(args, s, s["synthetic"]):
        return 0
    print(
        f"{s['target']}: SE {s['se_mode']}, {s['segments']} NIR segment(s); "
        f"NIR round trip: {s['nir_round_trip']}"
    )
    st = s.get("static_se")
    if st and "val_accuracy_change" in st:
        print(
            f"static SE: validation accuracy {st['val_accuracy_dynamic']:.4f} (dynamic) -> "
            f"{st['val_accuracy_static']:.4f} (static), change "
            f"{st['val_accuracy_change']:+.4f} on {st['val_images']} images (measured)"
        )
    if isinstance(s.get("netx"), dict):
        nx = s["netx"]
        print(
            f"netx: {nx['file']} loads in lava.lib.dl.netx ({nx['layers']} layers); "
            f"{nx['compared']}: max difference to the fixed-point plan "
            f"{nx['max_abs_difference']:.2g} (measured)"
        )
    elif "netx" in s:
        print(f"netx: {s['netx']}")
    if "netx_grid" in s:
        ng = s["netx_grid"]

        def rates(key: str) -> str:
            return ", ".join(f"{k} {v:.3f}" for k, v in ng[key].items())

        netx_a = rates("spike_agreement_calibration_netx")
        own = rates("spike_agreement_calibration_with_exponent")
        print(
            "netx: loop weights without exponent (netx's dense_rec holds exponent 0 only); "
            f"spike agreement with float on the calibration inputs {netx_a} (with the exponent "
            f"Lava uses: {own}; measured)"
        )
    pt = s.get("portable")
    if pt:
        print(
            f"portable: stock nir.read passes; {pt['values_portable']} stored values "
            f"({pt['size_ratio']:g}x the exact export: {len(pt['dense_convs'])} depthwise conv(s) "
            f"made dense); load with {pt['load_with']['snntorch'].split(';')[0]} or "
            f"{pt['load_with']['norse']}"
        )
    print(f"files in {res.out}: " + ", ".join(sorted(res.files)))
    return 0
