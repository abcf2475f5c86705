"""``nalln simulate``: run images through Norse or Lava and measure how faithfully the back-end
reproduces the torch model.

Reference: the torch model of the run (hybrid: the dynamic model; static: the same model with
the calibrated static gates), or for a NIR graph from another tool our float64 simulation of its
NIR semantics. Every figure in the report is measured on this machine in this run.

JSON keys: ``top1_agreement`` (back-end argmax == reference argmax), ``spike_agreement``
(``overall`` and ``per_layer``: fraction of (image, step, neuron) entries with the same spike /
no-spike), ``accuracy`` (back-end vs labels; null without labels: a NIR graph's inputs
without ``y``, or image folders whose classes the graph does not record), ``seconds_per_image``
(back-end wall time per image after the network is built), ``output_spike_count_difference``
(last spiking layer), ``reference_accuracy``, ``build_seconds``, ``semantics`` (dt and each
population's reset rule, spikes per step and floor) and, where they apply, ``static_se`` and
``fixed_point``. ``outputs.npz`` holds the back-end's and the reference's
output per input and step.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nalln.conversion.backend import BACKENDS, Backend
from nalln.conversion.inputs import Inputs, load_inputs, steps_for
from nalln.conversion.nir_io import read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.conversion.reference import run_torch_model
from nalln.conversion.semantics import Choices
from nalln.conversion.sources import (
    NEEDS_INPUTS,
    SE_GATE_IMAGES,
    Source,
    graph_input_shape,
    load_source,
    load_split,
    prepare,
    run_index,
    training_images,
    with_choices,
)
from nalln.distributed.collect import broadcast, gather_shards, shard_range, world_fits
from nalln.distributed.world import SINGLE, World, current
from nalln.errors import NallnError
from nalln.io import save_figure, write_json, write_text
from nalln.ir.reference import Trace, batched, concat, run_plan
from nalln.ir.se_mode import SEMode

EMULATOR_BATCH = 32

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class SimulationResult:
    metrics: dict[str, Any]
    out: Path
    files: dict[str, Path]

    @property
    def spike_agreement(self) -> pd.DataFrame:
        """Per-layer spike agreement with the reference, as a pandas DataFrame."""
        import pandas as pd

        per = self.metrics["spike_agreement"]["per_layer"]
        return pd.DataFrame({"layer": list(per), "spike_agreement": list(per.values())})


def layer_agreement(ref: Trace, got: Trace, names: list[str]) -> dict[str, Any]:
    per_layer, details = {}, {}
    match = total = 0
    for name in names:
        a, b = ref.spikes[name], got.spikes[name]
        if a.shape != b.shape:
            raise NallnError(f"layer {name}: back-end spikes {list(b.shape)} vs {list(a.shape)}")
        same = a.numel() - int(torch.count_nonzero(a != b))
        per_layer[name] = same / a.numel()
        details[name] = {
            "neurons": int(np.prod(a.shape[2:])),
            "spikes_reference": spike_total(a),
            "spikes_backend": spike_total(b),
            "mismatches": int(a.numel() - same),
            "spike_rate_reference": spike_total(a) / a.numel()
            if a.dtype == torch.bool
            else float(a.double().mean()),
        }
        match += same
        total += a.numel()
    return {
        "overall": match / total if total else None,
        "per_layer": per_layer,
        "per_layer_details": details,
    }


def spike_total(s: torch.Tensor) -> int:
    """All spikes of a trace tensor: bool counted as nonzero (a bool ``sum`` widens every
    entry to int64, about 15x slower), counts summed."""
    return int(torch.count_nonzero(s)) if s.dtype == torch.bool else int(s.sum())


def spike_count_difference(ref: Trace, got: Trace, layer: str) -> dict[str, Any]:
    a = ref.spikes[layer].sum(0).double()  # [B, ...] counts over T
    b = got.spikes[layer].sum(0).double()
    return {
        "layer": layer,
        "mean_abs_difference_per_neuron": float((a - b).abs().mean()),
        "total_reference": int(a.sum()),
        "total_backend": int(b.sum()),
    }


def fidelity(
    ref: Trace, got: Trace, labels: torch.Tensor | None, names: list[str]
) -> dict[str, Any]:
    """Agreement always; accuracy only against labels that belong to the network's classes
    (``None``: ``accuracy`` and ``reference_accuracy`` are null)."""
    ref_pred, got_pred = ref.logits.argmax(1), got.logits.argmax(1)
    agree = layer_agreement(ref, got, names)

    def acc(pred: torch.Tensor) -> float | None:
        return None if labels is None else float((pred == labels).double().mean())

    return {
        "top1_agreement": float((ref_pred == got_pred).double().mean()),
        "spike_agreement": {"overall": agree["overall"], "per_layer": agree["per_layer"]},
        "spike_layers": agree["per_layer_details"],
        "accuracy": acc(got_pred),
        "reference_accuracy": acc(ref_pred),
        "max_abs_logit_difference": float((ref.logits - got.logits).abs().max()),
        "output_spike_count_difference": spike_count_difference(ref, got, names[-1])
        if names
        else None,
    }


def graded_output(plan, ref: Trace, got: Trace) -> dict[str, Any]:
    """How a graded output (a readout current, an LI / Integrator membrane) agrees per step:
    spike agreement does not apply, so the largest absolute and relative difference over every
    input, step and output (relative to the largest reference value) and top-1 of the
    time average (``top1_agreement``, as for NeurALLNet's readout)."""
    ro = plan.stages[-1].readout
    diff = float((ref.outputs.double() - got.outputs.double()).abs().max())
    peak = float(ref.outputs.double().abs().max())
    return {
        "what": f"{ro.nir_type} node {ro.name!r}: its membrane v per step"
        if ro is not None
        else "the last synapse's current per step",
        "max_abs_difference_per_step": diff,
        "max_relative_difference_per_step": diff / peak if peak else None,
        "reference_peak": peak,
    }


def accuracy_interval(trace: Trace, labels: torch.Tensor | None) -> list[float] | None:
    """95% percentile-bootstrap interval of the accuracy (10,000 resamples, as ``evaluate``)."""
    if labels is None or len(labels) < 2:
        return None
    from nalln.evaluation.bootstrap import accuracy_interval as interval

    k = int(max(int(labels.max()) + 1, trace.logits.shape[1]))
    return list(interval(labels.numpy(), trace.logits.argmax(1).numpy(), k))


def _run_norse(artefact, x, T, progress) -> tuple[Trace, float, float]:
    from nalln.conversion.norse_backend import NorseNetwork

    t0 = time.perf_counter()
    net = NorseNetwork(artefact)
    t1 = time.perf_counter()
    traces = []
    for i in tqdm(range(0, len(x), 16), desc="norse", disable=not progress, leave=False):
        traces.append(net.run(x[i : i + 16], T))
    from nalln.ir.reference import concat

    return concat(traces), t1 - t0, time.perf_counter() - t1


def simulate(
    source_path: str | Path,
    *,
    backend: str,
    se: SEMode | str = SEMode.HYBRID,
    fixed_point: bool = False,
    data: str | Path | None = None,
    n: int | None = None,
    split: str = "test",
    out: str | Path | None = None,
    calibration: int = 64,
    steps: int | None = None,
    inputs: str | Path | None = None,
    progress: bool = True,
    choices: Choices | None = None,
) -> SimulationResult:
    """Simulate a run's split (``data``) or a NIR graph's ``inputs`` (X.npz) / images on
    ``backend`` and measure it against the reference; everything is checked before any work.
    ``choices``: the semantics flags for a graph that records none (``--reset``, ``--spikes``,
    ``--dt``; :mod:`nalln.conversion.semantics`)."""
    se = SEMode.parse(se, (*SEMode.deployable(), SEMode.ONCHIP))
    try:
        backend = Backend(backend)
    except ValueError:
        names = ", ".join(BACKENDS)
        raise NallnError(f"unknown back-end {backend!r}; use one of {names}") from None
    if fixed_point and not backend.has_fixed_point:
        raise NallnError(
            "--fixed-point applies to --backend lava or loihi-emulator (Loihi's fixed point)"
        )
    fixed_point = fixed_point or backend.always_fixed_point
    world = current()
    if world.distributed and backend is not Backend.LOIHI_EMULATOR:
        raise NallnError(
            f"under torchrun `simulate` shards only --backend loihi-emulator; --backend "
            f"{backend.value} runs its simulator in one process: start it without torchrun"
        )
    if n is None:
        n = backend.default_images
    if n is not None and n < 1:
        raise NallnError("--n must be at least 1")
    if backend is Backend.LAVA:
        from nalln.conversion import lava_compat

        lava_compat.import_lava()  # fail early, before any work, if Lava is missing
    if se is SEMode.ONCHIP and not fixed_point:
        raise NallnError(
            "--se onchip is Loihi's integer gate: add --fixed-point (--backend lava) or use "
            "--backend loihi-emulator"
        )
    source = with_choices(load_source(source_path), choices)
    onchip = _onchip_run(source, se)
    if onchip:
        se = SEMode.ONCHIP  # the recorded grid computes the gates on the chip
    fixed_tag = "-fixed" if fixed_point and not backend.always_fixed_point else ""
    tag = f"{backend}{fixed_tag}-{se}"
    out_dir = Path(out) if out else _default_out(source, tag)
    given = graph_inputs(source, inputs, data, steps)
    steps = steps_for(given, steps)
    if given is not None:
        calib_x = given.x[:calibration]
        given = given.first(n) if n is not None else given
        x, labels = given.x, given.y
        what = f"--inputs {given.path} ({given.drive.value})"
    else:
        x, labels, _ = load_split(source, data, split, n, progress)
        what = split if source.loaded is not None else "all images of --data"
    metrics: dict[str, Any] = {
        "backend": backend.value,
        "mode": "fixed point (Loihi)" if fixed_point else "float",
        "se_mode": se,
        "images": int(len(x)),
        "inputs": int(len(x)),
        "split": what,
        "labels": _label_note(source, given, labels),
        "synthetic": source.synthetic,
        "source": str(source.path),
    }
    train_x = None
    with tempfile.TemporaryDirectory(prefix="nalln-sim-") as tmp:
        if source.loaded is not None:
            if (se is SEMode.STATIC or fixed_point) and source.loaded.run is not None:
                index = run_index(source.loaded, data)
                train_x, _ = training_images(
                    source.loaded, index, max(calibration, SE_GATE_IMAGES), progress
                )
            export_se = SEMode.HYBRID if onchip else se  # onchip: the gated graph, cut as hybrid
            prepared = prepare(source.loaded, export_se, data, progress, train_x)
            write_artefact(tmp, prepared.exported)
            artefact = read_artefact(tmp)  # back-ends read what a file holds
            reference = sharded(
                lambda xs: batched(lambda b: run_torch_model(prepared.reference, b), xs, 16),
                x,
                world,
            )
            # "none" for a model without SE
            metrics["se_mode"] = SEMode.ONCHIP if onchip else prepared.exported.se_mode
            kind = {
                "static": "static SE gates",
                "hybrid": "dynamic SE",
                "none": "no SE blocks",
                "onchip": "on-chip SE: the chip's integer gates",
            }
            metrics["reference"] = f"torch model ({kind[metrics['se_mode']]})"
            if prepared.static_se:
                metrics["static_se"] = prepared.static_se
        else:
            artefact = source.artefact
            metrics["se_mode"] = artefact.se_mode
            reference = None
            metrics["reference"] = "nalln float64 simulation of the NIR graph"
            if given is not None:
                train_x = calib_x  # fixed point calibrates on the given inputs
        plan = lower(artefact, steps)
        if reference is None:
            reference = sharded(lambda xs: batched(lambda b: run_plan(plan, b), xs, 16), x, world)
        T = plan.num_steps
        names = [nn.name for nn in plan.neurons]
        if backend is Backend.NORSE:
            got, build, run_s = _run_norse(artefact, x, T, progress)
        elif backend is Backend.LAVA:
            got, build, run_s = _run_lava(
                plan, x, fixed_point, train_x, calibration, data, source, metrics, progress
            )
        else:
            got, build, run_s = _run_emulator(
                plan, x, train_x, calibration, data, source, metrics, progress, world
            )
    metrics.update(fidelity(reference, got, labels, names))
    if plan.readout is not None:
        metrics["graded_output"] = graded_output(plan, reference, got)
    metrics["accuracy_ci95"] = accuracy_interval(got, labels)
    metrics["reference_accuracy_ci95"] = accuracy_interval(reference, labels)
    metrics["seconds_per_image"] = run_s / len(x)
    metrics["build_seconds"] = build
    metrics["num_steps"] = T
    metrics["semantics"] = semantics_of(plan)
    metrics["provenance"] = (
        "measured: wall-clock on this machine (CPU); agreement counted over every image, step "
        "and neuron"
    )
    if not world.main:  # rank 0 writes the merged result
        return SimulationResult(metrics, out_dir, {})
    files = write_report(out_dir, metrics)
    files["outputs.npz"] = write_outputs(out_dir / "outputs.npz", reference, got)
    return SimulationResult(metrics, out_dir, files)


def sharded(run: Callable[[torch.Tensor], Trace], x: torch.Tensor, world: World) -> Trace:
    """``run(x)``, each rank taking a contiguous share of the inputs under torchrun; the
    traces are joined in rank order, so they equal one process's."""
    if not world.distributed:
        return run(x)
    world_fits(len(x), world, "inputs")
    r = shard_range(len(x), world)
    return concat(gather_shards([run(x[r.start : r.stop])], world))


def semantics_of(plan) -> dict[str, Any]:
    """The time step and each population's reset rule, spikes per step and floor (the graph's
    record or the user's flags; nalln.conversion.semantics), as the report states them."""
    return {
        "dt": plan.dt,
        "neurons": {
            n.name: {"reset": n.reset.value, "spikes": n.spikes.value, "v_min": n.v_min}
            for n in plan.neurons
        },
    }


def _onchip_run(source: Source, se: SEMode) -> bool:
    """Whether the gates run on the chip: a run fine-tuned with ``--se onchip`` simulated with
    its gates (``--se onchip`` or ``hybrid``); ``--se onchip`` on anything else is refused."""
    from nalln.loihi.grid import recorded_grid

    loaded = source.loaded
    grid = recorded_grid(loaded.run_meta) if loaded is not None else None
    tuned = grid is not None and grid.se_mode is SEMode.ONCHIP
    if se is SEMode.ONCHIP and not tuned:
        raise NallnError(
            "--se onchip needs a run fine-tuned for it (`nalln finetune-fixed-point RUN --out "
            "RUN_FP --se onchip`); this source has no on-chip SE grid"
        )
    if tuned and not se.gated:
        raise NallnError(
            "this run was fine-tuned with on-chip SE (its gates are part of the network); "
            "simulate it with --se onchip"
        )
    return tuned


def graph_inputs(
    source: Source, inputs: str | Path | None, data: str | Path | None, steps: int | None
) -> Inputs | None:
    """The checked ``--inputs`` of a NIR graph (``None``: images from ``--data``)."""
    if inputs is None:
        if source.loaded is None and data is None:
            raise NallnError(NEEDS_INPUTS)
        return None
    if source.loaded is not None:
        raise NallnError(
            "--inputs is for NIR graphs; a run is simulated on its own split (--data ROOT)"
        )
    if data is not None:
        raise NallnError("give --inputs X.npz or --data ROOT, not both")
    if steps is not None and steps < 1:
        raise NallnError("--steps must be at least 1")
    return load_inputs(inputs, graph_input_shape(source))


def _label_note(source: Source, given: Inputs | None, labels: torch.Tensor | None) -> str:
    if labels is not None:
        return "y of --inputs" if given is not None else "the data set's classes"
    if given is not None:
        return "none (X.npz has no y): agreement only"
    return "none: the graph does not record its classes, so --data's folders are not its labels"


def write_outputs(path: Path, reference: Trace, got: Trace) -> Path:
    """``outputs.npz``: ``backend`` and ``reference`` outputs [N, T, K] per input and step."""
    import io

    from nalln.io import write_bytes

    buf = io.BytesIO()
    np.savez(
        buf,
        backend=got.outputs.float().transpose(0, 1).numpy(),
        reference=reference.outputs.float().transpose(0, 1).numpy(),
    )
    return write_bytes(path, buf.getvalue())


def _quant_plan(plan, train_x, calibration, data, source, progress):
    """The recorded grid of a fine-tuned run, or a calibration on training images."""
    from nalln.loihi.grid import fixed_point_plan

    if train_x is None:
        if data is None:
            raise NallnError("fixed point needs calibration images: pass --data ROOT")
        # a NIR graph has no split: calibrate on another pseudo-random subset of --data
        train_x = load_split(source, data, "train", calibration, progress, seed=1)[0]
    meta = source.loaded.run_meta if source.loaded is not None else None
    return fixed_point_plan(plan, train_x[:calibration], meta, progress)


def _fixed_point_summary(qp, em) -> dict[str, Any]:
    return {
        **{k: v for k, v in qp.report.items() if k != "layers"},
        "input_scale": qp.input_scale,
        "layers": qp.table(),
        "overflows": em.overflowed,
    }


def _run_emulator(plan, x, train_x, calibration, data, source, metrics, progress, world=SINGLE):
    from nalln.inference import pick_device
    from nalln.loihi.emulator import (
        Emulation,
        add_overflow,
        check_overflow,
        cpu_batch,
        emulate_batched,
    )

    t0 = time.perf_counter()
    # every rank calibrates on the same images; rank 0's plan is used by all, to be certain
    qp = broadcast(_quant_plan(plan, train_x, calibration, data, source, progress), world)
    t1 = time.perf_counter()
    device = world.device(pick_device("auto"))
    if world.distributed:
        world_fits(len(x), world, "inputs")
        r = shard_range(len(x), world)
        part = emulate_batched(qp, x[r.start : r.stop], EMULATOR_BATCH, device)
        parts = gather_shards([part], world)
        overflow: dict[str, dict[str, int]] = {}
        for p in parts:
            add_overflow(overflow, p.overflow)
        em = Emulation(concat([p.trace for p in parts]), overflow)
    else:
        em = emulate_batched(qp, x, EMULATOR_BATCH, device, progress=progress)
    t2 = time.perf_counter()
    check_overflow(em, f"the {len(x)} simulated images")
    metrics["fixed_point"] = _fixed_point_summary(qp, em)
    metrics["emulator"] = {"device": str(device), "batch_size": cpu_batch(EMULATOR_BATCH, device)}
    return em.trace, t1 - t0, t2 - t1


def _run_lava(plan, x, fixed_point, train_x, calibration, data, source, metrics, progress):
    from nalln.conversion.lava_backend import run_lava

    if not fixed_point:
        r = run_lava(plan, x, progress=progress)
        metrics["lava"] = {"processes": r.processes, "steps": r.steps}
        return r.trace, r.build_seconds, r.run_seconds
    from nalln.loihi.calibration import weight_noise_sensitivity
    from nalln.loihi.emulator import check_overflow, emulate

    qp = _quant_plan(plan, train_x, calibration, data, source, progress)
    em = emulate(qp, x)
    check_overflow(em, f"the {len(x)} simulated images")
    r = run_lava(qp, x, progress=progress)
    exact = all(torch.equal(em.trace.spikes[k], r.trace.spikes[k]) for k in r.trace.spikes)
    same_out = torch.equal(em.trace.outputs, r.trace.outputs)
    if plan.stages[-1].readout is not None:  # an LI / I membrane: its every value, too
        exact = exact and same_out
    metrics["lava"] = {"processes": r.processes, "steps": r.steps}
    metrics["fixed_point"] = {
        **_fixed_point_summary(qp, em),
        "lava_matches_emulator_bit_exactly": bool(exact),
        "lava_outputs_equal_emulator": bool(same_out),
        "float_top1_agreement_under_weight_noise": {
            f"{b}_bit": v for b, v in weight_noise_sensitivity(plan, x).items()
        },
    }
    return r.trace, r.build_seconds, r.run_seconds


def _default_out(source: Source, tag: str) -> Path:
    if source.loaded is not None and source.loaded.run is not None:
        return source.loaded.run.path / f"simulate-{tag}"
    base = source.path if source.path.is_dir() else source.path.parent
    return base / f"simulate-{tag}"


def report_markdown(m: dict[str, Any]) -> str:
    syn = (
        "SYNTHETIC DATA - pipeline check only, not clinical evidence\n\n" if m["synthetic"] else ""
    )
    sa = m["spike_agreement"]
    lines = [
        f"# Simulation on {m['backend']} ({m['mode']}, SE {m['se_mode']})",
        "",
        syn + f"Reference: {m['reference']}. {m['images']} inputs ({m['split']}). "
        f"All figures measured on this machine in this run.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| top-1 agreement with the reference | {m['top1_agreement']:.4f} |",
        "| spike agreement (all layers) | "
        + ("no spiking layer |" if sa["overall"] is None else f"{sa['overall']:.6f} |"),
        f"| accuracy on the back-end | {_acc(m['accuracy'], m.get('accuracy_ci95'))} |",
        f"| accuracy of the reference | "
        f"{_acc(m['reference_accuracy'], m.get('reference_accuracy_ci95'))} |",
        f"| labels | {m['labels']} |",
        f"| max abs logit difference | {m['max_abs_logit_difference']:.3g} |",
        *_graded_rows(m.get("graded_output")),
        f"| seconds per image (after build) | {m['seconds_per_image']:.4f} |",
        f"| build seconds | {m['build_seconds']:.2f} |",
    ]
    sc = m.get("output_spike_count_difference")
    if sc:
        lines.append(
            f"| output spike counts ({sc['layer']}) reference / back-end | "
            f"{sc['total_reference']} / {sc['total_backend']} (mean abs diff per neuron "
            f"{sc['mean_abs_difference_per_neuron']:.4g}) |"
        )
    st = m.get("static_se")
    if st and "val_accuracy_change" in st:
        lines.append(
            f"| static SE: val accuracy dynamic -> static | {st['val_accuracy_dynamic']:.4f} -> "
            f"{st['val_accuracy_static']:.4f} ({st['val_accuracy_change']:+.4f}) |"
        )
    sem = m.get("semantics")
    if sem:
        rules = sorted(
            {
                f"reset {v['reset']}, {v['spikes']} spikes per step"
                + ("" if v["v_min"] is None else f", floor {v['v_min']:g}")
                for v in sem["neurons"].values()
            }
        )
        lines.append(f"| semantics (dt {sem['dt']:g} s) | {'; '.join(rules) or 'no neurons'} |")
    lines += [
        "",
        "| layer | spike agreement | spikes reference | spikes back-end | mismatches |",
        "|---|---|---|---|---|",
    ]
    for name, d in m["spike_layers"].items():
        lines.append(
            f"| {name} | {sa['per_layer'][name]:.6f} | {d['spikes_reference']} | "
            f"{d['spikes_backend']} | {d['mismatches']} |"
        )
    fp = m.get("fixed_point")
    if fp:
        lines += [
            "",
            "Fixed-point calibration (per layer, on the calibration images):",
            "",
            "| layer | scale | vth | clip factor | threshold tweak | agreement alone | "
            "agreement in the network |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in fp["layers"]:
            own = row.get("spike_agreement_own", row.get("top1_agreement_own"))
            net = row.get("spike_agreement_network")
            lines.append(
                f"| {row['layer']} | {row['scale']:.4g} | {row['vth']} | {row.get('clip_factor')} "
                f"| {row.get('threshold_tweak', '')} | {own:.6f} | "
                f"{'' if net is None else f'{net:.6f}'} |"
            )
        lines.append("")
        if fp.get("grid"):
            lines.append(f"Fixed-point grid: {fp['grid']}.")
        if "lava_matches_emulator_bit_exactly" in fp:
            lines.append(
                f"Lava matches the bit-exact emulator: {fp['lava_matches_emulator_bit_exactly']}"
            )
        else:
            lines.append(
                "Run on the bit-exact emulator (nalln.loihi.emulator; equal to Lava spike for "
                "spike, tests/conversion/test_fixed_point.py)."
            )
    return "\n".join(lines) + "\n"


def _graded_rows(g: dict[str, Any] | None) -> list[str]:
    if not g:
        return []
    rel = g["max_relative_difference_per_step"]
    return [
        f"| graded output ({g['what']}): max abs / relative difference per step | "
        f"{g['max_abs_difference_per_step']:.3g} / {'-' if rel is None else f'{rel:.3g}'} |"
    ]


def _acc(value: float | None, interval: list[float] | None) -> str:
    return "not measured (no labels)" if value is None else f"{value:.4f}{_ci(interval)}"


def _ci(interval: list[float] | None) -> str:
    return "" if not interval else f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})"


