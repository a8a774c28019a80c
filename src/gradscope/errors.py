"""One exception family. The CLI catches ``GradscopeError`` once and turns it into one line and exit code 2."""

from __future__ import annotations


class GradscopeError(Exception):
    """Base of every error gradscope raises on purpose; its message is one line a user can act on."""


class ModelLoadError(GradscopeError):
    """The model target could not be found, imported or constructed."""


class ProbeError(GradscopeError):
    """The probe batches could not be built or the model could not run forward/backward on them."""


class ConfigError(GradscopeError):
    """A config file or option value is invalid."""


class OutputError(GradscopeError):
    """A report could not be written."""
