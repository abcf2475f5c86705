"""From a trained NeurALLNet to neuromorphic tool chains, and back to measured fidelity.

* :mod:`export` / :mod:`nir_io` - our NIR 1.0.8 exporter (BN folded, LIF metadata, pooling,
  depthwise convs, static or hybrid SE) and the reader/checker for any tool's NIR graph.
* :mod:`portable` - the portable form that stock nir, snnTorch and Norse read right;
  :mod:`consumers` runs a graph in those tools' stock importers.
* :mod:`plan` - NIR chain -> synapse/[SE]/neuron stages (what Lava and netx are built from);
  :mod:`neurons` (LIF, IF, CubaLIF, Threshold, LI, I -> populations) and :mod:`scale` (Scale
  folded into a synapse) hold the algebra.
* :mod:`inputs` - ``--inputs X.npz`` for graphs other tools wrote, checked before any work.
* :mod:`reference` - the torch model's trace (the plan's float reference is :mod:`nalln.ir`).
* :mod:`norse_backend`, :mod:`lava_backend` (+ :mod:`lava_processes`, :mod:`lava_compat`),
  :mod:`netx` - the back-ends (Loihi fixed point itself is :mod:`nalln.loihi`);
  :mod:`backend` - the back-end type.
* :mod:`convert`, :mod:`simulate`, :mod:`demo` - what the CLI and ``nalln demo`` call.

See docs/conversion.md. Nothing heavy is imported here: Lava is imported only when used.
"""
