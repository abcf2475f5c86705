"""What a hardware-target file holds: small validated dataclasses, one per concept.

A target is a chip (or a process node) described by named constants. Every constant carries its
value, its unit, where it comes from and whether the source states it (``published``), it was
computed from published figures (``derived``) or it is a modelling choice (``assumption``).
Values are converted to one canonical unit per quantity on load, so the energy models never
see a nanojoule where they expect a picojoule.

The TOML form (one file per target)::

    schema = 1
    id = "loihi"
    name = "Intel Loihi (14 nm)"
    kind = "neuromorphic"            # asic | neuromorphic | gpu | cpu
    description = "..."

    [constants.e_synop]
    value = 23.6
    unit = "pJ"
    status = "published"
    source = "Davies et al., IEEE Micro 38(1), 2018, Table 2"
    note = "minimum energy per synaptic spike operation, pre-silicon"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nalln.errors import NallnError

SCHEMA_VERSION = 1
KINDS = ("asic", "neuromorphic", "gpu", "cpu")
STATUSES = ("published", "derived", "assumption")

# Quantity -> {accepted unit: factor to the canonical (first) unit}.
UNITS: dict[str, dict[str, float]] = {
    "energy": {"pJ": 1.0, "fJ": 1e-3, "nJ": 1e3, "uJ": 1e6, "µJ": 1e6},
    "energy_per_bit": {"pJ/bit": 1.0, "fJ/bit": 1e-3},
    "energy_per_flop": {"pJ/FLOP": 1.0},
    "energy_per_op": {"pJ/op": 1.0},
    "power": {"W": 1.0, "mW": 1e-3},
    "flops": {"TFLOP/s": 1.0, "GFLOP/s": 1e-3},
    "ops": {"TOP/s": 1.0, "GOP/s": 1e-3},
    "bits": {"bit": 1.0, "byte": 8.0, "KiB": 8192.0, "MiB": 8388608.0},
    "count": {"count": 1.0},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9},
}


@dataclass(frozen=True)
class ConstantSpec:
    """A constant the tool knows: its quantity and what it means."""

    quantity: str
    meaning: str

    @property
    def unit(self) -> str:
        return next(iter(UNITS[self.quantity]))


KNOWN_CONSTANTS: dict[str, ConstantSpec] = {
    # arithmetic at the target's precision (ASIC process figures)
    "e_add": ConstantSpec("energy", "one addition (an accumulate, AC) at the target's precision"),
    "e_mul": ConstantSpec("energy", "one multiplication at the target's precision"),
    "e_mac": ConstantSpec("energy", "one multiply-accumulate (multiplication + addition)"),
    "e_acc": ConstantSpec(
        "energy", "one addition into an accumulator_bits-wide register (membrane, accumulator)"
    ),
    # memory (Horowitz SRAM figures and the Lemaire et al. linear fit)
    "e_sram_8kb": ConstantSpec("energy", "64-bit read from an 8 KB SRAM"),
    "e_sram_32kb": ConstantSpec("energy", "64-bit read from a 32 KB SRAM"),
    "e_sram_1mb": ConstantSpec("energy", "64-bit read from a 1 MB SRAM"),
    "e_dram": ConstantSpec("energy", "64-bit DRAM access"),
    "mem_pj_per_bit": ConstantSpec(
        "energy_per_bit", "slope of the SRAM access energy against memory size N*b (per bit)"
    ),
    "mem_pj_offset": ConstantSpec("energy", "intercept of the SRAM access energy fit"),
    "weight_bits": ConstantSpec("bits", "bits per stored weight"),
    "activation_bits": ConstantSpec("bits", "bits per stored activation (ANN) or input value"),
    "accumulator_bits": ConstantSpec("bits", "bits per membrane potential, bias or accumulator"),
    # event-driven neuromorphic chips
    "e_synop": ConstantSpec("energy", "one synaptic event (weight read + accumulate)"),
    "e_synaptic_update": ConstantSpec("energy", "one synaptic weight update (learning)"),
    "e_neuron_update": ConstantSpec("energy", "one neuron update per time step (active)"),
    "e_neuron_update_inactive": ConstantSpec("energy", "one neuron update per step (inactive)"),
    "e_spike": ConstantSpec("energy", "sending one spike within a tile / core"),
    "e_hop_ew": ConstantSpec("energy", "one east-west hop of a spike message between tiles"),
    "e_hop_ns": ConstantSpec("energy", "one north-south hop of a spike message between tiles"),
    # costs beyond the per-event figures (chip_costs.py)
    "p_static": ConstantSpec("power", "static (idle) power of the chip or board while it runs"),
    "t_step": ConstantSpec("time", "wall-clock time of one algorithmic time step"),
    "e_io_bit": ConstantSpec(
        "energy_per_bit", "moving one bit between the host and a chip (low end of its range)"
    ),
    "e_io_bit_high": ConstantSpec(
        "energy_per_bit", "moving one bit between the host and a chip (high end of its range)"
    ),
    "global_buffer": ConstantSpec(
        "bits", "on-chip global buffer of a reuse-aware ANN accelerator (dataflow.py)"
    ),
    # structure (for `nalln hardware fit`)
    "cores_per_chip": ConstantSpec("count", "neuromorphic cores per chip"),
    "neurons_per_core": ConstantSpec("count", "neurons (compartments) per core"),
    "synapses_per_core": ConstantSpec("count", "synapses a core can store"),
    "fan_in_per_core": ConstantSpec("count", "distinct input axons a core can receive"),
    "fan_out_per_core": ConstantSpec("count", "output axons a core can send to"),
    "synaptic_memory_per_core": ConstantSpec("bits", "synaptic memory per core"),
    "neurons_per_chip": ConstantSpec("count", "neurons per chip"),
    "synapses_per_chip": ConstantSpec("count", "synapses per chip"),
    # GPUs and CPUs (dense execution)
    "tdp": ConstantSpec("power", "thermal design power (board power)"),
    "peak_fp32": ConstantSpec("flops", "peak dense FP32 throughput"),
    "peak_fp16": ConstantSpec("flops", "peak dense FP16 (tensor core) throughput"),
    "peak_int8": ConstantSpec("ops", "peak dense INT8 throughput"),
    "pj_per_flop_fp32": ConstantSpec("energy_per_flop", "energy per FP32 FLOP (TDP / peak)"),
    "pj_per_flop_fp16": ConstantSpec("energy_per_flop", "energy per FP16 FLOP (TDP / peak)"),
    "pj_per_op_int8": ConstantSpec("energy_per_op", "energy per INT8 operation (TDP / peak)"),
}

_TOP_KEYS = ("schema", "id", "name", "kind", "description", "energy_proxy", "constants", "notes")
_CONSTANT_FIELDS = ("value", "unit", "status", "source", "note")


class TargetFileError(NallnError):
    """A target file cannot be used; the message names the file, the line and the key."""


def locate_line(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line where a dotted key is written in ``text`` (best effort, no TOML lib
    reports key positions): ``("constants", "e_synop", "unit")`` finds the ``unit =`` line
    inside ``[constants.e_synop]``."""
    lines = text.splitlines()
    table: tuple[str, ...] = ()
    header_line: dict[tuple[str, ...], int] = {}
    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("[") and not line.startswith("[["):
            table = tuple(p.strip().strip('"') for p in line.strip("[] ").split("."))
            header_line.setdefault(table, i)
            if table == path:
                return i
            continue
        if "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0].strip().strip('"')
            full = (*table, *key.split("."))
            full = tuple(p.strip().strip('"') for p in full)
            if full == path:
                return i
    # a missing key: point at its table's header
    for n in range(len(path) - 1, 0, -1):
        if path[:n] in header_line:
            return header_line[path[:n]]
    return None


