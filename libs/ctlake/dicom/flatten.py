r"""Flatten a DICOM header into (a) the DICOM JSON model and (b) typed columns; derived views.

Pure (pydicom, no Spark). Nothing here raises for bad values in the header: problems are
returned as text in a ``warnings`` list and the value becomes None (typed columns) or is kept
as raw bytes with VR UN (JSON model). Only a caller error (an unknown keyword, a sequence asked
for as a column, summaries of mixed series) raises :class:`~ctlake.errors.DicomError`.

(a) :func:`header_json` — PS3.18 F.2 DICOM JSON model of the data set without its bulk data:
    Pixel Data, Float / Double Float Pixel Data, the extended offset table, overlay (60xx,3000),
    curve and audio data (50xx,eeee), Waveform Data, Spectroscopy Data and Encapsulated Document
    are removed (at every nesting level); any other binary value (OB, OD, OF, OL, OV, OW, UN,
    ambiguous ``OB or OW`` ...) longer than ``bulk_threshold_bytes`` becomes
    ``{"vr": VR, "BulkDataURI": "ctlake:omitted?bytes=N"}``. Group lengths (gggg,0000) are dropped.
    A value pydicom cannot convert (an IS of '1A', an unknown VR) is kept as
    ``{"vr": "UN", "InlineBinary": <its bytes>}``; non-finite numbers become null. The result
    always passes ``json.dumps(..., allow_nan=False)``.

(b) :func:`flatten` — python values by keyword, typed by the data dictionary VR
    (:data:`VR_LOGICAL_TYPE`) and VM (VM > 1 → a list):

    ====================================  ========  ===============================================
    VR                                    kind      python value
    ====================================  ========  ===============================================
    AE AS CS LO LT SH ST UC UI UR UT      string    str, trailing spaces/NULs removed ('' → None)
    AT                                    string    'GGGGEEEE' (upper-case hex)
    TM                                    string    'HH:MM:SS.ffffff' (missing parts → 0)
    DT                                    string    ISO 8601 'YYYY-MM-DDTHH:MM:SS.ffffff[+HH:MM]'
                                                    (missing parts → their minimum; a leap
                                                    second 60 → 59)
    DA                                    date      datetime.date (also the ACR-NEMA 'YYYY.MM.DD')
    DS FL FD                              double    float (finite only)
    IS SS US SL UL SV UV                  long      int (signed 64-bit range only)
    US or SS                              long      int
    PN                                    pn        dict of :data:`PN_FIELDS`: the alphabetic group
                                                    split at '^' into family, given, middle, prefix,
                                                    suffix, plus the alphabetic, ideographic and
                                                    phonetic groups as whole strings
    OB OD OF OL OV OW UN, OB or OW,       binary    bytes
    US or OW, US or SS or OW
    SQ                                    —         not a column (only in the JSON model)
    ====================================  ========  ===============================================

    A single-valued column given several values keeps a string joined by '\\' and is None
    (with a warning) for other kinds.

pydicom's value warnings are silenced while flattening (``warnings.catch_warnings``: process-wide
state, so one thread at a time per process); the problems are reported in ``warnings`` instead.

Derived views: :func:`instance_summary` (the key columns of ``bronze.dicom_instances``,
:data:`INSTANCE_SUMMARY_TYPES`), :func:`series_summary`, :func:`study_summary`,
:func:`patient_summary`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import re
import warnings as _warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydicom import datadict
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from ctlake.dicom.reader import frame_geometry, is_enhanced, transfer_syntax_of
from ctlake.errors import DicomError

__all__ = [
    "BULK_DATA_TAGS",
    "DEFAULT_BULK_THRESHOLD_BYTES",
    "INSTANCE_SUMMARY_TYPES",
    "OMITTED_BULK_DATA_URI",
    "PN_FIELDS",
    "VR_LOGICAL_TYPE",
    "FlatRow",
    "LogicalType",
    "column_types",
    "flatten",
    "header_json",
    "header_json_text",
    "instance_summary",
    "is_bulk_data_tag",
    "patient_summary",
    "series_summary",
    "study_summary",
]

Kind = Literal["string", "date", "double", "long", "pn", "binary"]

#: Data dictionary VR → logical kind. SQ (and the item tags' 'NONE') are not columns.
VR_LOGICAL_TYPE: dict[str, Kind] = {
    "AE": "string",
    "AS": "string",
    "AT": "string",
    "CS": "string",
    "DA": "date",
    "DS": "double",
    "DT": "string",
    "FD": "double",
    "FL": "double",
    "IS": "long",
    "LO": "string",
    "LT": "string",
    "OB": "binary",
    "OD": "binary",
    "OF": "binary",
    "OL": "binary",
    "OV": "binary",
    "OW": "binary",
    "PN": "pn",
    "SH": "string",
    "SL": "long",
    "SS": "long",
    "ST": "string",
    "SV": "long",
    "TM": "string",
    "UC": "string",
    "UI": "string",
    "UL": "long",
    "UN": "binary",
    "UR": "string",
    "US": "long",
    "UT": "string",
    "UV": "long",
    "US or SS": "long",
    "OB or OW": "binary",
    "US or OW": "binary",
    "US or SS or OW": "binary",
}
#: Fields of a PN value (Spark: a struct of strings, in this order).
PN_FIELDS = ("family", "given", "middle", "prefix", "suffix", "alphabetic", "ideographic", "phonetic")
DEFAULT_BULK_THRESHOLD_BYTES = 1024
OMITTED_BULK_DATA_URI = "ctlake:omitted"

_SPARK_DDL = {"string": "string", "date": "date", "double": "double", "long": "bigint", "binary": "binary"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
_TEXT_KEEP_LEADING = frozenset({"LT", "ST", "UT"})
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class LogicalType:
    """A column's logical type: ``kind`` (see :data:`VR_LOGICAL_TYPE`) and whether it is a
    list (data dictionary VM other than '1')."""

    kind: Kind
    array: bool = False

    @property
    def spark_ddl(self) -> str:
        """The Spark SQL DDL type, e.g. ``array<double>`` or the PN struct."""
        if self.kind == "pn":
            base = "struct<" + ",".join(f"{f}:string" for f in PN_FIELDS) + ">"
        else:
            base = _SPARK_DDL[self.kind]
        return f"array<{base}>" if self.array else base


class FlatRow(dict[str, Any]):
    """What :func:`flatten` returns: ``{keyword: value}`` plus ``.warnings``, one line per value
    that was present but could not be used (it is None in the row)."""

    def __init__(self, values: Mapping[str, Any], warnings: list[str]) -> None:
        super().__init__(values)
        self.warnings = warnings


# --------------------------------------------------------------------------------------------
# Bulk data
# --------------------------------------------------------------------------------------------
#: Tags removed from the JSON model outright (besides the repeating groups in is_bulk_data_tag).
BULK_DATA_TAGS = frozenset(
    {
        0x7FE00001,  # Extended Offset Table
        0x7FE00002,  # Extended Offset Table Lengths
        0x7FE00008,  # Float Pixel Data
        0x7FE00009,  # Double Float Pixel Data
        0x7FE00010,  # Pixel Data
        0x54001010,  # Waveform Data
        0x56000010,  # First Order Phase Correction Angle (spectroscopy, OF)
        0x56000020,  # Spectroscopy Data
        0x00420011,  # Encapsulated Document
    }
)


def is_bulk_data_tag(tag: int) -> bool:
    """True for pixel data, overlay data (60xx,3000), retired curve/audio data (50xx,eeee) and
    the other :data:`BULK_DATA_TAGS`."""
    group, element = tag >> 16, tag & 0xFFFF
    if tag in BULK_DATA_TAGS:
        return True
    if 0x6000 <= group <= 0x601E and group % 2 == 0 and element == 0x3000:
        return True
    return 0x5000 <= group <= 0x501E and group % 2 == 0 and element in (0x3000, 0x200C)


# --------------------------------------------------------------------------------------------
# (a) DICOM JSON model
# --------------------------------------------------------------------------------------------
def _dictionary_vr(tag: int) -> str:
    try:
        return str(datadict.dictionary_VR(tag))
    except KeyError:
        return "UN"


def _raw_vr(raw: Any, tag: int) -> str:
    vr = getattr(raw, "VR", None)
    return str(vr) if vr else _dictionary_vr(tag)


def _raw_length(raw: Any) -> int | None:
    if isinstance(raw, RawDataElement):
        if raw.length != 0xFFFFFFFF:
            return int(raw.length)
        return len(raw.value) if isinstance(raw.value, bytes) else None
    value = getattr(raw, "value", None)
    return len(value) if isinstance(value, bytes | bytearray) else None


def _omitted(vr: str, length: int) -> dict[str, Any]:
    return {"vr": vr, "BulkDataURI": f"{OMITTED_BULK_DATA_URI}?bytes={length}"}


def _binary_json(vr: str, value: bytes, threshold: int) -> dict[str, Any]:
    if not value:
        return {"vr": vr}
    if len(value) > threshold:
        return _omitted(vr, len(value))
    return {"vr": vr, "InlineBinary": base64.b64encode(bytes(value)).decode("ascii")}


def _fallback_json(raw: Any, elem: Any, threshold: int) -> dict[str, Any]:
    """Keep what could not be converted as UN bytes."""
    value = getattr(raw, "value", None)
    if not isinstance(value, bytes | bytearray):
        value = getattr(elem, "value", None)
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
    return _binary_json("UN", bytes(value), threshold) if isinstance(value, bytes | bytearray) else {"vr": "UN"}


def _finite(values: list[Any], problems: list[str], where: str) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{where}: non-finite number {v} written as null")
            out.append(None)
        else:
            out.append(v)
    return out


def _element_json(elem: DataElement, threshold: int, problems: list[str], where: str, depth: int) -> dict[str, Any]:
    vr = str(elem.VR)
    value = elem.value
    if vr == "SQ":
        items = []
        for n, item in enumerate(value or []):
            if isinstance(item, Dataset):
                items.append(_dataset_json(item, threshold, problems, f"{where}[{n}].", depth + 1))
            else:
                problems.append(f"{where}[{n}]: sequence item is not a data set; dropped")
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if vr in _BINARY_VRS:
        if isinstance(value, bytes | bytearray):
            return _binary_json(vr if " or " not in vr else ("OB" if "OB" in vr else "OW"), value, threshold)
        # ambiguous VR resolved to numbers by pydicom
        numbers = list(value) if isinstance(value, list | tuple) or hasattr(value, "__len__") else [value]
        vr = "SS" if any(isinstance(v, int) and v < 0 for v in numbers) else "US"
        return {"vr": vr, "Value": [int(v) for v in numbers]} if numbers else {"vr": vr}
    if " or " in vr:  # 'US or SS' left unresolved
        vr = "US"
        elem = DataElement(elem.tag, vr, value)
    out = elem.to_json_dict(None, threshold)
    if "Value" in out:
        out["Value"] = _finite(list(out["Value"]), problems, where)
        if not all(type(v) in _PLAIN or (type(v) is dict and all(type(x) in _PLAIN for x in v.values()))
                   for v in out["Value"]):
            json.dumps(out, allow_nan=False)  # fail here (→ fallback), not in the caller
    return out


# value types that always serialise (floats are finite after _finite): no json.dumps to prove it
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _dataset_json(ds: Dataset, threshold: int, problems: list[str], prefix: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if depth > 64:
        problems.append(f"{prefix}: sequences nested deeper than 64 levels; dropped")
        return out
    for tag in sorted(ds.keys()):
        tag = BaseTag(tag)
        if tag.element == 0 or is_bulk_data_tag(tag):
            continue
        key = f"{int(tag):08X}"
        where = prefix + key
        raw = ds.get_item(tag, keep_deferred=True)
        vr = _raw_vr(raw, tag)
        length = _raw_length(raw)
        if vr in _BINARY_VRS and length is not None and length > threshold:
            out[key] = _omitted(vr if " or " not in vr else "OB" if "OB" in vr else "OW", length)
            continue
        elem = None
        try:
            elem = ds[tag]
            out[key] = _element_json(elem, threshold, problems, where, depth)
        except Exception as exc:
            problems.append(f"{where}: {type(exc).__name__}: {exc}; kept as UN")
            try:
                out[key] = _fallback_json(raw, elem, threshold)
            except Exception:
                out[key] = {"vr": "UN"}
    return out


def header_json(
    ds: Dataset,
    *,
    bulk_threshold_bytes: int = DEFAULT_BULK_THRESHOLD_BYTES,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """The data set (not the file meta) as a DICOM JSON model dict without bulk data (see the
    module docstring). ``problems``: a list that receives one line per value that had to be
    kept as UN or changed. Never raises for odd values."""
    sink: list[str] = [] if problems is None else problems
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return _dataset_json(ds, bulk_threshold_bytes, sink, "", 0)


def header_json_text(ds: Dataset, *, bulk_threshold_bytes: int = DEFAULT_BULK_THRESHOLD_BYTES) -> str:
    """:func:`header_json` serialised compactly with sorted keys (the ``header_json`` column)."""
    return json.dumps(
        header_json(ds, bulk_threshold_bytes=bulk_threshold_bytes),
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )


# --------------------------------------------------------------------------------------------
# (b) typed columns
# --------------------------------------------------------------------------------------------
def _column_tag(keyword: str) -> int:
    tag = datadict.tag_for_keyword(keyword)
    if tag is None:
        raise DicomError(
            f"{keyword!r} is not a DICOM data dictionary keyword",
            code="UNKNOWN_KEYWORD",
            hint="use the keyword spelling of PS3.6, e.g. 'PixelSpacing'",
        )
    return int(tag)


def _column_type(keyword: str) -> LogicalType:
    tag = _column_tag(keyword)
    vr = _dictionary_vr(tag)
    kind = VR_LOGICAL_TYPE.get(vr)
    if kind is None:
        raise DicomError(
            f"{keyword} has VR {vr}: sequences are not columns",
            code="NOT_A_COLUMN",
            hint="read sequences from header_json",
        )
    return LogicalType(kind, datadict.dictionary_VM(tag) != "1")


def column_types(keywords: Iterable[str]) -> dict[str, LogicalType]:
    """``{keyword: LogicalType}`` from the data dictionary (VR and VM), in the given order.
    Raises DicomError UNKNOWN_KEYWORD or NOT_A_COLUMN (SQ)."""
    return {kw: _column_type(kw) for kw in keywords}


_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")


def _parse_da(text: str) -> _dt.date:
    m = _DA.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a DA (YYYYMMDD)")
    try:
        return _dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date ({exc})") from None


def _norm_tm(text: str) -> str:
    m = _TM.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a TM (HHMMSS.FFFFFF)")
    hh, mm, ss = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    if hh > 23 or mm > 59 or ss > 60:  # 60: a leap second is valid in TM
        raise ValueError(f"{text!r} is not a valid time of day")
    return f"{hh:02d}:{mm:02d}:{ss:02d}.{(m[4] or '').ljust(6, '0')}"


def _norm_dt(text: str) -> str:
    m = _DT.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    micro = int((m[7] or "").ljust(6, "0"))
    tz = None
    if m[8]:
        sign = -1 if m[8][0] == "-" else 1
        offset = _dt.timedelta(hours=int(m[8][1:3]), minutes=int(m[8][3:5]))
        if offset > _dt.timedelta(hours=14):
            raise ValueError(f"{text!r}: UTC offset out of range")
        tz = _dt.timezone(sign * offset)
    try:
        value = _dt.datetime(
            int(m[1]),
            int(m[2] or 1),
            int(m[3] or 1),
            int(m[4] or 0),
            int(m[5] or 0),
            min(int(m[6] or 0), 59),
            micro,
            tz,
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None
    return value.isoformat(timespec="microseconds")


def _pn(value: Any) -> dict[str, str | None] | None:
    text = str(value).rstrip(" \x00")
    if not text.strip("=^ "):
        return None
    groups = (text.split("=") + ["", ""])[:3]
    parts = (groups[0].split("^") + [""] * 5)[:5]

    def clean(s: str) -> str | None:
        s = s.strip()
        return s or None

    out: dict[str, str | None] = dict(zip(PN_FIELDS[:5], (clean(p) for p in parts), strict=True))
    out["alphabetic"] = clean(groups[0])
    out["ideographic"] = clean(groups[1])
    out["phonetic"] = clean(groups[2])
    return out


def _text(value: Any, vr: str) -> str | None:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    text = str(value).rstrip(" \x00")
    if vr not in _TEXT_KEEP_LEADING:
        text = text.lstrip(" ")
    return text or None


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _convert(value: Any, vr: str, kind: Kind) -> Any:
    """One value of dictionary VR ``vr`` as ``kind``; None when empty; ValueError when unusable."""
    if value is None:
        return None
    if kind == "binary":
        if isinstance(value, bytes | bytearray):
            return bytes(value) or None
        raise ValueError(f"expected bytes, found {type(value).__name__}")
    if kind == "pn":
        return _pn(value)
    if kind in ("double", "long") and isinstance(value, bytes | bytearray):
        raise ValueError("binary (UN) value not converted")
    if kind == "long":
        if isinstance(value, int):
            number = int(value)
        else:
            text = _text(value, vr)
            if text is None:
                return None
            try:
                number = int(text)
            except ValueError:
                f = _float_or_none(text)
                if f is None or not f.is_integer():
                    raise ValueError(f"{text!r} is not an integer") from None
                number = int(f)
        if not _INT64[0] <= number <= _INT64[1]:
            raise ValueError(f"{number} is outside the signed 64-bit range")
        return number
    if kind == "double":
        if isinstance(value, int | float) and not isinstance(value, str):
            number = float(value)
        else:
            text = _text(value, vr)
            if text is None:
                return None
            parsed = _float_or_none(text)
            if parsed is None:
                raise ValueError(f"{text!r} is not a number")
            number = parsed
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if vr == "AT":
        return f"{int(value):08X}"
    text = _text(value, vr)
    if text is None:
        return None
    if kind == "date":
        return _parse_da(text.strip())
    if vr == "TM":
        return _norm_tm(text.strip())
    if vr == "DT":
        return _norm_dt(text.strip())
    return text


def _element_values(elem: DataElement, vr: str) -> list[Any]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        if vr in _BINARY_VRS:
            return [value]
        value = bytes(value).decode("latin-1").rstrip(" \x00")  # an unresolved UN text value
        return value.split("\\") if value else []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, Sequence):  # MultiValue, list, tuple
        return list(value)
    return [value]


def _flatten_one(ds: Dataset, keyword: str, ltype: LogicalType, problems: list[str]) -> Any:
    tag = _column_tag(keyword)
    try:
        if tag not in ds:
            return None
        elem = ds[tag]
    except Exception as exc:
        problems.append(f"{keyword}: cannot read the value: {type(exc).__name__}: {exc}")
        return None
    vr = _dictionary_vr(tag)
    try:
        raw_values = _element_values(elem, vr)
    except Exception as exc:
        problems.append(f"{keyword}: unusable value: {type(exc).__name__}: {exc}")
        return None
    values = []
    for v in raw_values:
        try:
            values.append(_convert(v, vr, ltype.kind))
        except Exception as exc:
            problems.append(f"{keyword}: {exc}")
            values.append(None)
    if ltype.array:
        return values if any(v is not None for v in values) else None
    present = [v for v in values if v is not None]
    if len(values) <= 1:
        return values[0] if values else None
    if ltype.kind == "string" and len(present) == len(values):
        return "\\".join(present)
    problems.append(f"{keyword}: {len(values)} values for a single-valued column; set to None")
    return None


def _default_keywords(ds: Dataset) -> list[str]:
    out = []
    for tag in sorted(ds.keys()):
        tag = int(tag)
        if tag & 0xFFFF == 0 or is_bulk_data_tag(tag) or (tag >> 16) % 2 == 1:
            continue
        keyword = datadict.keyword_for_tag(tag)
        if not keyword or datadict.tag_for_keyword(keyword) != tag:
            continue  # unknown or repeating-group (60xx) tags
        kind = VR_LOGICAL_TYPE.get(_dictionary_vr(tag))
        if kind is None or kind == "binary":
            continue
        out.append(keyword)
    return out


def flatten(ds: Dataset, keywords: Iterable[str] | None = None) -> FlatRow:
    """Typed python values for ``keywords`` (see the module docstring for the types).

    keywords: data dictionary keywords; None means every public, non-sequence, non-binary
        top-level element present in ``ds``.
    Returns a :class:`FlatRow`: ``{keyword: value}`` with None for absent, empty or unusable
    values, and ``.warnings`` naming each unusable one. Raises DicomError only for a keyword
    that is unknown or a sequence.
    """
    kws = _default_keywords(ds) if keywords is None else list(keywords)
    types = column_types(kws)
    problems: list[str] = []
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        values = {kw: _flatten_one(ds, kw, types[kw], problems) for kw in kws}
    return FlatRow(values, problems)


# --------------------------------------------------------------------------------------------
# Derived views
# --------------------------------------------------------------------------------------------
_S, _L, _D, _DATE = LogicalType("string"), LogicalType("long"), LogicalType("double"), LogicalType("date")
#: Keys and logical types of :func:`instance_summary` (the bronze.dicom_instances key columns).
INSTANCE_SUMMARY_TYPES: dict[str, LogicalType] = {
    "sop_instance_uid": _S,
    "sop_class_uid": _S,
    "series_instance_uid": _S,
    "study_instance_uid": _S,
    "patient_id": _S,
    "modality": _S,
    "transfer_syntax_uid": _S,
    "rows": _L,
    "columns": _L,
    "number_of_frames": _L,
    "instance_number": _L,
    "series_number": _L,
    "pixel_spacing_mm": LogicalType("double", True),
    "slice_thickness_mm": _D,
    "image_position_patient_mm": LogicalType("double", True),
    "image_orientation_patient": LogicalType("double", True),
    "rescale_slope": _D,
    "rescale_intercept": _D,
    "manufacturer": _S,
    "manufacturer_model_name": _S,
    "convolution_kernel": _S,
    "kvp": _D,
    "study_date": _DATE,
    "series_date": _DATE,
    "acquisition_date": _DATE,
    "warnings": LogicalType("string", True),
}
_SUMMARY_KEYWORDS = {
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "series_instance_uid": "SeriesInstanceUID",
    "study_instance_uid": "StudyInstanceUID",
    "patient_id": "PatientID",
    "modality": "Modality",
    "rows": "Rows",
    "columns": "Columns",
    "number_of_frames": "NumberOfFrames",
    "instance_number": "InstanceNumber",
    "series_number": "SeriesNumber",
    "pixel_spacing_mm": "PixelSpacing",
    "slice_thickness_mm": "SliceThickness",
    "image_position_patient_mm": "ImagePositionPatient",
    "image_orientation_patient": "ImageOrientationPatient",
    "rescale_slope": "RescaleSlope",
    "rescale_intercept": "RescaleIntercept",
    "manufacturer": "Manufacturer",
    "manufacturer_model_name": "ManufacturerModelName",
    "convolution_kernel": "ConvolutionKernel",
    "kvp": "KVP",
    "study_date": "StudyDate",
    "series_date": "SeriesDate",
    "acquisition_date": "AcquisitionDate",
}
_VECTOR_LENGTHS = {"pixel_spacing_mm": 2, "image_position_patient_mm": 3, "image_orientation_patient": 6}


def _first_group_value(ds: Dataset, sequence: str, keyword: str) -> Any:
    """``keyword`` from the shared, else the first per-frame, functional group item ``sequence``."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups) or []
        if not items:
            continue
        inner = items[0].get(sequence) or []
        if inner and keyword in inner[0]:
            row = flatten(inner[0], [keyword])
            if row[keyword] is not None:
                return row[keyword]
    return None


