"""``nalln hardware``: the hardware targets, their cited constants, and whether a network fits."""

from __future__ import annotations

import argparse

from nalln.cli import common as cc
from nalln.errors import NallnError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hardware", help="hardware targets and chip fit", description=__doc__)
    p.add_argument(
        "--targets-dir", action="append", default=[], help="extra folder of target .toml files"
    )
    hsub = p.add_subparsers(dest="hardware_command", metavar="COMMAND")
    hsub.required = True
    ls = hsub.add_parser("list", help="every known target id")
    cc.add_json_flag(ls, "the targets")
    ls.set_defaults(func=run_list)
    sh = hsub.add_parser("show", help="a target's constants with units and citations")
    sh.add_argument("target", help="target id or path of a .toml file")
    cc.add_json_flag(sh, "the target")
    sh.set_defaults(func=run_show)
    va = hsub.add_parser("validate", help="check target .toml files (for adding your own)")
    cc.add_input(va, "files", nargs="+", help="target files")
    va.set_defaults(func=run_validate)
    fi = hsub.add_parser(
        "fit", help="cores and chips a run needs on a neuromorphic target, limits cited"
    )
    cc.add_input(
        fi, "run", help="run folder (or checkpoint file), or a NIR graph (.nir file or folder)"
    )
    fi.add_argument("--target", required=True, help="neuromorphic target id (e.g. loihi2)")
    fi.add_argument("--checkpoint", default="best", choices=("best", "last"))
    fi.add_argument(
        "--steps",
        type=int,
        metavar="T",
        help="(NIR graph) time steps; the fit does not depend on T, so a graph that does not "
        "record it is fitted without",
    )
    cc.add_json_flag(fi, "the fit")
    fi.set_defaults(func=run_fit)


def _registry(args: argparse.Namespace):
    from nalln.hardware_targets import load_registry

    return load_registry(args.targets_dir)


def _models_for(t, reg) -> str:
    from nalln.energy.cost_models import MODELS, availability

    return ",".join(m for m in MODELS if availability(t, m, reg) is None) or "-"


def run_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = []
    for t in reg.targets.values():
        rows.append(
            [
                t.id,
                t.kind,
                _models_for(t, reg),
                "yes" if t.kind == "neuromorphic" and t.has("neurons_per_core") else "-",
                f"PROXY: {t.energy_proxy}" if t.energy_proxy else "",
                t.name,
                "built-in" if t.builtin else str(t.path),
            ]
        )
    keys = ["id", "kind", "energy_models", "fit", "energy", "name", "file"]
    if cc.json_or_banner(args, [dict(zip(keys, r, strict=True)) for r in rows]):
        return 0
    print(cc.format_table(rows, ["id", "kind", "energy models", "fit", "energy", "name", "file"]))
    return 0


def run_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    t = reg.get(args.target)
    consts = dict(t.constants)
    proxy = reg.energy_source(t) if t.energy_proxy else None
    if cc.json_or_banner(
        args,
        {
            "id": t.id,
            "name": t.name,
            "kind": t.kind,
            "description": t.description,
            "file": str(t.path),
            "energy_proxy": t.energy_proxy,
            "notes": list(t.notes),
            "energy_models": _models_for(t, reg).split(","),
            "constants": {
                k: {
                    "value": c.value,
                    "unit": c.unit,
                    "status": c.status,
                    "source": c.source,
                    "note": c.note,
                    "given": c.given,
                }
                for k, c in consts.items()
            },
        },
    ):
        return 0
    print(f"{t.id}: {t.name} ({t.kind}; {t.path})")
    if t.description:
        print(t.description)
    rows = [
        [k, f"{c.value:g}", c.unit, c.status, c.source + (f" [{c.note}]" if c.note else "")]
        for k, c in consts.items()
    ]
    print(cc.format_table(rows, ["constant", "value", "unit", "status", "source"], align="lrlll"))
    if proxy is not None:
        print(
            f"energy: no published per-operation figures; models use {proxy.id}'s as a labelled "
            f"PROXY (`nalln hardware show {proxy.id}`)"
        )
    print(f"energy models: {_models_for(t, reg)}")
    for n in t.notes:
        print(f"note: {n}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from nalln.hardware_targets import load_target_file

    for f in args.files:
        t = load_target_file(f)
        derived = sum(c.status != "published" for c in t.constants.values())
        print(
            f"{f}: ok - target {t.id} ({t.kind}), {len(t.constants)} constants "
            f"({derived} derived or assumed), every one cited"
        )
    return 0


def _is_graph(path: str) -> bool:
    from pathlib import Path

    from nalln.conversion.sources import is_nir_path

    return is_nir_path(Path(path).expanduser())


def run_fit(args: argparse.Namespace) -> int:
    from nalln.energy.chip_fit import fit_network, structure
    from nalln.runs import load_model

    reg = _registry(args)
    target = reg.get(args.target)
    if _is_graph(args.run):
        from nalln.energy.graph_report import graph_structure

        counts, what = graph_structure(args.run, args.steps)
    else:
        if args.steps is not None:
            raise NallnError("--steps is for NIR graphs; a run's T is its own")
        loaded = load_model(args.run, args.checkpoint, "cpu")
        counts = structure(loaded.model, loaded.image_size)
        what = f"{loaded.run_meta.model_name} ({loaded.image_size} px)"
    res = fit_network(counts, target)
    if cc.json_or_banner(args, res.to_dict()):
        return 0
    rows = [
        [
            L.layer,
            L.input,
            L.neurons,
            L.fan_in,
            L.synapses,
            L.per_core,
            L.cores,
            L.binding + (f" ({L.note})" if L.note else ""),
        ]
        for L in res.layers
    ]
    print(
        cc.format_table(
            rows,
            ["population", "input", "neurons", "fan-in", "synapses", "per core", "cores", "limit"],
            align="llrrrrrl",
        )
    )
    verdict = "fits" if res.feasible else "does NOT fit (see the limit column)"
    print(
        f"{what} on {target.id}: {verdict}; "
        f"{res.cores} cores, {res.chips()} chip(s) (estimated: greedy per-layer placement)"
    )
    print("limits used:")
    for k, v in res.limits.items():
        print(f"  {k} = {v['value']:g} {v['unit']} ({v['status']}; {v['source']})")
    for n in res.notes:
        print(f"note: {n}")
    return 0
