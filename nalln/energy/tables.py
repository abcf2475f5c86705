"""The energy report's tables as pandas DataFrames: what the CSV files hold, for the API.

Every builder takes the report's JSON-ready data (``EnergyReport.data``); columns keep Python
values (``dtype=object``) so that a CSV written from a frame reads exactly as the values do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

NESTED = ("snn", "ann", "notes")


def _layer_rows(rep: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    keys = [
        "name",
        "group",
        "kind",
        "role",
        "input",
        "counted_as",
        "computed",
        "weights",
        "nonzero_weights",
        "input_nonzero",
        "input_rate",
        "synaptic_acs",
        "synaptic_macs",
        "dense_ops",
        "ann_dense_macs",
        "ann_effective_macs",
        "population",
        "neurons",
        "output_spikes",
        "firing_rate",
        "membrane_updates",
    ]
    # a NIR graph's report also names the pooling folded into a layer (graph_report.py)
    keys += [k for k in ("folded_pool",) if any(k in r for r in rep["snn"]["layers"])]
    mem_keys = sorted({k for r in rep["snn"]["layers"] for k in r.get("memory_accesses", {})})
    rows = [
        [r.get(k) for k in keys] + [r.get("memory_accesses", {}).get(k) for k in mem_keys]
        for r in rep["snn"]["layers"]
    ]
    return rows, keys + [f"mem_{k}" for k in mem_keys]


def _step_rows(rep: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    rows = []
    for r in rep["snn"]["layers"]:
        ps = r["per_step"]
        for t in range(len(ps["synaptic_acs"])):
            rows.append(
                [
                    r["name"],
                    t,
                    ps["input_nonzero"][t],
                    ps["synaptic_acs"][t],
                    ps["synaptic_macs"][t],
                    ps["dense_ops"][t],
                    ps.get("output_spikes", [None] * (t + 1))[t],
                ]
            )
    return rows, [
        "layer",
        "step",
        "input_nonzero",
        "synaptic_acs",
        "synaptic_macs",
        "dense_ops",
        "output_spikes",
    ]


ESTIMATE_KEYS = (
    "snn",
    "snn_reuse",
    "snn_low",
    "snn_high",
    "ann",
    "ann_zero_skip",
    "ann_reuse",
    "ann_zero_skip_reuse",
)


def _target_rows(rep: dict[str, Any]) -> tuple[list[list[Any]], list[str], list[list[Any]]]:
    rows, per_layer = [], []
    for tid, e in rep["targets"].items():
        for m, res in e["models"].items():
            if not res.get("available", True):
                rows.append([tid, m, *([None] * 7), e["energy_proxy"], res["reason"]])
                continue
            ests = []
            for net_key in ESTIMATE_KEYS:
                val = res.get(net_key)
                if val is None:
                    continue
                ests += list(val.values()) if m == "dense" else [val]
            for est in ests:
                rows.append(
                    [
                        tid,
                        m,
                        est["network"],
                        est["precision"],
                        est["dataflow"],
                        est["energy_pj"],
                        est["fixed_pj"],
                        est["activity_dependent_pj"],
                        est["host_pj"],
                        e["energy_proxy"],
                        "; ".join(est["notes"]),
                    ]
                )
                for g, pj in est["by_layer_pj"].items():
                    per_layer.append([tid, m, est["network"], est["precision"], g, pj])
    headers = [
        "target",
        "model",
        "network",
        "precision",
        "dataflow",
        "energy_pj",
        "fixed_pj",
        "activity_dependent_pj",
        "host_pj",
        "energy_proxy",
        "notes",
    ]
    return rows, headers, per_layer


def _frame(rows: list[list[Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns, dtype=object)


def layers_frame(rep: dict[str, Any]) -> pd.DataFrame:
    """Per synaptic layer: counts (spikes, SOPs, MACs, memory accesses) of the SNN."""
    return _frame(*_layer_rows(rep))


def steps_frame(rep: dict[str, Any]) -> pd.DataFrame:
    """Per layer and time step: inputs, synaptic operations and output spikes."""
    return _frame(*_step_rows(rep))


def targets_frame(rep: dict[str, Any]) -> pd.DataFrame:
    """Per target, cost model, network and precision: the energy estimate and its parts."""
    rows, headers, _ = _target_rows(rep)
    return _frame(rows, headers)


def per_layer_targets_frame(rep: dict[str, Any]) -> pd.DataFrame:
    """Per target, cost model, network and precision: energy by layer group."""
    _, _, per_layer = _target_rows(rep)
    return _frame(per_layer, ["target", "model", "network", "precision", "group", "energy_pj"])


def summary_frame(rep: dict[str, Any]) -> pd.DataFrame:
    """The verdict rows (flat fields; the nested SNN/ANN details stay in energy.json)."""
    flat = [k for k in (rep["summary"][0] if rep["summary"] else {}) if k not in NESTED]
    return _frame([[s[k] for k in flat] for s in rep["summary"]], flat)


def frames(rep: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Every table, by the name of the CSV file it is written to."""
    return {
        "energy_layers": layers_frame(rep),
        "energy_per_step": steps_frame(rep),
        "energy_targets": targets_frame(rep),
        "energy_per_layer_targets": per_layer_targets_frame(rep),
        "energy_summary": summary_frame(rep),
    }