def instance_summary(ds: Dataset) -> dict[str, Any]:
    """The key columns of ``bronze.dicom_instances`` for one instance (keys and types:
    :data:`INSTANCE_SUMMARY_TYPES`): identifiers, geometry, rescale, scanner, dates.

    Vectors are tuples: pixel_spacing_mm (row, col), image_position_patient_mm (x, y, z),
    image_orientation_patient (6 cosines); a vector with a missing or unusable component is None.
    convolution_kernel: VM > 1 joined by '\\'. number_of_frames: 1 when absent.
    transfer_syntax_uid: the file meta's, else the encoding the data set was read in.
    Enhanced multi-frame: geometry and rescale of frame 0 from the functional groups, kernel
    and kVp from CT Reconstruction / CT X-Ray Details, acquisition date from Acquisition
    DateTime. ``warnings``: problems found (the value concerned is None). Never raises for bad
    header values.
    """
    row = flatten(ds, list(_SUMMARY_KEYWORDS.values()))
    problems = list(row.warnings)
    out: dict[str, Any] = {key: row[kw] for key, kw in _SUMMARY_KEYWORDS.items()}
    out["transfer_syntax_uid"] = transfer_syntax_of(ds)
    if out["number_of_frames"] is None and not any(p.startswith("NumberOfFrames:") for p in problems):
        out["number_of_frames"] = 1  # absent or empty: one frame; unusable ('1A'): None
    if out["convolution_kernel"] is not None:
        out["convolution_kernel"] = "\\".join(out["convolution_kernel"])
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        try:
            if is_enhanced(ds):
                _enhanced_fallbacks(ds, out, problems)
        except Exception as exc:  # a corrupt functional group must not stop the summary
            problems.append(f"functional groups: {type(exc).__name__}: {exc}")
    for key, n in _VECTOR_LENGTHS.items():
        vec = out[key]
        if vec is None:
            continue
        if len(vec) != n or any(v is None for v in vec):
            problems.append(f"{key}: expected {n} numbers, found {vec}; set to None")
            out[key] = None
        else:
            out[key] = tuple(vec)
    out["warnings"] = problems
    return {key: out[key] for key in INSTANCE_SUMMARY_TYPES}


