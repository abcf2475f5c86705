"""``nalln convert``: a trained run (or a NIR graph) -> NIR, Norse or Lava artefacts.

``--to nir``: the NIR graph (``graph.nir``) or hybrid segments + SE side-car, checked by reading
it back; with ``portable=True`` (``--portable``) the graph in the form stock ``nir.read``,
snnTorch and Norse read right (:mod:`nalln.conversion.portable`), checked by stock ``nir.read``.
``--to norse``: the same plus proof that Norse loads it (``norse_state.safetensors``, the loaded
modules' parameters). ``--to lava``: the same plus ``lava_plan.json`` (the process
graph Lava runs: processes, shapes, latencies, reset offsets), the calibrated Loihi fixed-point
parameters (``fixed_point.json`` + ``.safetensors``, with ``--fixed-point``) and, for the
NIR-native (static-SE) network, ``network.net`` in netx HDF5, loaded back with
``lava.lib.dl.netx.hdf5.Network`` and run on one image to check its output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from nalln.conversion.export import Exported
from nalln.conversion.inputs import Inputs, load_inputs, steps_for
from nalln.conversion.nir_io import GRAPH_FILE, Artefact, read_artefact, write_artefact
from nalln.conversion.plan import lower
from nalln.conversion.portable import check_portable_request, portable_export, portable_summary
from nalln.conversion.semantics import Choices
from nalln.conversion.sources import (
    PASS_INPUTS,
    Source,
    graph_input_shape,
    load_source,
    load_split,
    prepare,
    run_index,
    training_images,
    with_choices,
)
from nalln.errors import NallnError
from nalln.io import staged_folder, write_bytes, write_json
from nalln.ir.plan import PLAN_INPUT, Plan
from nalln.ir.se_mode import SEMode
from nalln.ir.semantics import SpikeMode, departures
from nalln.loihi.quant_plan import bias_in_current

TARGETS = ("nir", "lava", "norse")
DEFAULT_CALIBRATION = 64


@dataclass
class ConvertResult:
    out: Path
    files: dict[str, Path]
    summary: dict[str, Any]


def round_trip_differences(written: list[nir.NIRGraph], read: list[nir.NIRGraph]) -> list[str]:
    """Node-by-node comparison of what was written with what ``nir.read`` gave back."""
    diffs = []
    for i, (a, b) in enumerate(zip(written, read)):
        if set(a.nodes) != set(b.nodes) or sorted(a.edges) != sorted(map(tuple, b.edges)):
            diffs.append(f"segment {i}: nodes or edges differ")
            continue
        for name, na in a.nodes.items():
            nb = b.nodes[name]
            if type(na) is not type(nb):
                diffs.append(f"{name}: type {type(na).__name__} -> {type(nb).__name__}")
                continue
            for f in dataclasses.fields(na):
                if f.name in ("input_type", "output_type", "metadata"):
                    continue
                va, vb = getattr(na, f.name), getattr(nb, f.name)
                if va is None and vb is None:
                    continue
                if not np.array_equal(np.asarray(va), np.asarray(vb)):
                    diffs.append(f"{name}.{f.name}")
    if len(written) != len(read):
        diffs.append(f"{len(written)} segments written, {len(read)} read")
    return diffs


def _bias_columns(st) -> list[str]:
    """The biases that enter a neuron's current in Lava (a CubaLIF's input bias, a loop bias)."""
    out = []
    if bias_in_current(st):
        out.append(f"{st.synapse.source}: an always-on LIF's spike through a Dense column")
    if st.recurrent is not None and np.any(st.recurrent.bias != 0):
        out.append(
            f"{st.recurrent.source}: an always-on LIF's spike through a RecurrentDense column "
            "(not on the window's first step)"
        )
    return out


def lava_plan_table(plan: Plan) -> list[dict[str, Any]]:
    """The Lava process graph in words: one row per stage."""
    rows = []
    levels = plan.levels()
    for k, st in enumerate(plan.stages):
        syn = st.synapse
        level = levels[st.name]
        rows.append(
            {
                "stage": st.name,
                "synapse": f"lava.proc.{'conv' if syn.kind == 'conv' else 'dense'}."
                f"{'Conv' if syn.kind == 'conv' else 'Dense'}",
                "from_nir_node": syn.source,
                "weight_shape_torch": list(syn.weight.shape),
                "lava_shape_whc": list(reversed(syn.out_image))
                if syn.kind == "conv"
                else list(syn.out_shape),
                "stride": list(syn.stride),
                "padding": list(syn.padding),
                "groups": syn.groups,
                "input": _stage_input(plan, k),
                "se_gate": st.gate.name if st.gate else None,
                "neuron": _lava_neuron(st.neuron)
                if st.readout is None
                else f"nalln LIReadout ({st.readout.nir_type}: lava.proc.lif.LIFReset that never "
                f"fires, dv = {st.readout.decay:g}; its membrane v is the output)",
                "nir_neuron": st.neuron.nir_type if st.neuron else None,
                "decay_du": st.neuron.current_decay if st.neuron else None,
                "decay_dv": st.neuron.decay if st.neuron else None,
                "v_th": st.neuron.v_th if st.neuron else None,
                "first_lava_step": 2 + level,
                "reset_offset": (2 + level) % plan.num_steps,
                "recurrent": None
                if st.recurrent is None
                else f"{st.recurrent.source}: Dense (RecurrentDense) from s_out back into a_in, "
                "one step late, nothing sent on the window's first step",
                "bias_into_current": _bias_columns(st),
            }
        )
        n = st.neuron
        if n is not None and departures(n.reset, n.spikes, n.v_min):
            rows[-1].update(reset=n.reset.value, spikes=n.spikes.value, v_min=n.v_min)
        if not plan.is_chain:  # a graph: what each synapse reads, and how late
            rows[-1]["synapses"] = [
                {
                    "from_nir_node": s.source,
                    "reads": plan.reads(k, s),
                    "aligned_by_steps": level - 1 - levels[plan.reads(k, s)],
                    "nir_delay_steps": None if s.delay is None else s.delay.tolist(),
                }
                for s in st.synapses
            ]
    return rows


def _stage_input(plan: Plan, k: int) -> str:
    src = plan.reads(k, plan.stages[k].synapse)
    if src == PLAN_INPUT:
        return "graded (24-bit)"
    prev = next(st for st in plan.stages if st.name == src).neuron
    if prev is not None and prev.spikes is SpikeMode.MULTI:
        return "graded (24-bit): the previous population's spike counts"
    return "binary spikes"


def _lava_neuron(n) -> str:
    if n is None:
        return "readout (recorded)"
    what = departures(n.reset, n.spikes, n.v_min)
    if not what:
        return "lava.proc.lif.LIFReset"
    return f"nalln ProgrammableLIF (lava.proc.lif.LIFReset that {what})"


def _calibration_images(
    source: Source, data, inputs: Inputs | None, n: int, progress: bool
) -> torch.Tensor:
    """What calibrates the fixed point and checks the netx file: the run's training images,
    the graph's ``--inputs``, or images of ``--data``."""
    if source.loaded is not None:
        index = run_index(source.loaded, data)
        return training_images(source.loaded, index, n, progress)[0]
    if inputs is not None:
        return inputs.x[:n]
    x, _, _ = load_split(source, data, "all", n, progress)
    return x


