"""The one exception root: every error metaparticle-pulumi raises on purpose is an `mp.Error`."""


class Error(Exception):
    """Root of the errors metaparticle-pulumi raises; its message is meant for the user."""


class PatternError(Error, ValueError):
    """A pattern was declared with arguments it cannot run with."""


class StackError(Error):
    """The Pulumi engine refused or failed an operation; the message carries what the CLI said."""