def _enhanced_fallbacks(ds: Dataset, out: dict[str, Any], problems: list[str]) -> None:
    try:
        first = frame_geometry(ds)[0]
    except DicomError as exc:
        problems.append(f"frame geometry: {exc}")
        first = None
    if first is not None:
        for key, value in (
            ("pixel_spacing_mm", first.pixel_spacing_yx_mm),
            ("image_position_patient_mm", first.position_xyz_mm),
            ("image_orientation_patient", first.orientation),
            ("slice_thickness_mm", first.slice_thickness_mm),
        ):
            if out[key] is None and value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        if out["rescale_slope"] is None:
            out["rescale_slope"] = first.rescale_slope
        if out["rescale_intercept"] is None:
            out["rescale_intercept"] = first.rescale_intercept
    if out["convolution_kernel"] is None:
        kernel = _first_group_value(ds, "CTReconstructionSequence", "ConvolutionKernel")
        out["convolution_kernel"] = "\\".join(kernel) if kernel else None
    if out["kvp"] is None:
        out["kvp"] = _first_group_value(ds, "CTXRayDetailsSequence", "KVP")
    if out["acquisition_date"] is None:
        when = flatten(ds, ["AcquisitionDateTime"])
        problems.extend(when.warnings)
        if when["AcquisitionDateTime"]:
            out["acquisition_date"] = _dt.date.fromisoformat(when["AcquisitionDateTime"][:10])


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v is not None and v not in seen:
            seen.append(v)
    return seen


