"""Analyses of a trained (or freshly built) model: profiling, and more to come."""
