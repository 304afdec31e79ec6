"""The one exception root: every error metaparticle-pulumi raises on purpose is an `mp.Error`.

The root and `CallError` live in the runtime, so a function calling another pattern inside an
image (where there is no Pulumi) raises and catches the very same classes.
"""

from metaparticle_runtime.errors import CallError, Error

__all__ = ["CallError", "Error", "PatternError", "StackError"]


class PatternError(Error, ValueError):
    """A pattern was declared with arguments it cannot run with."""


class StackError(Error):
    """The Pulumi engine refused or failed an operation; the message carries what the CLI said."""
