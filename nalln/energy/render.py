"""Writing the energy report: energy.json, CSV tables, energy.md, PNG plots, terminal text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nalln.energy import tables
from nalln.energy.plots import (
    NO_VERDICT,
    plot_energy_per_layer,
    plot_firing_rates,
    plot_headline,
    plot_sops_vs_macs,
)
from nalln.energy.report import RULES, EnergyReport, headline
from nalln.io import write_frame, write_json, write_text
from nalln.provenance import Origin, notes
from nalln.textfmt import format_table


def is_graph(src: dict[str, Any]) -> bool:
    """Whether the report counted a NIR graph (``energy report GRAPH.nir``), not a run."""
    return src.get("kind") == "nir-graph"


def energy_str(pj: float | None) -> str:
    """Picojoules in a readable unit."""
    if pj is None:
        return "n/a"
    for unit, scale in (("J", 1e12), ("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def count_str(v: float | None) -> str:
    if v is None:
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}" if v != int(v) else str(int(v))


def rate_str(r: float | None) -> str:
    return "-" if r is None else f"{r:.4f}"


def range_str(lo_uj: float, hi_uj: float | None) -> str:
    """An energy range in uJ as text ('>= x' when only a lower bound is modelled)."""
    if hi_uj is None:
        return ">= " + energy_str(lo_uj * 1e6)
    if abs(hi_uj - lo_uj) <= 1e-12 * max(abs(lo_uj), 1e-30):
        return energy_str(lo_uj * 1e6)
    return f"{energy_str(lo_uj * 1e6)} - {energy_str(hi_uj * 1e6)}"


def ratio_str(v: dict[str, Any]) -> str:
    lo, hi = v["ratio_low"], v["ratio_high"]
    return f"{lo:.3g}x" if abs(hi - lo) <= 1e-9 * abs(lo) else f"{lo:.3g}-{hi:.3g}x"


def same_end_str(v: dict[str, Any]) -> str:
    """SNN / ANN with both sides at the same end of their modelling."""
    if v["ratio_dear"] is None:
        return f"{v['ratio_best']:.3g}x (lower bounds)"
    return f"{v['ratio_best']:.3g}x; {v['ratio_dear']:.3g}x"


def break_even_str(v: dict[str, Any]) -> str:
    """Break-even firing rates (pessimistic - optimistic), 'none' when no cost depends on
    spikes, 'never' when even the optimistic end is 0."""
    pes, opt = v["break_even_rate_pessimistic"], v["break_even_rate_optimistic"]
    if pes is None and opt is None:
        return "none (no spike-dependent cost)"
    if not opt:
        return "never"
    text = f"{rate_str(pes)} - {rate_str(opt)}"
    return text + (" (>1: any rate)" if pes is not None and pes >= 1 else "")


def target_str(v: dict[str, Any]) -> str:
    return v["target"] + (f" (PROXY: {v['proxy']})" if v.get("proxy") else "")


def _groups(rep: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rep["snn"]["layers"]:
        seen.setdefault(row["group"], None)
    for e in rep["snn"]["extra_ops"]:
        if e["name"] not in seen:
            seen[e["name"]] = None
    return list(seen)


def layer_table(rep: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    headers = [
        "layer",
        "kind",
        "input",
        "in rate",
        "ACs",
        "MACs",
        "dense",
        "ANN MACs",
        "neurons",
        "spikes",
        "rate",
    ]
    rows = []
    for r in rep["snn"]["layers"]:
        rows.append(
            [
                r["name"],
                r["kind"] + (" (once)" if r["computed"].startswith("once") else ""),
                r["input"],
                rate_str(r["input_rate"]),
                count_str(r["synaptic_acs"]),
                count_str(r["synaptic_macs"]),
                count_str(r["dense_ops"]),
                count_str(r["ann_dense_macs"]),
                count_str(r.get("neurons")),
                count_str(r.get("output_spikes")),
                rate_str(r.get("firing_rate")),
            ]
        )
    t = rep["snn"]["totals"]
    rows.append(
        [
            "total",
            "",
            "",
            "",
            count_str(t["synaptic_acs"]),
            count_str(t["synaptic_macs"]),
            count_str(t["dense_ops"]),
            count_str(rep["ann"]["totals"]["dense_ops"]),
            count_str(t["neurons"]),
            count_str(t["spikes"]),
            rate_str(t["firing_rate"]),
        ]
    )
    return rows, headers


SUMMARY_HEADERS = [
    "target",
    "model",
    "precision",
    "SNN",
    "ANN baseline",
    "ANN",
    "SNN / ANN (range)",
    "SNN / ANN (cheap ends; dear ends)",
    "break-even rate",
    "outcome",
]
FULL_HEADERS = [
    *SUMMARY_HEADERS[:-1],
    "break-even events / weight",
    "host share of SNN",
    "outcome",
]


def _pair_str(a: float | None, b: float | None, fmt: str = "{:.3g}") -> str:
    if a is None and b is None:
        return "-"
    return " - ".join("-" if x is None else fmt.format(x) for x in (a, b))


def summary_table(rep: dict[str, Any], full: bool = False) -> tuple[list[list[Any]], list[str]]:
    """The verdict table: matched comparisons only, with ranges (``full``: also the
    break-even in synaptic events per weight and the host's share of the SNN's energy)."""
    rows = []
    for v in headline(rep["summary"]):
        row = [
            target_str(v),
            v["model"],
            v["precision"] or "-",
            range_str(v["snn_uj_low"], v["snn_uj_high"]),
            v["baseline"],
            range_str(v["baseline_uj_low"], v["baseline_uj_high"]),
            ratio_str(v),
            same_end_str(v),
            break_even_str(v),
        ]
        if full:
            hs = (v["host_share_low"], v["host_share_high"]) if v["host_share_low"] else None
            epw = (
                v["break_even_events_per_weight_pessimistic"],
                v["break_even_events_per_weight_optimistic"],
            )
            never = break_even_str(v) == "never"
            row += [
                "never" if never else _pair_str(*epw),
                "-" if not hs else _pair_str(hs[0], hs[1], "{:.0%}"),
            ]
        rows.append([*row, v["outcome"]])
    return rows, FULL_HEADERS if full else SUMMARY_HEADERS


def verdict_notes(verdicts: list[dict[str, Any]]) -> list[str]:
    """The notes of the verdicts, once per (target, model): what was not charged, proxies."""
    seen: dict[tuple[str, str], list[str]] = {}
    for v in verdicts:
        notes = seen.setdefault((target_str(v), v["model"]), [])
        notes += [n for n in v["notes"] if n not in notes]
    return [f"- {t} / {m}: " + "; ".join(n) for (t, m), n in seen.items() if n]


def where_rows(rep: dict[str, Any]) -> list[str]:
    """Per layer group, where the SNN is cheaper than the ANN, both at their dear end."""
    lines = []
    for tid, e in rep["targets"].items():
        for m, res in e["models"].items():
            per = res.get("per_layer_break_even") if res.get("available", True) else None
            if not per:
                continue
            wins = ", ".join(r["group"] for r in per if r["snn_wins"]) or "no layer"
            loses = ", ".join(r["group"] for r in per if not r["snn_wins"]) or "no layer"
            lines.append(f"- **{tid} / {m}**: SNN cheaper in: {wins}. Dearer in: {loses}.")
    if any(
        "snn_high" in res and "host I/O: SE current out and back" in res["snn_high"]["by_kind_pj"]
        for e in rep["targets"].values()
        for res in e["models"].values()
    ):
        lines.append(
            "- On a chip, the host traffic the SE gating forces on each pointwise layer (its "
            "current out to the host and the gated current back) is charged to that stage's "
            "`.se` group, not to the pointwise layer: read a pointwise 'win' together with it."
        )
    return lines


def onchip_se_table(rep: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """One row per on-chip SE gate (``--se onchip`` runs): counted neurons, synapses, events
    per inference and neuron updates."""
    rows = [
        [
            g["block"],
            f"{g['channels']} x {g['positions']} (C_in {g['in_channels']}, lag {g['lag']})",
            count_str(g["neurons_total"]),
            count_str(g["synapses_total"]),
            count_str(sum(g["binary_events"].values())),
            count_str(sum(g["graded_events"].values())),
            count_str(sum(g["messages_sent"].values())),
            count_str(g["neuron_updates"]),
        ]
        for g in rep["snn"].get("onchip_se") or []
    ]
    headers = [
        "SE gate",
        "C x HW",
        "neurons",
        "synapses",
        "binary events",
        "graded events",
        "messages",
        "neuron updates",
    ]
    return rows, headers


def terminal_text(rep: dict[str, Any], files: dict[str, Path] | None = None) -> str:
    src = rep["source"]
    lines = []
    lines.extend(f"[{n}]" for n in notes(rep["synthetic"], rep.get("synthetic_model", False)))
    if is_graph(src):
        acc = src["accuracy"]["value"]
        lines.append(
            f"{src['model']} ({src['written_by']}; input {src['input_shape']}), "
            f"T={src['num_steps']}: counted on {src['n_inputs']} inputs ({src['subset']}) by "
            f"{src['counted_by']}; per inference, summed over T; accuracy: "
            + (f"{acc:.4f} (measured, y of X.npz)" if acc is not None else "not measured (no y)")
        )
    else:
        lines.append(
            f"{src['model']} {src['image_size']}x{src['image_size']}, T={src['num_steps']}: "
            f"counted on {src['n_images']} images ({src['subset']}); per inference, summed over T"
        )
    rows, headers = layer_table(rep)
    lines.append(format_table(rows, headers, align="lllrrrrrrrr"))
    rows, headers = onchip_se_table(rep)
    if rows:
        lines.append("on-chip SE gates on neuro-cores (counted, per inference):")
        lines.append(format_table(rows, headers, align="llrrrrrr"))
    rows, headers = summary_table(rep)
    lines.append("")
    lines.append(
        "SNN vs ANN under matched cost models, energy per inference (estimated from cited "
        "constants; ranges low - high; rate = spikes/neuron/step):"
    )
    lines.append(format_table(rows, headers, align="lllrlrrrrl") if rows else NO_VERDICT)
    for t, entry in rep["targets"].items():
        for m, res in entry["models"].items():
            if not res.get("available", True):
                lines.append(f"  {t} / {m}: n/a - {res['reason']}")
    if files:
        lines.append(f"report in {Path(next(iter(files.values()))).parent}: " + ", ".join(files))
    return "\n".join(lines)


def markdown(rep: dict[str, Any]) -> str:
    src = rep["source"]
    t = rep["snn"]["totals"]
    md = ["# Energy report: spikes, synaptic operations and energy per inference", ""]
    for n in notes(rep["synthetic"], rep.get("synthetic_model", False)):
        md += [f"> **{n}**", ""]
    rules = rep.get("rules", RULES)
    if is_graph(src):
        acc = src["accuracy"]
        md += [
            f"- NIR graph: `{src['graph']}` ({src['model']}; written by {src['written_by']}; "
            f"input {src['input_shape']}, T = {src['num_steps']}, SE {src['se_mode']})",
            f"- inputs: `{src['data']}` ({src['subset']}, {src['n_inputs']} inputs counted "
            f"by {src['counted_by']})",
            "- accuracy: "
            + (f"{acc['value']:.4f} ({acc['note']})" if acc["value"] is not None else acc["note"]),
        ]
    else:
        md += [
            f"- checkpoint: `{src['checkpoint']}` ({src['model']}, {src['image_size']} px, "
            f"T = {src['num_steps']})",
            f"- data: `{src['data']}` ({src['subset']}, {src['n_images']} images counted)",
        ]
    md += [
        f"- normalisation: {rules['normalisation']}",
        f"- mean firing rate (counted): **{t['firing_rate']:.4f}** spikes per neuron per step; "
        f"{count_str(t['spikes'])} spikes, {count_str(t['synaptic_acs'])} synaptic ACs and "
        f"{count_str(t['synaptic_macs'])} MACs per inference; the ANN twin does "
        f"{count_str(rep['ann']['totals']['dense_ops'])} dense MACs",
        "",
        "## Counting rules",
        "",
    ]
    md += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in rules.items() if k != "normalisation"]
    md += ["", "## Per layer (counted)", ""]
    rows, headers = layer_table(rep)
    md += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    md += [
        "",
        "Extra operations outside synaptic layers (per inference): "
        + "; ".join(
            f"{e['name']}: {count_str(e['adds'])} adds"
            + (f", {count_str(e['muls'])} multiplies" if e["muls"] else "")
            for e in rep["snn"]["extra_ops"]
        ),
        "",
    ]
    rows, headers = onchip_se_table(rep)
    if rows:
        md += ["## On-chip SE gates (counted, per inference)", ""]
        md += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        md += [""]
    md += [
        "## SNN vs ANN under matched cost models (estimated, per inference)",
        "",
        "Every row prices both sides under one cost model (see `matched` in the rules). "
        "Ranges run from each side's cheap end to its dear end; the SNN is cheaper only when "
        "its dear end is below the ANN's cheap end. The cheap-ends ratio is the comparison "
        "with the ANN at its best dataflow (reuse, zero-skip) and the SNN at its cheapest "
        "modelling. A neuromorphic chip under `ops` has no row: its per-event figure includes "
        "memory, an ANN under `ops` does not.",
        "",
    ]
    rows, headers = summary_table(rep, full=True)
    if not rows:
        md += [NO_VERDICT.replace("\n", " "), ""]
    md += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    md += ["", "Verdicts in words:", ""]
    md += [
        f"- **{target_str(v)} / {v['model']}** vs {v['baseline']}: {v['verdict']}"
        for v in rep["summary"]
    ]
    md += ["", "What each verdict does and does not charge:", ""]
    md += verdict_notes(rep["summary"])
    sp = rep["snn"]["sparsity"]
    ev = sp["synaptic_events_per_nonzero_weight"]
    lo, hi = sp["dampfhoffer_win_range"]
    md += [
        "",
        f"Sparsity in both conventions (counted): {sp['spikes_per_neuron_per_step']:.4f} "
        "spikes per neuron per step; "
        + (f"{ev:.3g}" if ev is not None else "n/a")
        + " synaptic events per nonzero weight per inference over the spike-input layers "
        f"(Dampfhoffer et al. 2023: an SNN beats an efficient ANN only at about {lo}-{hi}).",
    ]
    na = [
        f"- {tid} / {m}: {res['reason']}"
        for tid, e in rep["targets"].items()
        for m, res in e["models"].items()
        if not res.get("available", True)
    ]
    if na:
        md += ["", "Not computed:", "", *na]
    md += [
        "",
        "## Where the SNN wins and where it does not (per layer group, both sides at their "
        "dear end: no reuse, dense ANN, chip costs high)",
        "",
    ]
    md += where_rows(rep)
    md += ["", "## Caveats", ""]
    md += [f"- {c}" for c in rep["caveats"]]
    md += ["", "## Constants used (value, status, source)", ""]
    for tid, e in rep["targets"].items():
        md.append(
            f"**{tid}** ({e['name']}; {e['file']})"
            + (f" - energy PROXY: {e['energy_proxy']}" if e["energy_proxy"] else "")
        )
        md.append("")
        for k, c in e["constants"].items():
            proxy = f" [from {c['proxy_from']}]" if "proxy_from" in c else ""
            md.append(f"- `{k}` = {c['value']:g} {c['unit']} ({c['status']}{proxy}): {c['source']}")
        md.append("")
    md += [
        "## Figures",
        "",
        "![SNN vs ANN per target](energy_headline.png)",
        "",
        "![energy per layer](energy_per_layer.png)",
        "",
        "![SOPs vs MACs](sops_vs_macs.png)",
        "",
        "![firing rate](firing_rate.png)",
        "",
        (
            f"_Counts: counted on {src['n_inputs']} inputs by {src['counted_by']}. "
            if is_graph(src)
            else f"_Counts: counted with forward hooks on {src['n_images']} images. "
        )
        + "Energies: estimated from the cited constants. Timing: measured._",
        "",
    ]
    return "\n".join(md)


def write_report(report: EnergyReport, out: str | Path) -> dict[str, Path]:
    """Write every file of the report into ``out``."""
    rep = report.data
    out = Path(out)
    files: dict[str, Path] = {}
    files["energy.json"] = write_json(out / "energy.json", rep)
    for name, frame in tables.frames(rep).items():
        files[f"{name}.csv"] = write_frame(out / f"{name}.csv", frame)
    files["energy.md"] = write_text(out / "energy.md", markdown(rep))
    synthetic = Origin(rep["synthetic"], rep.get("synthetic_model", False))  # the figures' tag
    groups = _groups(rep)
    series: dict[str, dict[str, dict[str, float]]] = {}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    for tid, e in rep["targets"].items():
        for m, res in e["models"].items():
            if not res.get("available", True) or "comparison" in res:
                continue  # a chip under 'ops' has no matched ANN: kept out of the panel
            snn = res["snn"]["fp32"] if m == "dense" else res["snn"]
            series.setdefault(m, {})[tid + (" (proxy)" if e["energy_proxy"] else "")] = snn[
                "by_layer_pj"
            ]
            ann = res.get("ann")
            if ann:
                ann = ann["fp32"] if m == "dense" else ann
                label = ann["target"] + (f" ({ann['precision']})" if ann["precision"] else "")
                baselines.setdefault(m, {})[label] = ann["by_layer_pj"]
    files["energy_headline.png"] = plot_headline(
        rep["summary"], out / "energy_headline.png", synthetic
    )
    files["energy_per_layer.png"] = plot_energy_per_layer(
        groups,
        series,
        baselines,
        out / "energy_per_layer.png",
        synthetic,
        preferred_baseline=rep["options"]["baseline"],
    )
    acs: dict[str, float] = {}
    macs: dict[str, float] = {}
    ann_macs: dict[str, float] = {}
    for r in rep["snn"]["layers"]:
        g = r["group"]
        acs[g] = acs.get(g, 0.0) + r["synaptic_acs"]
        macs[g] = macs.get(g, 0.0) + r["synaptic_macs"]
        ann_macs[g] = ann_macs.get(g, 0.0) + (r["ann_dense_macs"] or 0.0)
    layer_groups = list(acs)
    files["sops_vs_macs.png"] = plot_sops_vs_macs(
        layer_groups,
        [acs[g] for g in layer_groups],
        [macs[g] for g in layer_groups],
        [ann_macs[g] for g in layer_groups],
        out / "sops_vs_macs.png",
        synthetic,
    )
    pops = [p for p in rep["snn"]["populations"]]
    files["firing_rate.png"] = plot_firing_rates(
        [p["name"] for p in pops],
        [p["firing_rate"] for p in pops],
        [[s / p["neurons"] for s in p["per_step_spikes"]] for p in pops],
        out / "firing_rate.png",
        synthetic,
    )
    report.out = out
    report.files = files
    return files