def plot_agreement(m: dict[str, Any], path: Path) -> Path:
    return save_figure(agreement_figure(m), path)


def agreement_figure(m: dict[str, Any]) -> Any:
    """Per-layer spike disagreement as bars (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nalln.evaluation.plots import SYNTHETIC_TAG

    per = m["spike_agreement"]["per_layer"]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(per) + 1.5))
    names = list(per)
    vals = [1.0 - per[n] for n in names]
    ax.barh(names, vals, color="tab:blue")
    ax.invert_yaxis()
    top = max(vals, default=0.0)
    ax.set_xlim(0, max(top * 1.15, 0.01))  # never a symmetric axis around 0
    if top == 0:
        ax.text(
            0.5,
            0.5,
            "perfect agreement: every layer's spikes match exactly",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            bbox={"facecolor": "white", "edgecolor": "tab:green"},
        )
    ax.set_xlabel("spike disagreement (1 - agreement), measured")
    ax.set_title(
        f"{m['backend']} ({m['mode']}, SE {m['se_mode']}): top-1 agreement "
        f"{m['top1_agreement']:.3f}"
    )
    if m["synthetic"]:
        fig.text(  # below the axis label (the tight bounding box grows to hold it)
            0.99,
            -0.02,
            SYNTHETIC_TAG,
            ha="right",
            va="top",
            color="crimson",
            fontsize=9,
            weight="bold",
        )
    return fig


def write_report(out: Path, m: dict[str, Any]) -> dict[str, Path]:
    return {
        "report.json": write_json(out / "report.json", m),
        "report.md": write_text(out / "report.md", report_markdown(m)),
        "spike_agreement.png": plot_agreement(m, out / "spike_agreement.png"),
    }
