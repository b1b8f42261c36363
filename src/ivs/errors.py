"""The error hierarchy. Every message says what was wrong and what was expected.

Library code raises these; the command line turns them into one line and a non-zero exit.
"""


class IvsError(Exception):
    """Base of every error ivs raises on purpose."""


class SourceError(IvsError):
    """A source could not be opened or stopped delivering frames it promised."""


class ModelError(IvsError):
    """A model name or package could not be resolved, read, verified or run."""


class PackageError(ModelError):
    """A model package is malformed, tampered with, or signed by an untrusted key."""


class ConfigError(IvsError):
    """A setting is malformed or out of range."""