@dataclass(frozen=True)
class Constant:
    """One figure of a target, in its canonical unit, with its provenance."""

    key: str
    value: float
    unit: str
    status: str
    source: str
    note: str = ""
    given: str = ""  # the value as written, when it was converted (e.g. "13.3 nJ")

    def __post_init__(self) -> None:
        spec = KNOWN_CONSTANTS.get(self.key)
        if spec is None:
            raise ValueError(
                f"unknown constant {self.key!r}; known constants: {', '.join(KNOWN_CONSTANTS)}"
            )
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"value must be a finite number >= 0, got {self.value!r}")
        if self.unit != spec.unit:
            raise ValueError(f"unit must be {spec.unit} after conversion, got {self.unit!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if not self.source.strip():
            raise ValueError("source is empty; every constant needs a citation")

    @property
    def label(self) -> str:
        return f"{self.value:g} {self.unit} ({self.status}; {self.source})"


@dataclass(frozen=True)
class Target:
    """A hardware target: identity, kind and constants (read-only)."""

    id: str
    name: str
    kind: str
    description: str
    constants: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    energy_proxy: str | None = None
    notes: tuple[str, ...] = ()
    path: Path | None = None
    builtin: bool = False

    def __post_init__(self) -> None:
        if not self.id or not all(c.isalnum() or c in "-_." for c in self.id):
            raise ValueError(f"id must be letters, digits, '-', '_' or '.', got {self.id!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.constants, MappingProxyType):
            object.__setattr__(self, "constants", MappingProxyType(dict(self.constants)))

    def has(self, *keys: str) -> bool:
        return all(k in self.constants for k in keys)

    def missing(self, *keys: str) -> list[str]:
        return [k for k in keys if k not in self.constants]

    def value(self, key: str) -> float:
        try:
            return self.constants[key].value
        except KeyError:
            raise NallnError(
                f"target {self.id} has no constant {key!r}; add it to {self.path or 'its file'}"
            ) from None


def _convert(quantity: str, value: float, unit: str) -> float:
    return value * UNITS[quantity][unit]


def parse_target(data: dict[str, Any], text: str, path: Path, builtin: bool = False) -> Target:
    """Validate the parsed TOML of one target file; errors name the file, line and key."""

    def fail(keys: tuple[str, ...], msg: str) -> TargetFileError:
        line = locate_line(text, keys)
        where = f"{path}" + (f": line {line}" if line else "")
        return TargetFileError(f"{where}: {'.'.join(keys)}: {msg}")

    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise fail((unknown[0],), f"unknown key; allowed top-level keys: {', '.join(_TOP_KEYS)}")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise fail(("schema",), f"unsupported schema {schema!r}; this nalln reads schema 1")
    for key in ("id", "name", "kind"):
        if key not in data:
            raise fail((key,), "missing (every target file needs id, name and kind)")
        if not isinstance(data[key], str):
            raise fail((key,), f"must be a string, got {type(data[key]).__name__}")
    raw_consts = data.get("constants", {})
    if not isinstance(raw_consts, dict):
        raise fail(("constants",), "must be a table of [constants.NAME] tables")
    constants: dict[str, Constant] = {}
    for key, entry in raw_consts.items():
        where = ("constants", key)
        spec = KNOWN_CONSTANTS.get(key)
        if spec is None:
            raise fail(where, f"unknown constant; known constants: {', '.join(KNOWN_CONSTANTS)}")
        if not isinstance(entry, dict):
            raise fail(where, "must be a table with value, unit, status and source")
        extra = [f for f in entry if f not in _CONSTANT_FIELDS]
        if extra:
            raise fail((*where, extra[0]), f"unknown field; allowed: {', '.join(_CONSTANT_FIELDS)}")
        for f in ("value", "unit", "status", "source"):
            if f not in entry:
                raise fail((*where, f), "missing (each constant needs value, unit, status, source)")
        value, unit = entry["value"], entry["unit"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail((*where, "value"), f"must be a number, got {value!r}")
        for f in ("unit", "status", "source", "note"):
            if f in entry and not isinstance(entry[f], str):
                raise fail((*where, f), f"must be a string, got {type(entry[f]).__name__}")
        if unit not in UNITS[spec.quantity]:
            raise fail(
                (*where, "unit"),
                f"{unit!r} is not a unit of {spec.quantity.replace('_', ' ')}; use one of "
                f"{', '.join(UNITS[spec.quantity])}",
            )
        canonical = _convert(spec.quantity, float(value), unit)
        try:
            constants[key] = Constant(
                key=key,
                value=canonical,
                unit=spec.unit,
                status=str(entry["status"]),
                source=str(entry["source"]),
                note=str(entry.get("note", "")),
                given="" if unit == spec.unit else f"{value:g} {unit}",
            )
        except ValueError as exc:
            field_name = (
                "status" if "status" in str(exc) else "source" if "source" in str(exc) else "value"
            )
            raise fail((*where, field_name), str(exc)) from None
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise fail(("notes",), "must be a list of strings")
    proxy = data.get("energy_proxy")
    if proxy is not None and not isinstance(proxy, str):
        raise fail(("energy_proxy",), "must be the id of another target")
    try:
        return Target(
            id=data["id"],
            name=data["name"],
            kind=data["kind"],
            description=str(data.get("description", "")),
            constants=MappingProxyType(constants),
            energy_proxy=proxy,
            notes=tuple(notes),
            path=path,
            builtin=builtin,
        )
    except ValueError as exc:
        key = "kind" if "kind" in str(exc) else "id"
        raise fail((key,), str(exc)) from None
