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


class DicomError(CtlakeError):
    """A DICOM file or byte string cannot be read, parsed or decoded.

    ``code`` says why, for ``bronze.quarantine.error_code``: NOT_DICOM, TRUNCATED,
    MISSING_PIXEL_DATA, UNSUPPORTED_TRANSFER_SYNTAX, PIXEL_DECODE_FAILED, BAD_VALUE, ...
    """

    code = "DICOM_INVALID"


class DeidentificationRefused(CtlakeError):
    """An instance that must not enter the lake: burned-in annotation, an uncleared secondary
    capture / screen save, or identifying values that remain after de-identification.

    ``code``: BURNED_IN_ANNOTATION, SECONDARY_CAPTURE, PHI_REMAINS, NOT_DEIDENTIFIED, ...
    """

    code = "DEID_REFUSED"