def _most_common(values: Iterable[Any]) -> Any:
    counts = Counter(v for v in values if v is not None)
    return counts.most_common(1)[0][0] if counts else None


def _check_group(instances: Sequence[Mapping[str, Any]], key: str, code: str) -> Any:
    if not instances:
        raise DicomError("no instances to summarise", code="NO_INSTANCES")
    ids = _distinct(i.get(key) for i in instances)
    if len(ids) > 1:
        raise DicomError(
            f"{len(ids)} different {key} values in one group: {', '.join(map(str, ids[:3]))}",
            code=code,
            hint=f"group the instance summaries by {key} first",
        )
    return ids[0] if ids else None


def _slice_normal(orientation: Sequence[float] | None) -> tuple[float, float, float]:
    if orientation is None:
        return (0.0, 0.0, 1.0)
    r, c = orientation[:3], orientation[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(x * x for x in n))
    return (0.0, 0.0, 1.0) if norm == 0 else (n[0] / norm, n[1] / norm, n[2] / norm)


def series_summary(instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row per series from its :func:`instance_summary` dicts (any order).

    Identity and scanner fields: the value if all instances agree, else the most common one
    and the field named in ``inconsistent``; geometry fields (rows, columns, pixel_spacing_mm,
    slice_thickness_mm, image_orientation_patient): the value if all agree, else None (and
    named in ``inconsistent``). Positions are ordered along the slice normal (row x column
    cosines; +z without an orientation): first/last_position_mm (x, y, z),
    extent_mm = distance between them along the normal, slice_step_mm = the median step
    between distinct positions. Raises DicomError NO_INSTANCES or MIXED_SERIES.
    """
    series_uid = _check_group(instances, "series_instance_uid", "MIXED_SERIES")
    inconsistent: list[str] = []

    def agreed(key: str, *, geometry: bool = False) -> Any:
        values = _distinct(i.get(key) for i in instances)
        if len(values) > 1:
            inconsistent.append(key)
            return None if geometry else _most_common(i.get(key) for i in instances)
        return values[0] if values else None

    out: dict[str, Any] = {"series_instance_uid": series_uid}
    for key in ("study_instance_uid", "patient_id", "modality", "sop_class_uid", "series_number"):
        out[key] = agreed(key)
    out["modalities"] = sorted(_distinct(i.get("modality") for i in instances))
    sops = [i.get("sop_instance_uid") for i in instances]
    out["instance_count"] = len(instances)
    out["distinct_instance_count"] = len(set(sops))
    out["duplicate_instance_count"] = len(instances) - len(set(sops))
    out["frame_count"] = sum(int(i.get("number_of_frames") or 1) for i in instances)
    for key in ("rows", "columns", "pixel_spacing_mm", "slice_thickness_mm", "image_orientation_patient"):
        out[key] = agreed(key, geometry=True)
    for key in ("manufacturer", "manufacturer_model_name", "convolution_kernel", "kvp", "series_date", "study_date"):
        out[key] = agreed(key)
    out["transfer_syntaxes"] = sorted(_distinct(i.get("transfer_syntax_uid") for i in instances))
    numbers = [i.get("instance_number") for i in instances if i.get("instance_number") is not None]
    out["instance_number_range"] = (min(numbers), max(numbers)) if numbers else None
    normal = _slice_normal(out["image_orientation_patient"])
    located = sorted(
        (sum(p * n for p, n in zip(pos, normal, strict=True)), tuple(pos))
        for i in instances
        if (pos := i.get("image_position_patient_mm")) is not None
    )
    out["positioned_instance_count"] = len(located)
    if located:
        out["first_position_mm"], out["last_position_mm"] = located[0][1], located[-1][1]
        out["extent_mm"] = located[-1][0] - located[0][0]
        distinct = sorted({round(d, 6) for d, _ in located})
        steps = sorted(b - a for a, b in zip(distinct, distinct[1:], strict=False))
        out["slice_step_mm"] = steps[len(steps) // 2] if steps else None
    else:
        out["first_position_mm"] = out["last_position_mm"] = out["extent_mm"] = out["slice_step_mm"] = None
    out["inconsistent"] = inconsistent
    return out


def study_summary(instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row per study from its instance summaries: patient, date, series and instance
    counts, modalities, series UIDs (sorted). Raises NO_INSTANCES or MIXED_STUDY."""
    study_uid = _check_group(instances, "study_instance_uid", "MIXED_STUDY")
    inconsistent = [k for k in ("patient_id", "study_date") if len(_distinct(i.get(k) for i in instances)) > 1]
    series = sorted(_distinct(i.get("series_instance_uid") for i in instances))
    return {
        "study_instance_uid": study_uid,
        "patient_id": _most_common(i.get("patient_id") for i in instances),
        "study_date": _most_common(i.get("study_date") for i in instances),
        "series_count": len(series),
        "instance_count": len(instances),
        "modalities": sorted(_distinct(i.get("modality") for i in instances)),
        "series_instance_uids": series,
        "inconsistent": inconsistent,
    }


def patient_summary(instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row per patient from their instance summaries: study/series/instance counts,
    modalities, first and last study date. Raises NO_INSTANCES or MIXED_PATIENT."""
    patient_id = _check_group(instances, "patient_id", "MIXED_PATIENT")
    dates = sorted(_distinct(i.get("study_date") for i in instances))
    return {
        "patient_id": patient_id,
        "study_count": len(_distinct(i.get("study_instance_uid") for i in instances)),
        "series_count": len(_distinct(i.get("series_instance_uid") for i in instances)),
        "instance_count": len(instances),
        "modalities": sorted(_distinct(i.get("modality") for i in instances)),
        "first_study_date": dates[0] if dates else None,
        "last_study_date": dates[-1] if dates else None,
    }
