"""From a trained NeurALLNet to neuromorphic tool chains, and back to measured fidelity.

* :mod:`export` / :mod:`nir_io` - our NIR 1.0.8 exporter (BN folded, LIF metadata, pooling,
  depthwise convs, static or hybrid SE) and the reader/checker for any tool's NIR graph.
* :mod:`portable` - the portable form that stock nir, snnTorch and Norse read right;
  :mod:`consumers` runs a graph in those tools' stock importers.
* :mod:`plan` - NIR chain -> synapse/[SE]/neuron stages (what Lava and netx are built from).
* :mod:`reference` - float simulations: the plan (NIR semantics) and the torch model.
* :mod:`norse_backend`, :mod:`lava_backend` (+ :mod:`lava_processes`, :mod:`lava_compat`),
  :mod:`netx`, :mod:`fixed_point` - the back-ends, Loihi fixed point and its calibration.
* :mod:`convert`, :mod:`simulate`, :mod:`demo` - what the CLI and ``nalln demo`` call.

See docs/conversion.md. Nothing heavy is imported here: Lava is imported only when used.
"""
