"""Our Lava processes and process models (in ``processes``).

They live alone in this package on purpose: when Lava's compiler looks for the models of a
process, it executes every module in the process's folder; keeping the folder to one module keeps
that cheap and side-effect free. Import nothing here.
"""
