"""The edge producer: folder or zip → de-identify → Kafka (``ctlake ingest send``).

Each file becomes one message: key = (de-identified) SeriesInstanceUID, value = de-identified
Part-10 bytes, headers = sha256 of the value, de-identification profile, a keyed reference to the
source path. A file that cannot be read or de-identified is never sent as it is: a *notice* (empty
value, ``ctlake-status: rejected`` with the error code and message) goes instead, so the lake's
quarantine shows it and nothing disappears silently; the bytes stay at the site. Objects above
``ingest.claim_check_bytes`` go by claim-check: the bytes are written to the landing area and the
message carries their URI and sha256.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ctlake.config import Config
from ctlake.errors import CtlakeError
from ctlake.ingest.sources import Oversized, SourceFile, count_files, iter_source

STATUS_HEADER = "ctlake-status"


@dataclass
class SendReport:
    """What one ``send`` did; ``refused`` maps error codes to counts."""

    files: int = 0
    sent: int = 0
    claim_checked: int = 0
    refused: Counter = field(default_factory=Counter)
    bytes_sent: int = 0
    seconds: float = 0.0
    digests: list[str] = field(default_factory=list)  # sha256 of every instance sent, in order

    def to_dict(self) -> dict:
        return {"files": self.files, "sent": self.sent, "claim_checked": self.claim_checked,
                "refused": dict(self.refused), "bytes_sent": self.bytes_sent, "seconds": round(self.seconds, 3)}


def source_ref(relpath: str, key: bytes) -> str:
    """A keyed reference to an edge path (folder names often carry patient names)."""
    return hmac.new(key, b"path:" + relpath.encode(), hashlib.sha256).hexdigest()[:32]


def write_claim_check(landing_root: str, data: bytes, sha256: str) -> str:
    """Write ``data`` to ``<landing>/claim/<sha256[:2]>/<sha256>.dcm`` once; return its URI."""
    if "://" in landing_root and not landing_root.startswith("file://"):
        import pyarrow.fs as pafs

        fs, base = pafs.FileSystem.from_uri(landing_root)
        path = f"{base.rstrip('/')}/claim/{sha256[:2]}/{sha256}.dcm"
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)
        return f"{landing_root.rstrip('/')}/claim/{sha256[:2]}/{sha256}.dcm"
    base = Path(landing_root.removeprefix("file://"))
    path = base / "claim" / sha256[:2] / f"{sha256}.dcm"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{time.monotonic_ns()}")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path.resolve().as_uri()


def read_claim_check(uri: str) -> bytes:
    """The bytes behind a claim-check URI (file:// here; hdfs://, s3a:// through pyarrow)."""
    if uri.startswith("file://") or "://" not in uri:
        return Path(uri.removeprefix("file://")).read_bytes()
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def _progress_printer(total: int) -> Callable[[SendReport], None]:
    start = time.monotonic()

    def show(rep: SendReport) -> None:
        width = 30
        filled = int(width * rep.files / max(total, 1))
        rate = rep.files / max(time.monotonic() - start, 1e-9)
        end = "\n" if rep.files >= total else ""
        print(f"\r[ctlake] send [{'#' * filled}{'.' * (width - filled)}] {rep.files}/{total} files, "
              f"{sum(rep.refused.values())} refused, {rate:.0f}/s", end=end, file=sys.stderr, flush=True)

    return show


def send(cfg: Config, source: Path, *, topic: str | None = None, deidentify: bool = True,
         progress: bool = True, producer=None) -> SendReport:
    """De-identify every file under ``source`` (folder or zip) and publish it to Kafka.

    ``deidentify=False`` sends files as they are: only for data that was de-identified elsewhere
    (the lake's gate still refuses anything that looks identifying).
    """
    from ctlake.dicom.deid import DeidProfile, deidentify_bytes
    from ctlake.dicom.reader import parse_dicom
    from ctlake.infra.kafka_admin import MAX_MESSAGE_BYTES, client_config, ensure_topic
    from ctlake.ingest.keys import site_key

    key = site_key(cfg)
    profile = DeidProfile(site_key=key)
    topic = ensure_topic(cfg, topic or cfg.kafka.topic)
    own_producer = producer is None
    if own_producer:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", enable_idempotence=True, retries=2**31 - 1,
                                 max_in_flight_requests_per_connection=5, linger_ms=20,
                                 max_request_size=MAX_MESSAGE_BYTES, **client_config(cfg))
    total = count_files(source) if progress else 0
    show = _progress_printer(total) if progress else (lambda rep: None)
    rep = SendReport()
    t0 = time.monotonic()
    futures = []
    profile_tag = profile.version.encode()
    for item in iter_source(source, max_file_bytes=cfg.ingest.max_file_bytes):
        rep.files += 1
        ref = source_ref(item.relpath, key)
        headers = [("ctlake-source-ref", ref.encode()), ("ctlake-deid-profile", profile_tag)]
        try:
            if isinstance(item, Oversized):
                raise CtlakeError(f"{item.size_bytes} bytes is above ingest.max_file_bytes",
                                  code="FILE_TOO_LARGE")
            assert isinstance(item, SourceFile)
            data = item.data
            if deidentify:
                data, _audit = deidentify_bytes(data, profile, allow_secondary=cfg.deid.allow_secondary)
            ds = parse_dicom(data)
            msg_key = str(getattr(ds, "SeriesInstanceUID", "") or "").encode() or None
        except CtlakeError as exc:
            rep.refused[exc.code] += 1
            note = json.dumps({"code": exc.code, "message": str(exc)[:2000]}).encode()
            futures.append(producer.send(topic, key=None, value=b"", headers=headers + [
                (STATUS_HEADER, b"rejected"), ("ctlake-error", note)]))
            show(rep)
            continue
        digest = hashlib.sha256(data).hexdigest()
        headers.append(("ctlake-sha256", digest.encode()))
        if len(data) > cfg.ingest.claim_check_bytes:
            uri = write_claim_check(cfg.landing_root, data, digest)
            headers.append(("ctlake-claim-check", uri.encode()))
            value = b""
            rep.claim_checked += 1
        else:
            value = data
        futures.append(producer.send(topic, key=msg_key, value=value, headers=headers))
        rep.sent += 1
        rep.bytes_sent += len(data)
        rep.digests.append(digest)
        if len(futures) >= 500:
            for f in futures:
                f.get(timeout=120)
            futures.clear()
        show(rep)
    producer.flush(120)
    for f in futures:
        f.get(timeout=120)
    if own_producer:
        producer.close()
    rep.seconds = time.monotonic() - t0
    if progress and rep.files == 0:
        print(f"[ctlake] send: no files under {source}", file=sys.stderr)
    return rep
