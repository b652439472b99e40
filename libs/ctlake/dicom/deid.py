r"""De-identification at the edge: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile
with the Retain Longitudinal Temporal Information with Modified Dates Option (codes DCM 113100 + 113107).

The rules are data: ``ps315_annex_e.csv`` beside this module is Table E.1-1 of PS3.15 (edition 2026c, 656 rows:
tag, keyword, name, basic-profile action, action under the Modified Dates option; its header says where each
column comes from: the basic-profile column as transcribed for the 2026c edition in the dicom-anonymizer 2.1.0
package, the option column by the standard's rule for date/time attributes, checked against the option column of
innolitics/dicom-standard's machine-readable copy of an earlier edition). :func:`annex_e_table` returns it.
What each action does here:

======  ==========================================================================================
X       the element is removed.
Z       zero length (a sequence: no items).
D       a dummy value of the same VR: text ``ANONYMIZED``, DA ``19000101``, TM ``000000``, DT
        ``19000101000000``, numbers 0, binary values zero bytes of the same length, a UI remapped (as U);
        a sequence keeps its items and the table is applied inside them (a ``...CodeSequence`` gets one
        dummy code item instead).
U       every UID of the value is remapped: ``2.25.<int>`` of a UUIDv8 made of HMAC-SHA256(site key, uid),
        so one UID maps to one UID under one site key (references stay consistent across files) and to
        another under another key. See :func:`remap_uid`.
C       (option column, VR DA/DT/TM) the value is shifted by the patient's offset (see below); a value that
        cannot be parsed gets the basic action instead; for other VRs the basic action applies.
======  ==========================================================================================

Compound actions keep as much of the IOD valid as the standard allows: any with D (X/D, Z/D, X/Z/D) -> D;
X/Z -> Z; X/Z/U* -> U* on a sequence (kept, the table applied inside its items, so referenced UIDs are
remapped) and Z otherwise. Attributes not in the table are kept (sequences are walked); every element of an
odd group is removed at every depth, private creators included; group-length elements are dropped.

Identity and time:

* ``PatientID`` -> :func:`pseudonym` (``P-`` + 16 base32 characters of an HMAC of the original ID; LO-safe).
  ``PatientName`` (Z in the table, which allows a dummy) -> the same pseudonym, so viewers and the lake show
  one stable per-patient label. Both are added when missing. ``PatientBirthDate`` is Z without an option
  entry: it is emptied, never shifted; ``PatientAge``/``PatientBirthTime`` are X: removed.
* The patient is the original ``PatientID``; when it is empty, ``study:<StudyInstanceUID>`` (no longitudinal
  link, but no false merge either); with neither, ``sop:<SOPInstanceUID>``; with none of them the instance is
  refused (``NO_PATIENT_IDENTITY``).
* Every date/time of the patient moves by one offset, ``timedelta(days=date_offset_days, seconds=
  time_offset_seconds)``: days in ``DeidProfile.offset_days`` (default -3652..-366, i.e. 1-10 years back),
  seconds in 1..86399. A DA with its TM partner in the same item (StudyDate/StudyTime, ContentDate/ContentTime,
  Date/Time, DateOfLastCalibration/TimeOfLastCalibration, ... found by swapping Date<->Time in the keyword) and
  every DT move as one instant, so every interval between two instants of one patient is exact; a DA alone is
  taken at 00:00 (it moves by exactly ``date_offset_days``), a TM alone wraps within the day. Times are modified
  too (the option column marks the TM attributes C as well) because the time of an examination is itself
  identifying (``ctlake.synth`` plants StudyTime as PHI); ``DeidProfile(shift_time_of_day=False)`` keeps times
  and moves dates by whole days.

Refused instances (:class:`~ctlake.errors.DeidentificationRefused`): ``BurnedInAnnotation`` YES
(``BURNED_IN_ANNOTATION``); ``ImageType`` containing SECONDARY or SCREEN SAVE, or a Secondary Capture SOP class,
unless an operator cleared it with ``allow_secondary=True`` (``SECONDARY_CAPTURE``). Unreadable input raises
:class:`~ctlake.errors.DicomError`.

Every call returns an :class:`Audit`: (path, tag, keyword, action) per element touched, never a value, plus the
profile version and the SHA-256 of the site key id (never the key). :func:`check_deidentified` is the gate the
consumer runs before anything enters the lake. The input dataset is never modified. The 128-byte preamble is
not carried over (a dual-personality file could hide data there).
"""

from __future__ import annotations

import base64
import copy
import csv
import dataclasses
import datetime as dt
import hashlib
import hmac
import io
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ctlake.errors import ConfigError, DeidentificationRefused, DicomError

