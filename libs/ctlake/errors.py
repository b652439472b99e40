"""All ctlake exceptions in one place.

:class:`CtlakeError` is bad input or a bad environment (the message says what to do);
anything else escaping ctlake is a bug.
"""

from __future__ import annotations


class CtlakeError(Exception):
    """Base class: an error the user can act on. ``code`` is stable and machine-readable."""

    code = "CTLAKE_ERROR"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message if hint is None else f"{message}; {hint}")
        if code is not None:
            self.code = code
        self.hint = hint


class ConfigError(CtlakeError):
    """A configuration file or environment override is invalid."""

    code = "CONFIG_INVALID"


class ServiceError(CtlakeError):
    """A local service could not be started, reached or stopped."""

    code = "SERVICE_ERROR"


class SetupError(CtlakeError):
    """A build or download step (Maven jars, Java, wheels) failed."""

    code = "SETUP_ERROR"
