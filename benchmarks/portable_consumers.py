"""Which consumers read nalln's NIR export, exact and portable, and do they spike as nalln?

For a run folder: the static-SE export as ``convert --to nir --se static`` writes it (exact) and
as ``--portable`` writes it; then stock ``nir.read`` (default type checks), snnTorch 1.0
``import_from_nir`` and Norse 1.1 ``from_nir`` on each, and for what loads, every LIF layer's
spikes on ``--n`` test images at batch 1 and batch 4 against nalln's torch model (static gates).

    python benchmarks/portable_consumers.py RUN [--data ROOT] [--n 16]
    python benchmarks/portable_consumers.py --sizes    # size cost, default architecture

Prints a table and writes ``benchmarks/results/portable_consumers.json`` (``--json``).
``--sizes`` exports the untrained default NeurALLNet at 64 and 224 px (static gates 0.5) and
prints weights, all stored values and file bytes, exact vs portable.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from nalln.conversion.consumers import load_norse, load_snntorch, run_norse, run_snntorch
from nalln.conversion.export import export_model
from nalln.conversion.nir_io import Artefact, graph_info
from nalln.conversion.plan import lower
from nalln.conversion.portable import portable_export
from nalln.conversion.reference import run_torch_model
from nalln.conversion.sources import load_source, load_split, prepare
from nalln.io import write_json
from nalln.ir.reference import Trace, batched, run_plan
from nalln.models.blocks import se_blocks
from nalln.models.registry import create


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"


def compare(got: Trace, want: Trace) -> dict[str, Any]:
    """Spike mismatches over every layer, per layer, and the output / top-1 difference."""
    per_layer = {k: int((got.spikes[k] != s).sum()) for k, s in want.spikes.items()}
    return {
        "spike_mismatches": sum(per_layer.values()),
        "spike_entries": sum(int(s.numel()) for s in want.spikes.values()),
        "per_layer_mismatches": per_layer,
        "max_abs_output_difference": float((got.outputs - want.outputs).abs().max()),
        "top1_agreement": float((got.logits.argmax(1) == want.logits.argmax(1)).double().mean()),
    }


def sizes() -> None:
    """Exact vs portable size of the default architecture (untrained, static gates 0.5)."""
    folder = Path(tempfile.mkdtemp(prefix="portable-sizes-"))
    for size in (64, 224):
        torch.manual_seed(0)
        model = create("neurallnet", image_size=size).eval()
        gates = {n: np.full(b.pw.conv.out_channels, 0.5) for n, b in se_blocks(model).items()}
        exported = export_model(model, se_mode="static", gates=gates)
        info = portable_export(exported).meta["portable"]
        nir.write(folder / "e.nir", exported.graph)
        nir.write(folder / "p.nir", portable_export(exported).graph)
        print(
            f"{size} px: weights {info['weights_exact']} -> {info['weights_portable']}; all values "
            f"{info['values_exact']} -> {info['values_portable']}; file bytes "
            f"{(folder / 'e.nir').stat().st_size} -> {(folder / 'p.nir').stat().st_size}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--json", default="benchmarks/results/portable_consumers.json")
    ap.add_argument("--sizes", action="store_true", help="only the size cost (no run needed)")
    args = ap.parse_args()
    if args.sizes:
        sizes()
        return
    if args.run is None:
        ap.error("pass a run folder (or --sizes)")

    source = load_source(args.run)
    prepared = prepare(source.loaded, "static", args.data)
    exact = prepared.exported.graph
    portable = portable_export(prepared.exported).segments[0]
    x, _, _ = load_split(source, args.data, "test", args.n, False)
    steps = source.loaded.model.num_steps
    want = run_torch_model(prepared.reference, x)

    folder = Path(tempfile.mkdtemp(prefix="portable-consumers-"))
    paths = {"exact": folder / "exact.nir", "portable": folder / "portable.nir"}
    nir.write(paths["exact"], exact)
    nir.write(paths["portable"], portable)
    result: dict[str, Any] = {
        "run": str(args.run),
        "images": len(x),
        "num_steps": steps,
        "spike_rate_per_layer": {k: float(s.float().mean()) for k, s in want.spikes.items()},
        "file_bytes": {k: p.stat().st_size for k, p in paths.items()},
        "portable": portable_export(prepared.exported).meta["portable"],
        "forms": {},
    }
    nalln_exact = run_plan(lower(Artefact([exact], [], graph_info(exact))), x)
    for form, path in paths.items():
        row: dict[str, Any] = {}
        try:
            nir.read(path)
            row["stock_nir_read"] = "passes"
        except ValueError as exc:
            row["stock_nir_read"] = _first_line(exc)
        graph = nir.read(path, type_check=False)
        g = nir.read(path, type_check=False)  # lower() sets node types: a copy of its own
        row["nalln_vs_exact"] = compare(
            run_plan(lower(Artefact([g], [], graph_info(g))), x), nalln_exact
        )
        for name, load, run in (
            ("snntorch", load_snntorch, run_snntorch),
            ("norse", load_norse, run_norse),
        ):
            try:
                load(nir.read(path, type_check=False))
            except Exception as exc:  # recording what the importer does
                row[name] = {"loads": _first_line(exc)}
                continue
            row[name] = {"loads": "yes"}
            for batch in (1, 4):
                start = time.perf_counter()
                try:
                    got = batched(lambda xb, run=run, graph=graph: run(graph, xb, steps), x, batch)
                except Exception as exc:
                    row[name][f"batch_{batch}"] = {"runs": _first_line(exc)}
                    continue
                row[name][f"batch_{batch}"] = {
                    "runs": "yes",
                    "seconds": round(time.perf_counter() - start, 2),
                    **compare(got, want),
                }
        result["forms"][form] = row
    write_json(args.json, result)
    print(f"{len(x)} test images, T = {steps}; files {result['file_bytes']}")
    print("| form | stock nir.read | consumer | loads | batch | spike mismatches | top-1 |")
    print("|---|---|---|---|---|---|---|")
    for form, row in result["forms"].items():
        for name in ("snntorch", "norse"):
            r = row[name]
            for batch in (1, 4):
                b = r.get(f"batch_{batch}", {})
                mism = f"{b['spike_mismatches']} / {b['spike_entries']}" if "runs" in b else "-"
                top1 = b.get("top1_agreement", "-")
                print(
                    f"| {form} | {row['stock_nir_read'][:40]} | {name} | {r['loads'][:50]} | "
                    f"{batch} | {b.get('runs', '-')[:40] if b.get('runs') != 'yes' else mism} | "
                    f"{top1} |"
                )
    print(
        json.dumps({k: v["nalln_vs_exact"]["spike_mismatches"] for k, v in result["forms"].items()})
    )


if __name__ == "__main__":
    main()
