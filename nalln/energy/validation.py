"""Check the chip model against silicon: Blouw et al. 2019's keyword spotter on Loihi.

Blouw, Choo, Hunsberger, Eliasmith, "Benchmarking keyword spotting efficiency on neuromorphic
hardware", NICE 2019, arXiv:1812.01739, Table 1: a 390-256-256-29 network measured on a Loihi
Wolf Mountain board at 0.110 W running, 0.029 W idle, 296 inferences/s, 0.27 mJ of DYNAMIC
energy per inference (running minus idle). Code and logs: github.com/abr/power_benchmarks.

What the paper does not state is taken as a stated range:

* time steps per inference: 10, the presentation time of the nengo-loihi keyword-spotting
  example (docs/examples/keyword-spotting.ipynb: ``p_time=10`` at ``dt = 0.001``);
* firing rates: 0.02-0.2 spikes per neuron (and per input channel) per step, uniform over the
  layers (an ASSUMPTION: no rate is published).

The network is priced by the same code as the report (``estimate(..., "ops+memory")`` on the
``loihi`` target: synaptic events, neuron updates, spikes). The ratio estimate / measurement is
the uncertainty the report states for chip figures. Run ``python -m nalln.energy.validation``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from nalln.energy.cost_models import estimate
from nalln.energy.counting import NetworkCounts, Population, SynapticLayer
from nalln.energy.modes import CostModel
from nalln.hardware_targets.registry import TargetRegistry, load_registry

SOURCE = (
    "Blouw, Choo, Hunsberger, Eliasmith, NICE 2019, arXiv:1812.01739, Table 1 "
    "(github.com/abr/power_benchmarks)"
)
MEASURED_DYNAMIC_J = 0.00027  # Table 1: Joules/Inf (dynamic) on Loihi
MEASURED_RUNNING_W = 0.110
MEASURED_IDLE_W = 0.029
MEASURED_INF_PER_S = 296.0
X86_OVERHEAD_W = 0.070  # Sec. "Data I/O": idle after a first run is ~70 mW above idle at boot
STEPS = 10  # nengo-loihi keyword-spotting example, p_time = 10 at dt = 1 ms (assumption)
RATES = (0.02, 0.2)  # spikes per neuron per step (assumption: no rate published)
SIZES = (390, 256, 256, 29)


@dataclass(frozen=True)
class ValidationRow:
    """Our estimate of the keyword spotter at one assumed firing rate, against the measurement."""

    rate: float
    estimate_j: float
    measured_j: float
    measured_without_x86_j: float

    @property
    def ratio(self) -> float:
        return self.estimate_j / self.measured_j

    @property
    def ratio_without_x86(self) -> float:
        return self.estimate_j / self.measured_without_x86_j


def kws_counts(rate: float, steps: int = STEPS) -> NetworkCounts:
    """Per-inference counts of the 390-256-256-29 spotter at a uniform firing ``rate``."""
    layers, pops = [], []
    spikes_in = SIZES[0] * steps * rate  # input channels spike at the same rate
    for i, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        last = i == len(SIZES) - 2
        events = spikes_in * n_out
        layers.append(
            SynapticLayer(
                name=f"layer{i + 1}",
                kind="linear",
                role="head" if last else "block",
                in_shape=(n_in,),
                out_shape=(n_out,),
                weights=n_in * n_out,
                nonzero_weights=n_in * n_out,
                kernel=(1,),
                stride=(1,),
                groups=1,
                num_steps=steps,
                spike_input=True,
                population=None if last else f"lif{i + 1}",
                ac=np.full(steps, events / steps),
                dense=np.full(steps, float(n_in * n_out)),
                in_nonzero=np.full(steps, spikes_in / steps),
                calls_binary=1,
            )
        )
        if not last:
            out_spikes = n_out * steps * rate
            pops.append(
                Population(
                    f"lif{i + 1}",
                    "lif",
                    (n_out,),
                    steps,
                    f"layer{i + 1}",
                    np.full(steps, out_spikes / steps),
                )
            )
            spikes_in = out_spikes
    return NetworkCounts("snn", steps, 1, layers, pops, [])


def validate(registry: TargetRegistry | None = None) -> list[ValidationRow]:
    """Estimate / measurement at both ends of the assumed firing-rate range."""
    reg = registry or load_registry()
    loihi, host = reg.get("loihi"), reg.get("asic45-int8")
    rows = []
    per_inf = 1.0 / MEASURED_INF_PER_S
    for rate in RATES:
        est = estimate(kws_counts(rate), loihi, CostModel.OPS_MEMORY, reg, host=host)
        rows.append(
            ValidationRow(
                rate=rate,
                estimate_j=est.total_pj * 1e-12,
                measured_j=MEASURED_DYNAMIC_J,
                measured_without_x86_j=MEASURED_DYNAMIC_J - X86_OVERHEAD_W * per_inf,
            )
        )
    return rows


def validation_note(registry: TargetRegistry | None = None) -> str:
    """One sentence for the report: the estimate / measurement range of the Loihi model."""
    rows = validate(registry)
    lo, hi = min(r.ratio for r in rows), max(r.ratio for r in rows)
    lo2, hi2 = min(r.ratio_without_x86 for r in rows), max(r.ratio_without_x86 for r in rows)
    return (
        f"Against silicon: the same Loihi model applied to Blouw et al. 2019's keyword spotter "
        f"(390-256-256-29, measured {MEASURED_DYNAMIC_J * 1e3:.2g} mJ dynamic per inference) "
        f"gives estimate / measurement = {lo:.2g}-{hi:.2g} ({lo2:.2g}-{hi2:.2g} without the "
        f"~70 mW x86 overhead) over assumed rates {RATES[0]}-{RATES[1]}: read the chip figures "
        f"as lower bounds, possibly {1 / hi:.0f}-{1 / lo:.0f}x too low "
        "(docs/energy.md; python -m nalln.energy.validation)."
    )


def main() -> None:
    print(f"Loihi keyword spotter, {SOURCE}; T = {STEPS} steps (assumed)")
    print(validation_note())
    print("rate  estimate(uJ)  measured dynamic(uJ)  est/meas  est/(meas - 70 mW x86)")
    for r in validate():
        print(
            f"{r.rate:<5g} {r.estimate_j * 1e6:12.3g} {r.measured_j * 1e6:21.3g} "
            f"{r.ratio:9.3g} {r.ratio_without_x86:12.3g}"
        )


if __name__ == "__main__":
    main()