def _refuse_onchip(source) -> None:
    """A run fine-tuned with on-chip SE has no file form yet: NIR has no node for its gate."""
    from nalln.loihi.grid import recorded_grid

    grid = recorded_grid(source.loaded.run_meta) if source.loaded is not None else None
    if grid is not None and grid.se_mode is SEMode.ONCHIP:
        raise NallnError(
            "this run was fine-tuned with on-chip SE, which convert cannot write yet (no NIR "
            "node or netx layer computes its gate); run it with `nalln simulate RUN --se onchip "
            "--backend lava --fixed-point` or `--backend loihi-emulator`"
        )


def convert(
    source_path: str | Path,
    *,
    to: str,
    out: str | Path,
    se: SEMode | str = SEMode.HYBRID,
    fixed_point: bool = False,
    data: str | Path | None = None,
    calibration: int = DEFAULT_CALIBRATION,
    progress: bool = False,
    portable: bool = False,
    steps: int | None = None,
    inputs: str | Path | None = None,
    choices: Choices | None = None,
) -> ConvertResult:
    """Convert into a staging folder and move the files into ``out`` only when everything
    worked, so a failed conversion leaves nothing half-made behind."""
    if portable:
        check_portable_request(to, se)
    if steps is not None and steps < 1:
        raise NallnError("--steps must be at least 1")
    with staged_folder(out) as stage:
        opts = ConvertOptions(
            to, SEMode.parse(se, SEMode.deployable()), fixed_point, data, calibration, progress
        )
        opts = dataclasses.replace(
            opts, portable=portable, steps=steps, inputs=inputs, choices=choices
        )
        res = _convert_into(source_path, stage.path, opts)
        moved = stage.publish(path.name for path in res.files.values())
        files = {name: moved[path.name] for name, path in res.files.items()}
        summary = stage.relocate(res.summary)
        files["convert.json"] = write_json(stage.final / "convert.json", summary)
        return ConvertResult(stage.final, files, summary)


