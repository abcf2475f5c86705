"""Fixtures of the fault tests (helpers live in helpers.py)."""
