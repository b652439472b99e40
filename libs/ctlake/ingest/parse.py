"""One message or file → a ``bronze.dicom_instances`` row or a ``bronze.quarantine`` row (pure).

This is the whole decision, kept out of Spark so it can be tested and fuzzed alone; the streaming
and batch jobs only call :func:`process_record` for every row. The order of checks is the order of
trust: a notice from the edge, the claim-check, the checksum, parsing, the de-identification gate,
pixel decoding. Bytes that did not pass the gate are never kept (they may carry PHI).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ctlake.errors import CtlakeError, DeidentificationRefused, DicomError

WITHHELD_UNCHECKED = "not parseable, so not checked for PHI: the bytes stay at the source"
WITHHELD_PHI = "failed the de-identification gate: the bytes stay at the source"
WITHHELD_EDGE = "refused at the edge: the bytes stay at the site"


@dataclass(frozen=True)
class Record:
    """One input: bytes (or a claim-check), Kafka headers and where it came from."""

    data: bytes | None
    headers: dict[str, bytes]
    source_kind: str                 # kafka | file
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    source_ref: str | None = None


@dataclass(frozen=True)
class Outcome:
    table: str                       # bronze.dicom_instances | bronze.quarantine
    row: dict[str, Any]


def _source_fields(rec: Record, run_id: str, now: dt.datetime) -> dict[str, Any]:
    ref = rec.source_ref or (rec.headers.get("ctlake-source-ref") or b"").decode() or None
    return {"source_kind": rec.source_kind, "source_topic": rec.source_topic,
            "source_partition": rec.source_partition, "source_offset": rec.source_offset,
            "source_ref": ref, "ingest_run_id": run_id, "ingested_at": now}


def quarantine_row(rec: Record, *, stage: str, code: str, message: str, run_id: str, now: dt.datetime,
                   sha256: str | None, size: int | None, keep: bytes | None = None,
                   claim_check_uri: str | None = None, withheld: str | None = None) -> dict[str, Any]:
    identity = sha256 or (rec.headers.get("ctlake-source-ref") or b"").decode() or \
        f"{rec.source_topic}/{rec.source_partition}/{rec.source_offset}/{rec.source_ref}"
    qid = hashlib.sha256(f"{identity}|{stage}|{code}".encode()).hexdigest()
    return {"quarantine_id": qid, "stage": stage, "error_code": code, "error_message": message[:4000],
            "content_sha256": sha256, "size_bytes": size, "dicom_bytes": keep,
            "claim_check_uri": claim_check_uri, "bytes_withheld_reason": withheld if keep is None else None,
            **_source_fields(rec, run_id, now)}


def process_record(rec: Record, *, run_id: str, now: dt.datetime,
                   read_claim_check: Callable[[str], bytes], known_phi: Iterable[str] = (),
                   decode_pixels: bool = True) -> Outcome:
    """Decide where ``rec`` goes. Never raises for bad input: every failure is a quarantine row.

    Error codes starting with ``UNEXPECTED_`` mean a library raised something other than our
    :class:`DicomError`: the record is still quarantined (fail closed), but that is a bug to fix.
    """
    from ctlake.dicom import flatten, reader
    from ctlake.dicom.deid import check_deidentified

    def q(stage: str, code: str, message: str, **kw: Any) -> Outcome:
        return Outcome("bronze.quarantine", quarantine_row(rec, stage=stage, code=code, message=message,
                                                           run_id=run_id, now=now, **kw))

    h = rec.headers
    if h.get("ctlake-status") == b"rejected":
        note = {}
        try:
            note = json.loads(h.get("ctlake-error") or b"{}")
        except ValueError:
            pass
        return q("edge", str(note.get("code") or "EDGE_REJECTED"), str(note.get("message") or "refused at the edge"),
                 sha256=None, size=None, withheld=WITHHELD_EDGE)
    claim = (h.get("ctlake-claim-check") or b"").decode() or None
    data = rec.data
    if claim:
        try:
            data = read_claim_check(claim)
        except Exception as exc:  # noqa: BLE001 - any I/O failure is a quarantine reason
            return q("claim_check", "CLAIM_CHECK_UNREADABLE", f"{claim}: {type(exc).__name__}: {exc}",
                     sha256=(h.get("ctlake-sha256") or b"").decode() or None, size=None,
                     claim_check_uri=claim, withheld=WITHHELD_UNCHECKED)
    if not data:
        return q("parse", "EMPTY", "the message carries no bytes and no claim-check", sha256=None, size=0,
                 withheld=WITHHELD_UNCHECKED)
    sha = hashlib.sha256(data).hexdigest()
    expected = (h.get("ctlake-sha256") or b"").decode()
    if expected and expected != sha:
        return q("transport", "CHECKSUM_MISMATCH", f"sha256 {sha} does not match the header's {expected}",
                 sha256=sha, size=len(data), withheld=WITHHELD_UNCHECKED)
    try:
        ds = reader.parse_dicom(data)
    except DicomError as exc:
        return q("parse", exc.code, str(exc), sha256=sha, size=len(data), withheld=WITHHELD_UNCHECKED)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch; the code marks a bug
        return q("parse", "UNEXPECTED_PARSE_ERROR", f"{type(exc).__name__}: {exc}", sha256=sha,
                 size=len(data), withheld=WITHHELD_UNCHECKED)
    try:
        reasons = check_deidentified(ds, known_phi=known_phi)
    except CtlakeError as exc:
        reasons = [f"{exc.code}: {exc}"]
    except Exception as exc:  # noqa: BLE001 - fail closed: what the gate cannot read stays out
        return q("deid_gate", "UNEXPECTED_GATE_ERROR", f"{type(exc).__name__}: {exc}", sha256=sha,
                 size=len(data), withheld=WITHHELD_PHI)
    if reasons:
        code = "NOT_DEIDENTIFIED" if any("PatientIdentityRemoved" in r for r in reasons) else "PHI_REMAINS"
        return q("deid_gate", code, "; ".join(reasons)[:4000], sha256=sha, size=len(data), withheld=WITHHELD_PHI)
    keep = None if claim else data
    try:
        if decode_pixels and "PixelData" in ds:
            reader.decode_frames(ds)
        summary = flatten.instance_summary(ds)
        header = flatten.header_json_text(ds)
    except (DicomError, DeidentificationRefused) as exc:
        return q("decode", exc.code, str(exc), sha256=sha, size=len(data), keep=keep, claim_check_uri=claim)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch; the code marks a bug
        return q("decode", "UNEXPECTED_DECODE_ERROR", f"{type(exc).__name__}: {exc}", sha256=sha,
                 size=len(data), keep=keep, claim_check_uri=claim)
    row = {
        "sop_instance_uid": summary.get("sop_instance_uid"),
        "series_instance_uid": summary.get("series_instance_uid"),
        "study_instance_uid": summary.get("study_instance_uid"),
        "patient_pseudo_id": summary.get("patient_id"),
        "sop_class_uid": summary.get("sop_class_uid"),
        "modality": summary.get("modality"),
        "instance_number": summary.get("instance_number"),
        "rows": summary.get("rows"),
        "columns": summary.get("columns"),
        "number_of_frames": summary.get("number_of_frames"),
        "pixel_spacing_mm": _floats(summary.get("pixel_spacing_mm")),
        "slice_thickness_mm": summary.get("slice_thickness_mm"),
        "image_position_patient_mm": _floats(summary.get("image_position_patient_mm")),
        "image_orientation_patient": _floats(summary.get("image_orientation_patient")),
        "rescale_slope": summary.get("rescale_slope"),
        "rescale_intercept": summary.get("rescale_intercept"),
        "manufacturer": summary.get("manufacturer"),
        "manufacturer_model_name": summary.get("manufacturer_model_name"),
        "convolution_kernel": summary.get("convolution_kernel"),
        "kvp": summary.get("kvp"),
        "transfer_syntax_uid": summary.get("transfer_syntax_uid"),
        "study_date": summary.get("study_date"),
        "series_date": summary.get("series_date"),
        "header_json": header,
        "dicom_bytes": keep,
        "claim_check_uri": claim,
        "content_sha256": sha,
        "size_bytes": len(data),
        "deid_profile": (h.get("ctlake-deid-profile") or b"").decode() or None,
        **_source_fields(rec, run_id, now),
    }
    if not row["sop_instance_uid"]:
        return q("parse", "MISSING_SOP_INSTANCE_UID", "no SOPInstanceUID: the instance cannot be keyed",
                 sha256=sha, size=len(data), keep=keep, claim_check_uri=claim)
    return Outcome("bronze.dicom_instances", row)


def _floats(values: Any) -> list[float] | None:
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None