@dataclass(frozen=True)
class ConvertOptions:
    """What :func:`convert` was asked for (checked there), handed to the staged conversion."""

    to: str
    se: SEMode = SEMode.HYBRID
    fixed_point: bool = False
    data: str | Path | None = None
    calibration: int = DEFAULT_CALIBRATION
    progress: bool = False
    portable: bool = False
    steps: int | None = None
    inputs: str | Path | None = None
    choices: Choices | None = None  # semantics flags (recorded into the written graph)


def _convert_into(source_path: str | Path, out: Path, opts: ConvertOptions) -> ConvertResult:
    to, se, fixed_point, data = opts.to, opts.se, opts.fixed_point, opts.data
    calibration, progress, portable, steps = (
        opts.calibration,
        opts.progress,
        opts.portable,
        opts.steps,
    )
    inputs = opts.inputs
    if to not in TARGETS:
        raise NallnError(f"unknown target {to!r}; use one of {', '.join(TARGETS)}")
    if fixed_point and to != "lava":
        raise NallnError("--fixed-point applies to --to lava (Loihi's fixed point)")
    source = with_choices(load_source(source_path), opts.choices)
    _refuse_onchip(source)
    given = None
    if inputs is not None:
        if source.loaded is not None:
            raise NallnError("--inputs is for NIR graphs; a run calibrates on its own split")
        if data is not None:
            raise NallnError("give --inputs X.npz or --data ROOT, not both")
        given = load_inputs(inputs, graph_input_shape(source))
    steps = steps_for(given, steps)
    if source.loaded is None and to != "nir":
        lower(source.artefact, steps)  # T known, graph lowerable: fail before writing
    if source.loaded is None and fixed_point and given is None and data is None:
        raise NallnError(
            f"--fixed-point calibrates Loihi's fixed point on example inputs: {PASS_INPUTS}"
        )
    out = Path(out)
    summary: dict[str, Any] = {
        "source": str(source.path),
        "target": to,
        "synthetic": source.synthetic,
    }
    exported: Exported | None = None
    if source.loaded is not None:
        prepared = prepare(source.loaded, se, data, progress)
        exported = portable_export(prepared.exported) if portable else prepared.exported
        if prepared.static_se:
            summary["static_se"] = prepared.static_se
        files = write_artefact(out, exported)
        artefact = read_artefact(out)
        diffs = round_trip_differences(exported.segments, artefact.segments)
        if diffs:
            raise NallnError(f"NIR round trip changed the graph: {', '.join(diffs[:5])}")
        summary["nir_round_trip"] = "identical (every node parameter compared after nir.read)"
    else:
        artefact = source.artefact
        exported = Exported(artefact.segments, artefact.gates, artefact.se_mode, artefact.info)
        if portable:
            exported = portable_export(exported)
        files = write_artefact(out, exported)
        if portable:
            artefact = read_artefact(out)
        summary["nir_round_trip"] = "foreign graph re-written after checking"
    summary["se_mode"] = artefact.se_mode
    if steps is not None:
        summary["num_steps"] = steps
    summary["segments"] = len(artefact.segments)
    if portable:
        summary["portable"] = portable_summary(exported, files[GRAPH_FILE])
    if to == "norse":
        files.update(_norse_files(artefact, out, summary, steps))
    elif to == "lava":
        files.update(
            _lava_files(
                source,
                artefact,
                out,
                LavaRequest(fixed_point, data, given, calibration, steps),
                progress,
                summary,
            )
        )
    summary["files"] = {k: str(v) for k, v in files.items()}
    files["convert.json"] = write_json(out / "convert.json", summary)
    return ConvertResult(out, files, summary)


