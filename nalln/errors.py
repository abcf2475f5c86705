"""One exception type for mistakes a user can fix.

The CLI prints a :class:`NallnError` as a single line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class NallnError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""

    exit_code = 2


class CheckpointError(NallnError):
    """A checkpoint cannot be used (wrong format, tampered, other architecture)."""


class DataError(NallnError):
    """A data set cannot be read as asked."""