__all__ = [
    "DEFAULT_OFFSET_DAYS",
    "PROFILE_VERSION",
    "Audit",
    "AuditEntry",
    "DeidProfile",
    "DeidResult",
    "TableRow",
    "annex_e_table",
    "check_deidentified",
    "date_offset_days",
    "deidentify",
    "deidentify_bytes",
    "deidentify_path",
    "pseudonym",
    "remap_uid",
    "time_offset_seconds",
]

#: names this implementation; written into DeidentificationMethod and every Audit
PROFILE_VERSION = "ctlake-deid-1.0 (PS3.15 2026c)"
#: default per-patient date offset range in days, both ends included (1 to 10 years back)
DEFAULT_OFFSET_DAYS: tuple[int, int] = (-3652, -366)
#: the smallest site key accepted, in bytes
MIN_KEY_BYTES = 16

TABLE_FILE = "ps315_annex_e.csv"
DUMMY_TEXT = "ANONYMIZED"
DUMMY_DA, DUMMY_TM, DUMMY_DT = "19000101", "000000", "19000101000000"
_DUMMY_CODE_SCHEME = "99CTLAKE"
_PSEUDONYM_RE = re.compile(r"^P-[A-Z2-7]{16}$")
_SECONDARY_TYPES = frozenset({"SECONDARY", "SCREEN SAVE"})
_SC_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC Image Storage and its multi-frame variants (.7.1 - .7.4)
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_STRING_VRS = _TEXT_VRS | {"AS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}
# file-meta elements that name the sending site or carry opaque private data
_META_DROPPED = {0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102}
_PIXEL_DATA = 0x7FE00010


# --------------------------------------------------------------------------------------------
# The embedded table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableRow:
    """One row of PS3.15 Table E.1-1.

    ``tag`` is ``(gggg,eeee)`` with ``x`` for any hex digit of a repeating group, or ``(gggg,eeee)`` for the
    private-attributes row; ``basic`` the Basic Profile action (``X``, ``Z``, ``D``, ``U``, ``X/Z``, ``X/D``,
    ``Z/D``, ``X/Z/D``, ``X/Z/U*``); ``modified_dates`` is ``C`` where the Retain Longitudinal Temporal
    Information with Modified Dates Option cleans the attribute, else empty.
    """

    tag: str
    keyword: str
    name: str
    basic: str
    modified_dates: str

    @property
    def is_pattern(self) -> bool:
        """True for a repeating-group row such as ``(60xx,3000)`` or the private-attributes row."""
        return "x" in self.tag or "g" in self.tag


@dataclass(frozen=True)
class _Rules:
    exact: dict[int, TableRow]
    masked: tuple[tuple[int, int, TableRow], ...]  # (mask, value, row): tag & mask == value


@cache
def annex_e_table() -> tuple[TableRow, ...]:
    """Table E.1-1 as embedded in the package (``ps315_annex_e.csv``), in file order."""
    text = resources.files("ctlake.dicom").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    rows = tuple(
        TableRow(r["tag"], r["keyword"], r["name"], r["basic_profile"], r["rtn_long_modif_dates"])
        for r in csv.DictReader(lines)
    )
    allowed = {"X", "Z", "D", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
    bad = [r.tag for r in rows if r.basic not in allowed or r.modified_dates not in ("", "C")]
    if bad:
        raise DicomError(f"{TABLE_FILE}: unknown actions in rows {bad[:5]}", code="DEID_TABLE_INVALID")
    return rows


@cache
def _rules() -> _Rules:
    exact: dict[int, TableRow] = {}
    masked: list[tuple[int, int, TableRow]] = []
    for row in annex_e_table():
        digits = row.tag.strip("()").replace(",", "")
        if row.tag == "(gggg,eeee)":
            continue  # private attributes: every odd group, handled before the table is consulted
        if row.is_pattern:
            mask = int("".join("0" if c == "x" else "F" for c in digits), 16)
            value = int("".join("0" if c == "x" else c for c in digits), 16)
            masked.append((mask, value, row))
        else:
            exact[int(digits, 16)] = row
    return _Rules(exact, tuple(masked))


@cache
def _row_for(tag: int) -> TableRow | None:
    rules = _rules()
    row = rules.exact.get(tag)
    if row is not None:
        return row
    for mask, value, masked_row in rules.masked:
        if tag & mask == value:
            return masked_row
    return None


def _basic_action(basic: str, vr: str) -> str:
    """The single action this implementation takes for a (possibly compound) basic-profile action."""
    if basic == "X/Z/U*":
        return "U*" if vr == "SQ" else "Z"
    parts = basic.split("/")
    if "D" in parts:
        return "D"
    if "Z" in parts:
        return "Z"
    return parts[0]  # X or U


# --------------------------------------------------------------------------------------------
# Profile, keyed derivations
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeidProfile:
    """What a site de-identifies with.

    ``site_key``: the secret of this site (>= 16 bytes; keep it outside the lake), never logged or audited;
    ``site_key_id``: a public name for that key (audited as its SHA-256), so a rotated key is traceable;
    ``version``: written into DeidentificationMethod and the audit;
    ``modified_dates``: apply the Retain Longitudinal Temporal Information with Modified Dates Option (False:
    the basic profile alone, dates and times get their basic action);
    ``shift_time_of_day``: move times by the per-patient seconds too (False: keep times, dates move by days);
    ``offset_days``: (low, high) range of the per-patient date offset in days, both included, high <= -2
    (so a date always moves, even when a time crosses midnight).
    """

    site_key: bytes = field(repr=False)
    site_key_id: str = "default"
    version: str = PROFILE_VERSION
    modified_dates: bool = True
    shift_time_of_day: bool = True
    offset_days: tuple[int, int] = DEFAULT_OFFSET_DAYS

    def __post_init__(self) -> None:
        if not isinstance(self.site_key, bytes) or len(self.site_key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"deid.site_key must be at least {MIN_KEY_BYTES} bytes",
                hint="generate one with `python -c 'import secrets; print(secrets.token_hex(32))'` and keep it "
                "in the site's secret store",
            )
        low, high = self.offset_days
        if not low <= high <= -2:
            raise ConfigError(
                f"deid.offset_days {self.offset_days}: need low <= high <= -2 days",
                hint="use a range in the past such as (-3652, -366)",
            )
        if not self.version or len(self.version) > 64:
            raise ConfigError("deid.version must be 1-64 characters (it is written as an LO value)")

    @property
    def site_key_id_sha256(self) -> str:
        """Hex SHA-256 of ``site_key_id`` (what audits carry)."""
        return hashlib.sha256(self.site_key_id.encode("utf-8")).hexdigest()


def _digest(key: bytes, purpose: str, message: str) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key``, domain-separated by ``purpose``."""
    return hmac.new(key, purpose.encode("ascii") + b"\x00" + message.encode("utf-8"), hashlib.sha256).digest()


def remap_uid(uid: str, key: bytes) -> str:
    """The de-identified UID of ``uid`` under ``key``: ``2.25.<decimal>`` of a UUIDv8 (RFC 9562) whose 122 free
    bits come from HMAC-SHA256(key, uid). Deterministic, at most 44 characters; trailing NUL/space padding of
    the input is ignored. An empty UID stays empty."""
    uid = str(uid).strip("\x00 ")
    if not uid:
        return ""
    raw = bytearray(_digest(key, "uid", uid)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return f"2.25.{int.from_bytes(raw, 'big')}"


def pseudonym(patient_id: str, key: bytes) -> str:
    """The stable pseudonym of a patient under ``key``: ``P-`` + 16 base32 characters (80 bits) of
    HMAC-SHA256(key, patient_id). Leading/trailing spaces of the ID are ignored."""
    digest = _digest(key, "patient", str(patient_id).strip())
    return "P-" + base64.b32encode(digest).decode("ascii")[:16]


def date_offset_days(patient_id: str, key: bytes, *, offset_days: tuple[int, int] = DEFAULT_OFFSET_DAYS) -> int:
    """Whole days every date of this patient moves by (from the ORIGINAL PatientID), in ``offset_days``
    (both ends included; default -3652..-366)."""
    low, high = offset_days
    n = int.from_bytes(_digest(key, "date-offset", str(patient_id).strip())[:8], "big")
    return low + n % (high - low + 1)


def time_offset_seconds(patient_id: str, key: bytes) -> int:
    """Seconds (1..86399) added on top of :func:`date_offset_days` to every instant of this patient."""
    n = int.from_bytes(_digest(key, "time-offset", str(patient_id).strip())[:8], "big")
    return 1 + n % 86399


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditEntry:
    """One element touched: where (``path`` of sequence keywords and item indexes, empty at top level), which
    (``tag`` as ``(gggg,eeee)``, ``keyword``; empty for private/unknown tags) and what (``action``: X, Z, D, U,
    U*, C, or K for a date kept as it was). Never a value."""

    path: str
    tag: str
    keyword: str
    action: str


@dataclass(frozen=True)
class Audit:
    """What was done to one instance, without any of its values."""

    profile_version: str
    site_key_id_sha256: str
    options: tuple[str, ...]
    entries: tuple[AuditEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for logs and the audit table)."""
        return dataclasses.asdict(self)

    def actions(self) -> dict[str, str]:
        """``{"path/keyword-or-tag": action}`` for quick look-ups in tests and reports."""
        return {f"{e.path}{'.' if e.path else ''}{e.keyword or e.tag}": e.action for e in self.entries}


@dataclass(frozen=True)
class DeidResult:
    """A de-identified copy of the input, its audit and the patient pseudonym it was filed under."""

    dataset: Dataset
    audit: Audit
    patient_pseudonym: str


# --------------------------------------------------------------------------------------------
# Dates and times
# --------------------------------------------------------------------------------------------
_DA_RE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # YYYYMMDD, legacy ACR-NEMA YYYY.MM.DD
_TM_RE = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT_RE = re.compile(
    r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?([+-]\d{4})?$"
)


def _parse_da(value: str) -> dt.date | None:
    m = _DA_RE.match(value.strip())
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _parse_tm(value: str) -> tuple[dt.time, str] | None:
    """(time, fraction digits as written) or None."""
    m = _TM_RE.match(value.strip())
    if not m:
        return None
    frac = m[4] or ""
    try:
        micro = int(frac.ljust(6, "0")) if frac else 0
        return dt.time(int(m[1]), int(m[2] or 0), min(int(m[3] or 0), 59), micro), frac
    except ValueError:
        return None


def _format_tm(t: dt.time, frac: str) -> str:
    text = t.strftime("%H%M%S")
    return f"{text}.{f'{t.microsecond:06d}'[: len(frac)]}" if frac else text


def _shift_da(value: str, offset: dt.timedelta, partner_tm: str | None) -> str | None:
    day = _parse_da(value)
    if day is None:
        return None
    parsed = _parse_tm(partner_tm) if partner_tm else None
    if parsed is None:
        return (day + dt.timedelta(days=offset.days)).strftime("%Y%m%d")
    return (dt.datetime.combine(day, parsed[0]) + offset).strftime("%Y%m%d")


def _shift_tm(value: str, offset: dt.timedelta, partner_da: str | None) -> str | None:
    parsed = _parse_tm(value)
    if parsed is None:
        return None
    day = (_parse_da(partner_da) if partner_da else None) or dt.date(2000, 1, 1)
    return _format_tm((dt.datetime.combine(day, parsed[0]) + offset).time(), parsed[1])


def _shift_dt(value: str, offset: dt.timedelta) -> str | None:
    m = _DT_RE.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        start = dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            min(int(second or 0), 59),
            int(frac.ljust(6, "0")) if frac else 0,
        )
    except ValueError:
        return None
    if hour is None:  # date precision or coarser: whole days, then the same precision
        shifted = start + dt.timedelta(days=offset.days)
        return shifted.strftime("%Y%m%d")[: 4 + 2 * (month is not None) + 2 * (day is not None)] + (tz or "")
    shifted = start + offset
    text = shifted.strftime("%Y%m%d%H%M%S")
    if frac:
        text += "." + f"{shifted.microsecond:06d}"[: len(frac)]
    return text + (tz or "")


@cache
def _partner_keyword(keyword: str, vr: str) -> str | None:
    """StudyTime <-> StudyDate, TimeOfLastCalibration <-> DateOfLastCalibration, Time <-> Date, ..."""
    if vr == "TM" and "Time" in keyword:
        other, want = keyword.replace("Time", "Date"), "DA"
    elif vr == "DA" and "Date" in keyword:
        other, want = keyword.replace("Date", "Time"), "TM"
    else:
        return None
    tag = tag_for_keyword(other)
    return other if tag is not None and dictionary_VR(tag) == want else None


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _shift_element(elem: DataElement, item: Dataset, offset: dt.timedelta) -> list[str] | None:
    """Shifted values of a DA/DT/TM element (None: a value could not be parsed)."""
    values = [str(v) for v in _values(elem)]
    partner: list[str] = []
    keyword = elem.keyword or ""
    other = _partner_keyword(keyword, elem.VR)
    if other is not None and other in item:
        partner = [str(v) for v in _values(item[other])]
    out: list[str] = []
    for i, value in enumerate(values):
        mate = partner[i] if len(partner) == len(values) else (partner[0] if len(partner) == 1 else None)
        if elem.VR == "DA":
            new = _shift_da(value, offset, mate)
        elif elem.VR == "TM":
            new = _shift_tm(value, offset, mate)
        else:
            new = _shift_dt(value, offset)
        if new is None:
            return None
        out.append(new)
    return out


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    profile: DeidProfile
    offset: dt.timedelta
    entries: list[AuditEntry]


def _tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _keyword(tag: BaseTag) -> str:
    return "" if tag.is_private else (keyword_for_tag(tag) or "")


def _elements(item: Dataset, errors: list[str] | None = None) -> Iterator[DataElement]:
    """Every element of one item, converted. A value pydicom cannot decode is a DicomError, or (with
    ``errors``) a reason appended there."""
    for tag in sorted(item.keys()):
        try:
            elem = item[tag]
        except (ValueError, TypeError, struct.error, UnicodeError, NotImplementedError, KeyError) as exc:
            message = f"element {_tag_str(int(tag))} cannot be decoded ({type(exc).__name__})"
            if errors is None:
                raise DicomError(message, code="BAD_VALUE") from exc
            errors.append(f"UNDECODABLE: {message}")
            continue
        yield elem


def _dummy_value(elem: DataElement, key: bytes) -> Any:
    vr = elem.VR
    if vr == "UI":
        return _remap_value(elem, key)
    if vr in _TEXT_VRS:
        return DUMMY_TEXT
    if vr == "DA":
        return DUMMY_DA
    if vr == "TM":
        return DUMMY_TM
    if vr == "DT":
        return DUMMY_DT
    if vr == "AS":
        return "000Y"
    if vr in ("IS", "DS"):
        return "0"
    if vr in _NUMBER_VRS:
        return 0
    if vr in _BINARY_VRS:
        length = len(elem.value) if isinstance(elem.value, bytes | bytearray) else 0
        return b"\x00" * (length + length % 2)
    return None  # UR and anything else: zero length


def _remap_value(elem: DataElement, key: bytes) -> Any:
    values = [remap_uid(str(v), key) for v in _values(elem)]
    if not values:
        return elem.value
    return values if len(values) > 1 else values[0]


def _dummy_code_item() -> Dataset:
    item = Dataset()
    item.CodeValue = DUMMY_TEXT
    item.CodingSchemeDesignator = _DUMMY_CODE_SCHEME
    item.CodeMeaning = DUMMY_TEXT
    return item


def _new_element(elem: DataElement, value: Any) -> DataElement:
    return DataElement(elem.tag, elem.VR, value)


def _copy_element(elem: DataElement) -> DataElement:
    """An independent copy that keeps the value exactly as read (no re-validation of odd values)."""
    return copy.deepcopy(elem)


def _clean_item(src: Dataset, ctx: _Ctx, path: str) -> Dataset:
    """A new item holding the de-identified elements of ``src`` (the table applied recursively)."""
    out = Dataset()
    key = ctx.profile.site_key
    for elem in _elements(src):
        tag = elem.tag
        tag_int = int(tag)
        keyword = _keyword(tag)
        where = keyword or _tag_str(tag_int)

        def note(action: str, *, _tag: int = tag_int, _keyword: str = keyword) -> None:
            ctx.entries.append(AuditEntry(path, _tag_str(_tag), _keyword, action))

        if tag.is_private:
            note("X")
            continue
        if tag.element == 0 or tag.group == 0x0002:  # group lengths; file meta does not belong in the body
            continue
        if keyword == "PatientID" or (keyword == "PatientName" and not path):
            note("D")  # the top-level pair is set to the pseudonym by deidentify()
            original = str(elem.value or "").strip()
            if keyword == "PatientID" and original:
                out.add(_new_element(elem, pseudonym(original, key)))
            continue
        row = _row_for(tag_int)
        if row is None:
            if elem.VR == "SQ":
                out.add(DataElement(tag, "SQ", _clean_sequence(elem, ctx, f"{path}{'.' if path else ''}{where}")))
            else:
                out.add(_copy_element(elem))
            continue
        action = _basic_action(row.basic, elem.VR)
        if ctx.profile.modified_dates and row.modified_dates == "C" and elem.VR in _DATE_VRS:
            if not _values(elem):
                out.add(_copy_element(elem))
                continue
            shifted = _shift_element(elem, src, ctx.offset)
            if shifted is not None:
                changed = shifted != [str(v) for v in _values(elem)]
                note("C" if changed else "K")
                out.add(_new_element(elem, shifted if len(shifted) > 1 else shifted[0]))
                continue  # unparseable: fall through to the basic action
        if action == "X":
            note("X")
        elif action == "Z":
            note("Z")
            out.add(DataElement(tag, elem.VR, DicomSequence() if elem.VR == "SQ" else None))
        elif action == "U" and elem.VR == "UI":
            note("U")
            out.add(_new_element(elem, _remap_value(elem, key)))
        elif elem.VR == "SQ":  # D or U*: keep the items, apply the table inside
            note(action)
            if action == "D" and keyword.endswith("CodeSequence"):
                out.add(DataElement(tag, "SQ", DicomSequence([_dummy_code_item()])))
            else:
                out.add(DataElement(tag, "SQ", _clean_sequence(elem, ctx, f"{path}{'.' if path else ''}{where}")))
        else:  # D, or U on a non-UI value
            note("D")
            out.add(_new_element(elem, _dummy_value(elem, key)))
    return out


def _clean_sequence(elem: DataElement, ctx: _Ctx, path: str) -> DicomSequence:
    return DicomSequence([_clean_item(item, ctx, f"{path}[{i}]") for i, item in enumerate(elem.value or [])])


# --------------------------------------------------------------------------------------------
# Refusals and identity
# --------------------------------------------------------------------------------------------
def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _refuse_if_needed(ds: Dataset, *, allow_secondary: bool) -> None:
    if _text(ds, "BurnedInAnnotation").upper() == "YES":
        raise DeidentificationRefused(
            "BurnedInAnnotation is YES: identifying text may be in the pixels",
            code="BURNED_IN_ANNOTATION",
            hint="the pixel data must be cleaned (or the instance dropped) before it can enter the lake",
        )
    image_type = ds.get("ImageType")
    if image_type is None:
        image_type = []
    elif not isinstance(image_type, MultiValue | list):
        image_type = [image_type]
    types = {str(v).strip().upper() for v in image_type}
    sop_class = _text(ds, "SOPClassUID")
    secondary = bool(types & _SECONDARY_TYPES) or sop_class.startswith(_SC_SOP_CLASS_PREFIX)
    if secondary and not allow_secondary:
        what = "Secondary Capture SOP class" if sop_class.startswith(_SC_SOP_CLASS_PREFIX) else "ImageType"
        raise DeidentificationRefused(
            f"secondary capture / screen save ({what}): may show identifying text",
            code="SECONDARY_CAPTURE",
            hint="an operator who checked the pixels can clear it with allow_secondary=True",
        )


def _identity(ds: Dataset) -> str:
    for keyword, prefix in (("PatientID", ""), ("StudyInstanceUID", "study:"), ("SOPInstanceUID", "sop:")):
        value = _text(ds, keyword)
        if value:
            return prefix + value
    raise DeidentificationRefused(
        "no PatientID, StudyInstanceUID or SOPInstanceUID: the instance cannot be filed under a patient",
        code="NO_PATIENT_IDENTITY",
    )


def _method_codes(profile: DeidProfile) -> DicomSequence:
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if profile.modified_dates:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return DicomSequence(items)


def _options(profile: DeidProfile) -> tuple[str, ...]:
    options = ["BasicApplicationConfidentialityProfile"]
    if profile.modified_dates:
        options.append("RetainLongitudinalTemporalInformationModifiedDates")
        options.append("ShiftTimeOfDay" if profile.shift_time_of_day else "KeepTimeOfDay")
    return tuple(options)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def deidentify(ds: Dataset, profile: DeidProfile, *, allow_secondary: bool = False) -> DeidResult:
    """De-identify ``ds`` (not modified) under ``profile``; returns the new dataset, its audit and pseudonym.

    Raises DeidentificationRefused (BURNED_IN_ANNOTATION, SECONDARY_CAPTURE, NO_PATIENT_IDENTITY) before any
    work, and DicomError (BAD_VALUE) for an element pydicom cannot decode. The file meta (if any) is carried
    over with MediaStorageSOPInstanceUID following the remapped SOPInstanceUID and the AE titles and private
    information of group 0002 dropped."""
    _refuse_if_needed(ds, allow_secondary=allow_secondary)
    identity = _identity(ds)
    key = profile.site_key
    days = date_offset_days(identity, key, offset_days=profile.offset_days)
    seconds = time_offset_seconds(identity, key) if profile.shift_time_of_day else 0
    ctx = _Ctx(profile, dt.timedelta(days=days, seconds=seconds), [])
    out = _clean_item(ds, ctx, "")

    alias = pseudonym(identity, key)
    out.PatientID = alias
    out.PatientName = alias
    out.PatientIdentityRemoved = "YES"
    method = ["PS3.15 E.1 Basic Application Confidentiality Profile"]
    if profile.modified_dates:
        method.append("Retain Longitudinal Temporal Info Modified Dates")
    out.DeidentificationMethod = [*method, profile.version]
    out.DeidentificationMethodCodeSequence = _method_codes(profile)
    if profile.modified_dates:
        out.LongitudinalTemporalInformationModified = "MODIFIED"
    elif "LongitudinalTemporalInformationModified" in out:
        del out.LongitudinalTemporalInformationModified

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        new_meta = FileMetaDataset()
        for elem in _elements(meta):
            if int(elem.tag) in _META_DROPPED or elem.tag.element == 0 or elem.tag.is_private:
                ctx.entries.append(AuditEntry("file_meta", _tag_str(int(elem.tag)), _keyword(elem.tag), "X"))
                continue
            if elem.keyword == "MediaStorageSOPInstanceUID":
                sop = out.get("SOPInstanceUID")
                value = str(sop) if sop else remap_uid(str(elem.value or ""), key)
                ctx.entries.append(AuditEntry("file_meta", _tag_str(int(elem.tag)), elem.keyword, "U"))
                new_meta.add(_new_element(elem, value))
            else:
                new_meta.add(_copy_element(elem))
        out.file_meta = new_meta
    implicit, little = ds.original_encoding
    if implicit is not None:
        out.set_original_encoding(implicit, little, ds.original_character_set)

    audit = Audit(profile.version, profile.site_key_id_sha256, _options(profile), tuple(ctx.entries))
    return DeidResult(out, audit, alias)


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(str(syntax))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian


def _read(data: bytes) -> Dataset:
    """Parse with the one reader (:func:`ctlake.dicom.reader.parse_dicom`: Part 10, no preamble,
    bare data sets) and refuse what is not DICOM."""
    from ctlake.dicom.reader import parse_dicom

    ds = parse_dicom(data)
    if len(ds) == 0:
        raise DicomError("no data elements after the file meta", code="NOT_DICOM")
    return ds


def deidentify_bytes(data: bytes, profile: DeidProfile, *, allow_secondary: bool = False) -> tuple[bytes, Audit]:
    """Part-10 (or raw dataset) bytes in, de-identified Part-10 bytes out, in the same transfer syntax with the
    pixel data bytes untouched. Raises DicomError (NOT_DICOM, TRUNCATED, BAD_VALUE, MISSING_ATTRIBUTE) or
    DeidentificationRefused (see :func:`deidentify`)."""
    ds = _read(data)
    syntax = _transfer_syntax(ds)
    result = deidentify(ds, profile, allow_secondary=allow_secondary)
    out = result.dataset
    if not out.get("SOPClassUID") or not out.get("SOPInstanceUID"):
        raise DicomError(
            "SOPClassUID or SOPInstanceUID missing: no Part-10 file can be written", code="MISSING_ATTRIBUTE"
        )
    meta = getattr(out, "file_meta", None)
    meta = FileMetaDataset() if meta is None else FileMetaDataset(meta)
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    out.file_meta = meta
    out.preamble = None
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    except (ValueError, TypeError, struct.error, OverflowError, AttributeError) as exc:
        raise DicomError(f"de-identified dataset cannot be encoded ({type(exc).__name__})", code="BAD_VALUE") from exc
    return buffer.getvalue(), result.audit


def deidentify_path(src: Path, dst: Path, profile: DeidProfile, *, allow_secondary: bool = False) -> Audit:
    """De-identify the file ``src`` into ``dst`` (parents created; written atomically, nothing written when
    refused). Returns the audit."""
    try:
        data = Path(src).read_bytes()
    except OSError as exc:
        raise DicomError(f"{src}: cannot be read ({exc.strerror})", code="FILE_UNREADABLE") from exc
    payload, audit = deidentify_bytes(data, profile, allow_secondary=allow_secondary)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return audit


# --------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------
def _is_dummy(elem: DataElement) -> bool:
    values = _values(elem)
    if not values:
        return True
    if elem.VR in _BINARY_VRS:
        return isinstance(elem.value, bytes | bytearray) and not any(elem.value)
    allowed = {DUMMY_TEXT, DUMMY_DA, DUMMY_TM, DUMMY_DT, "000Y", "0", "0.0"}
    for value in values:
        text = str(value).strip()
        if text in allowed or value == 0 or _PSEUDONYM_RE.match(text):
            continue
        if elem.VR == "UI" and text.startswith("2.25."):
            continue
        return False
    return True


def _phi_patterns(known_phi: Iterable[str]) -> list[re.Pattern[str]]:
    patterns = []
    for value in known_phi:
        text = str(value).strip()
        if not text:
            continue
        left = r"(?<![0-9A-Za-z])" if text[0].isalnum() else ""
        right = r"(?![0-9A-Za-z])" if text[-1].isalnum() else ""
        patterns.append(re.compile(left + re.escape(text) + right, re.IGNORECASE))
    return patterns


def _strings(elem: DataElement) -> list[str]:
    if elem.VR in _STRING_VRS:
        return [str(v) for v in _values(elem)]
    if elem.VR == "UN" and isinstance(elem.value, bytes | bytearray) and int(elem.tag) != _PIXEL_DATA:
        return [elem.value.decode("latin-1")]
    return []


def _check_item(
    item: Dataset,
    path: str,
    *,
    modified: bool,
    uid_root: str | None,
    phi: Sequence[re.Pattern[str]],
    reasons: list[str],
) -> None:
    for elem in _elements(item, reasons):
        tag = int(elem.tag)
        # the element's path and label are only spelled out where they are needed (a reason, a
        # sequence): this loop runs for every element of every instance at ingest
        if elem.tag.is_private:
            reasons.append(f"PRIVATE_TAG: {_label(path, elem.tag)[1]}")
            continue
        if phi:
            for text in _strings(elem):
                for index, pattern in enumerate(phi):
                    if pattern.search(text):
                        reasons.append(f"KNOWN_PHI: value #{index} found in {_label(path, elem.tag)[1]}")
        row = _row_for(tag) if elem.tag.group != 0x0002 else None
        if row is None:
            if elem.VR == "SQ":
                where = _label(path, elem.tag)[0]
                for i, sub in enumerate(elem.value or []):
                    _check_item(sub, f"{where}[{i}]", modified=modified, uid_root=uid_root, phi=phi, reasons=reasons)
            continue
        if modified and row.modified_dates == "C" and elem.VR in _DATE_VRS:
            continue  # shifted dates are allowed to carry a value
        action = _basic_action(row.basic, elem.VR)
        if elem.VR == "SQ":
            if action in ("X", "Z") and elem.value:
                reasons.append(f"NOT_CLEANED: {_label(path, elem.tag)[1]} (action {row.basic}) has items")
            elif action in ("D", "U*"):
                where = _label(path, elem.tag)[0]
                for i, sub in enumerate(elem.value or []):
                    _check_item(sub, f"{where}[{i}]", modified=modified, uid_root=uid_root, phi=phi, reasons=reasons)
            continue
        if action == "U" and elem.VR == "UI":
            if uid_root and any(not str(v).startswith(uid_root) for v in _values(elem)):
                reasons.append(f"UID_NOT_REMAPPED: {_label(path, elem.tag)[1]}")
            continue
        if action == "X" and _values(elem):
            reasons.append(f"NOT_CLEANED: {_label(path, elem.tag)[1]} (action {row.basic}) is present")
        elif action in ("Z", "D") and not _is_dummy(elem):
            reasons.append(f"NOT_CLEANED: {_label(path, elem.tag)[1]} (action {row.basic}) has a real value")


def _label(path: str, tag: BaseTag) -> tuple[str, str]:
    """(path of an element as ``Seq[0].Keyword``, that path with the tag) for reasons."""
    keyword = _keyword(tag)
    where = f"{path}{'.' if path else ''}{keyword or _tag_str(int(tag))}"
    return where, (f"{where} {_tag_str(int(tag))}" if keyword else where)


def check_deidentified(ds: Dataset, *, known_phi: Iterable[str] = (), uid_root: str | None = "2.25.") -> list[str]:
    """Reasons ``ds`` still looks identifying; an empty list means it passes. Never contains a value.

    Checks: PatientIdentityRemoved is YES; BurnedInAnnotation is not YES; no private element at any depth;
    every Table E.1-1 attribute holds what its basic action allows (X absent or empty, Z/D empty or a dummy or
    a ``P-`` pseudonym; option-C dates may hold a value when LongitudinalTemporalInformationModified is
    MODIFIED); every U attribute's UIDs start with ``uid_root`` (None: not checked); none of ``known_phi``
    (case-insensitive, whole words) occurs in any string value, file meta and sequences included; the file
    meta MediaStorageSOPInstanceUID equals SOPInstanceUID. Each reason starts with a stable code."""
    reasons: list[str] = []
    try:
        _check_dataset(ds, known_phi=known_phi, uid_root=uid_root, reasons=reasons)
    except Exception as exc:  # noqa: BLE001 - fail closed: what cannot be read cannot be cleared
        reasons.append(f"UNREADABLE: the data set could not be read to the end ({type(exc).__name__})")
    return reasons


def _check_dataset(ds: Dataset, *, known_phi: Iterable[str], uid_root: str | None, reasons: list[str]) -> None:
    if _text(ds, "PatientIdentityRemoved").upper() != "YES":
        reasons.append("IDENTITY_NOT_REMOVED: PatientIdentityRemoved is not YES")
    if _text(ds, "BurnedInAnnotation").upper() == "YES":
        reasons.append("BURNED_IN_ANNOTATION: BurnedInAnnotation is YES")
    modified = _text(ds, "LongitudinalTemporalInformationModified").upper() == "MODIFIED"
    phi = _phi_patterns(known_phi)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _check_item(meta, "file_meta", modified=modified, uid_root=uid_root, phi=phi, reasons=reasons)
        media_uid, sop_uid = meta.get("MediaStorageSOPInstanceUID"), ds.get("SOPInstanceUID")
        if media_uid and sop_uid and str(media_uid) != str(sop_uid):
            reasons.append("META_MISMATCH: file_meta MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    _check_item(ds, "", modified=modified, uid_root=uid_root, phi=phi, reasons=reasons)