def _norse_files(
    artefact: Artefact, out: Path, summary: dict, steps: int | None
) -> dict[str, Path]:
    from safetensors.torch import save as st_save

    from nalln.conversion.norse_backend import NorseNetwork

    net = NorseNetwork(artefact)
    plan = lower(artefact, steps)
    probe = net.run(torch.zeros(1, *plan.input_shape), 1)
    summary["norse"] = {
        "loader": "nirtorch.load(graph, nalln node map delegating to norse.torch.utils."
        "import_nir._import_norse_module)",
        "lif_populations": len(net.lifs),
        "output_size": int(probe.outputs.shape[-1]),
        "load_with": "nalln.conversion.norse_backend.NorseNetwork(nalln.conversion.nir_io."
        f"read_artefact('{out}'))",
    }
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    return {"norse_state.safetensors": write_bytes(out / "norse_state.safetensors", st_save(state))}


@dataclass(frozen=True)
class LavaRequest:
    """What ``--to lava`` was asked for and may calibrate on."""

    fixed_point: bool
    data: str | Path | None
    inputs: Inputs | None
    calibration: int
    steps: int | None

    @property
    def has_examples(self) -> bool:
        return self.inputs is not None or self.data is not None


def _netx_grid(plan, qp, x, progress, summary):
    """The fixed-point plan netx can hold: ``qp`` itself, unless a loop Dense needs a weight
    exponent (netx's ``dense_rec`` derives one exponent <= 0 from 8-bit weights); then the plan
    is calibrated again with exponent 0, and both agreements are reported."""
    from nalln.conversion.netx import semantics_refusal
    from nalln.loihi.calibration import calibrate

    if not any(q.recurrent_exp for q in qp.stages) or any(q.drives for q in qp.stages):
        return qp  # nothing to change, or netx cannot hold it anyway (netx_refusal)
    if semantics_refusal(qp):
        return qp
    nq = calibrate(plan, x, progress, recurrent_exp=False)

    def agreement(p):
        rows = [r for r in p.report["layers"] if "spike_agreement_network" in r]
        return {r["layer"]: r["spike_agreement_network"] for r in rows}

    summary["netx_grid"] = {
        "why": "netx's dense_rec holds 8-bit loop weights with exponent 0 only, so network.net "
        "is calibrated without the loop weight exponent that fixed_point.json and Lava use",
        "spike_agreement_calibration_netx": agreement(nq),
        "spike_agreement_calibration_with_exponent": agreement(qp),
    }
    return nq


def _lava_files(source, artefact, out, req: LavaRequest, progress, summary):
    from nalln.conversion.lava_backend import lava_network
    from nalln.loihi.grid import fixed_point_plan
    from nalln.loihi.quant_plan import save_quant_plan

    fixed_point, data, calibration = req.fixed_point, req.data, req.calibration
    plan = lower(artefact, req.steps)
    lava_network(plan)  # what nalln's Lava graph cannot run is refused here, by node
    files = {
        "lava_plan.json": write_json(
            out / "lava_plan.json",
            {
                "num_steps": plan.num_steps,
                "input_shape_chw": list(plan.input_shape),
                "pipelining": "one image every T steps; LIFReset(reset_interval=T, reset_offset="
                "(2 + k) % T) clears each layer at the start of its window",
                "stages": lava_plan_table(plan),
            },
        )
    }
    native = all(st.gate is None for st in plan.stages)
    if not (fixed_point or native):
        summary["netx"] = "not written: netx cannot hold the hybrid SE side-car (use --se static)"
        return files
    if source.loaded is None and not req.has_examples:
        summary["netx"] = (
            "not written: netx holds Loihi fixed point, calibrated and checked on example "
            "inputs; pass --inputs X.npz (or --data ROOT for an image graph)"
        )
        return files
    x = _calibration_images(source, data, req.inputs, calibration, progress)
    meta = source.loaded.run_meta if source.loaded is not None else None
    qp = fixed_point_plan(plan, x, meta, progress)  # the recorded grid, or calibration
    summary["fixed_point"] = {k: v for k, v in qp.report.items() if k != "layers"}
    if fixed_point:
        files.update(save_quant_plan(qp, out))
    if native:
        from nalln.conversion.netx import check_netx, netx_refusal, write_netx

        nq = _netx_grid(plan, qp, x, progress, summary)
        reason = netx_refusal(nq)
        if reason:
            summary.pop("netx_grid", None)
            summary["netx"] = f"not written: {reason}"
            return files
        path = write_netx(nq, out / "network.net")
        files["network.net"] = path
        summary["netx"] = check_netx(path, nq, x)
    else:
        summary["netx"] = "not written: netx cannot hold the hybrid SE side-car (use --se static)"
    return files
