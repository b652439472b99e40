"""Read DICOM bytes and files, decode pixels, compute Hounsfield units and per-frame geometry.

Pure: pydicom 3.0 with the pylibjpeg codecs and numpy; no Spark.

Reading (:func:`parse_dicom`, :func:`read_dicom_file`)
    Part 10 files (128-byte preamble + ``DICM`` + file meta), files whose preamble was stripped
    (``DICM`` first) and bare data sets without preamble and meta (the encoding is guessed as
    pydicom does; one stray pad byte left over from a stripped meta group is skipped). Every
    failure is a :class:`~ctlake.errors.DicomError` whose ``code`` is one of

    ``NOT_DICOM``       neither ``DICM`` nor a recognisable first data element
    ``TRUNCATED``       the bytes end inside an element, a sequence or the deflate stream, or
                        nothing follows the file meta
    ``BAD_HEADER``      the element structure cannot be parsed (the parser error is quoted)
    ``FILE_UNREADABLE`` (file variant) the path cannot be opened or read

Decoding (:func:`decode_frames`, :func:`hounsfield`, :func:`frame_geometry`)
    Every transfer syntax pydicom 3.0 has a decoder for when pylibjpeg, -libjpeg, -openjpeg and
    -rle are installed: implicit/explicit VR little endian, explicit VR big endian, deflated,
    RLE, JPEG baseline/extended/lossless (process 14, SV1), JPEG-LS lossless/near-lossless,
    JPEG 2000 (lossless and lossy) and HTJ2K. Codes:

    ``MISSING_PIXEL_DATA``          no (or empty) Pixel Data / Float / Double Float Pixel Data
    ``MISSING_ATTRIBUTE``           an Image Pixel attribute needed to decode is absent
    ``BAD_VALUE``                   an attribute is present but unusable (e.g. Number of Frames '1A')
    ``UNSUPPORTED_TRANSFER_SYNTAX`` no decoder for the syntax (MPEG, JPEG XL, private UIDs, ...),
                                    a codec that is not installed, or encapsulated pixel data
                                    without a transfer syntax to say which codec
    ``TRUNCATED``                   native pixel data shorter than rows x columns x frames needs
    ``PIXELS_TOO_LARGE``            the decoded array would exceed ``max_decoded_bytes``
    ``PIXEL_DECODE_FAILED``         the codec failed; the message names the syntax and the error
    ``NOT_MONOCHROME``              (hounsfield) colour data has no Hounsfield units

Axis order: pixel arrays are frames first, ``(frames, rows, cols)`` = ``(z, y, x)`` for an axial
stack; patient coordinates (Image Position Patient) stay DICOM's ``(x, y, z)`` and say so in
their names.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import UID

from ctlake.errors import DicomError

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "ENHANCED_CT_IMAGE_STORAGE",
    "FrameGeometry",
    "decode_frames",
    "frame_geometry",
    "hounsfield",
    "is_enhanced",
    "number_of_frames",
    "parse_dicom",
    "read_dicom_file",
    "transfer_syntax_of",
]

#: Refuse to allocate more than this for one decoded instance (4 GiB); a corrupt Rows/Columns/
#: Number of Frames must not take a worker down.
DEFAULT_MAX_DECODED_BYTES = 4 * 1024**3
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: First element groups a bare (no preamble, no meta) data set plausibly starts with:
#: command (0000), file meta (0002), directory (0004), then identifying/patient/study/image groups.
_FIRST_GROUPS = frozenset({0x0000, 0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})
_VALID_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class _TrackedStream:
    """A read/seek/tell wrapper that notices what a truncated input looks like to pydicom:
    a partial element header (a short read of at most 12 bytes that is not empty) or a seek
    past the end (a deferred value that is not there)."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw = raw
        self.size = size
        self.partial_header = False
        self.seek_past_end = False

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(size)
        if size is not None and 0 < len(data) < size <= 12:
            self.partial_header = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self._raw.seek(offset, whence)
        if pos > self.size:
            self.seek_past_end = True
        return pos

    def tell(self) -> int:
        return self._raw.tell()

    @property
    def closed(self) -> bool:
        return bool(getattr(self._raw, "closed", False))


def _looks_like_element(data: bytes, offset: int) -> bool:
    """True when ``data[offset:]`` starts with a plausible first data element (little endian,
    implicit or explicit VR, or explicit VR big endian)."""
    head = data[offset : offset + 8]
    if len(head) < 8:
        return False
    group_le, elem_le = struct.unpack("<HH", head[:4])
    group_be = struct.unpack(">H", head[:2])[0]
    vr = head[4:6]
    if group_le in _FIRST_GROUPS:
        length = struct.unpack("<L", head[4:8])[0]
        if group_le == 0 and elem_le == 0:  # (0000,0000) Command Group Length: UL, 4 bytes
            return (vr == b"UL" and head[6:8] == b"\x04\x00") or length == 4
        if vr in _VALID_VRS:
            return True
        return elem_le != 0xFFFF and length <= len(data) - offset - 8
    return group_be in _FIRST_GROUPS and group_be != 0x0002 and vr in _VALID_VRS


def _part10_bytes(data: bytes) -> tuple[bytes, bool]:
    """Return Part 10 bytes (preamble + DICM ...) and whether a preamble was synthesised.

    Raises NOT_DICOM when ``data`` is neither Part 10 nor a bare data set."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data, False
    if data[:4] == b"DICM":  # preamble stripped, meta kept
        return bytes(128) + data, True
    for offset in (0, 1):
        # offset 1: the odd pad byte of a meta group cut off by its (even) group length
        if offset == 1 and data[:1] not in (b"\x00", b" "):
            break
        if _looks_like_element(data, offset):
            return bytes(128) + b"DICM" + data[offset:], True
    raise DicomError(
        f"not DICOM: no 'DICM' marker at byte 128 or 0 and no recognisable first data element "
        f"({len(data)} bytes, starting {data[:8].hex() or 'empty'})",
        code="NOT_DICOM",
        hint="send Part 10 files (PS3.10) or bare data sets in a standard transfer syntax",
    )


def _value_truncated(ds: Dataset, size: int | None, depth: int = 0) -> str | None:
    """Name the first element whose value extends past the end of the input, else None."""
    if depth > 64:
        return None
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            if elem.length == _UNDEFINED_LENGTH:
                continue
            if elem.value is None:
                if elem.length and size is not None and elem.value_tell + elem.length > size:
                    return f"{elem.tag} ({elem.length} bytes from offset {elem.value_tell}, input ends at {size})"
            elif len(elem.value) < elem.length:
                return f"{elem.tag} (length {elem.length}, {len(elem.value)} bytes present)"
        elif isinstance(elem, DataElement) and elem.VR == "SQ" and isinstance(elem.value, Sequence):
            for item in elem.value:
                if isinstance(item, Dataset):
                    found = _value_truncated(item, size, depth + 1)
                    if found:
                        return found
    return None


def _parse(stream: _TrackedStream, *, defer_size: int | None, stop_before_pixels: bool, source: str) -> FileDataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(
                stream,  # type: ignore[arg-type]
                defer_size=defer_size,
                stop_before_pixels=stop_before_pixels,
                force=False,
            )
        except DicomError:
            raise
        except zlib.error as exc:
            code = "TRUNCATED" if "truncated" in str(exc) or "incomplete" in str(exc) else "BAD_HEADER"
            raise DicomError(
                f"{source}: deflated data set cannot be inflated: {exc}",
                code=code,
                hint="the file was cut short or is not deflate-encoded despite its transfer syntax",
            ) from exc
        except Exception as exc:
            truncated = (
                stream.partial_header
                or stream.seek_past_end
                or isinstance(exc, EOFError)
                or "No tag to read" in str(exc)
                or (isinstance(exc, struct.error) and stream.tell() >= stream.size)
            )
            raise DicomError(
                f"{source}: cannot parse the data set: {type(exc).__name__}: {exc}",
                code="TRUNCATED" if truncated else "BAD_HEADER",
                hint="the file is cut short" if truncated else "the element structure is corrupt; quarantine it",
            ) from exc
    eof = [str(w.message) for w in caught if "End of file" in str(w.message) or "EOF" in str(w.message)]
    if eof or stream.partial_header or stream.seek_past_end:
        why = eof[0] if eof else "the input ends inside an element"
        raise DicomError(f"{source}: truncated: {why}", code="TRUNCATED", hint="the file is cut short")
    deflated = str(ds.file_meta.get("TransferSyntaxUID", "")) == pydicom.uid.DeflatedExplicitVRLittleEndian
    try:
        short = _value_truncated(ds, None if deflated else stream.size)
    except Exception as exc:  # a nested item that cannot be walked is a parse failure too
        raise DicomError(f"{source}: cannot walk the data set: {exc}", code="BAD_HEADER") from exc
    if short:
        raise DicomError(f"{source}: truncated: element {short}", code="TRUNCATED", hint="the file is cut short")
    if len(ds) == 0:
        raise DicomError(
            f"{source}: no data set elements after the file meta information",
            code="TRUNCATED",
            hint="the file is cut short after its header",
        )
    return ds


def parse_dicom(
    data: bytes | bytearray | memoryview,
    *,
    defer_size: int | None = None,
    stop_before_pixels: bool = False,
) -> FileDataset:
    """Parse DICOM ``data`` (Part 10, preamble stripped, or a bare data set) into a Dataset.

    defer_size: values longer than this many bytes are read only when accessed (from the same
        in-memory buffer); None reads everything now.
    stop_before_pixels: stop at Pixel Data (header only; :func:`decode_frames` will then raise
        MISSING_PIXEL_DATA).

    ``ds.preamble`` is None when the input had none. Raises DicomError NOT_DICOM, TRUNCATED or
    BAD_HEADER; never any other exception for bad input. A file cut exactly between two
    elements is a shorter valid data set and cannot be told from one (it parses; a missing
    Pixel Data then shows in :func:`decode_frames`). With ``stop_before_pixels`` a file cut
    inside its pixel data still gives its header.

    pydicom's parser warnings are captured (``warnings.catch_warnings``, which is process-wide
    state: call from one thread at a time per process, as Spark's Python workers do).
    """
    return _parse_bytes(bytes(data), defer_size=defer_size, stop_before_pixels=stop_before_pixels, source="bytes")


def _parse_bytes(raw: bytes, *, defer_size: int | None, stop_before_pixels: bool, source: str) -> FileDataset:
    part10, synthesised = _part10_bytes(raw)
    stream = _TrackedStream(io.BytesIO(part10), len(part10))
    ds = _parse(stream, defer_size=defer_size, stop_before_pixels=stop_before_pixels, source=source)
    if synthesised:
        ds.preamble = None
    return ds


def read_dicom_file(
    path: str | os.PathLike[str],
    *,
    defer_size: int | None = None,
    stop_before_pixels: bool = False,
) -> FileDataset:
    """:func:`parse_dicom` for a file. With ``defer_size`` the large values stay on disk and are
    read (by path) when accessed. Raises DicomError FILE_UNREADABLE when the file cannot be
    opened, else the codes of :func:`parse_dicom`."""
    name = os.fspath(path)
    try:
        fh = open(name, "rb")  # noqa: SIM115 - closed below; the dataset keeps only the path
    except OSError as exc:
        raise DicomError(f"{name}: cannot open: {exc}", code="FILE_UNREADABLE") from exc
    options: dict[str, Any] = {"defer_size": defer_size, "stop_before_pixels": stop_before_pixels, "source": name}
    try:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(132)
        part10 = len(head) == 132 and head[128:132] == b"DICM"
        if part10:
            fh.seek(0)
            ds = _parse(_TrackedStream(fh, size), **options)
        else:  # no preamble: parsed from memory behind a synthesised one
            ds = _parse_bytes(head + fh.read(), **options)
    except OSError as exc:
        raise DicomError(f"{name}: cannot read: {exc}", code="FILE_UNREADABLE") from exc
    finally:
        fh.close()
    if part10 and isinstance(ds.buffer, _TrackedStream):
        # deferred values are read again by path, not through the closed handle (a deflated
        # data set was inflated into memory and keeps that buffer: offsets refer to it)
        ds.filename = name
        ds.buffer = None
        ds.fileobj_type = open
        ds.timestamp = os.stat(name).st_mtime
    return ds


# --------------------------------------------------------------------------------------------
# Attribute helpers
# --------------------------------------------------------------------------------------------
def _element(ds: Dataset, keyword: str) -> DataElement | None:
    """The converted element or None when absent; BAD_VALUE when pydicom cannot convert it."""
    try:
        if keyword not in ds:
            return None
        return ds[keyword]
    except DicomError:
        raise
    except Exception as exc:
        raise DicomError(f"{keyword}: cannot read the value: {type(exc).__name__}: {exc}", code="BAD_VALUE") from exc


def _values(elem: DataElement | None) -> list[Any]:
    if elem is None or elem.value is None:
        return []
    value = elem.value
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return [] if value == "" else [value]
    return list(value)


def _to_int(value: Any, keyword: str) -> int:
    try:
        if isinstance(value, bytes | bytearray):
            raise ValueError("binary value")
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            number = float(text)
            if not number.is_integer():
                raise
            return int(number)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DicomError(f"{keyword}: {value!r} is not an integer", code="BAD_VALUE") from exc


def _to_float(value: Any, keyword: str) -> float:
    try:
        if isinstance(value, bytes | bytearray):
            raise ValueError("binary value")
        number = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DicomError(f"{keyword}: {value!r} is not a number", code="BAD_VALUE") from exc
    if not math.isfinite(number):
        raise DicomError(f"{keyword}: {value!r} is not a finite number", code="BAD_VALUE")
    return number


def _int_attr(ds: Dataset, keyword: str, *, default: int | None = None) -> int | None:
    values = _values(_element(ds, keyword))
    if not values:
        return default
    if len(values) != 1:
        raise DicomError(f"{keyword}: expected one value, found {len(values)}", code="BAD_VALUE")
    return _to_int(values[0], keyword)


def _floats(ds: Dataset, keyword: str, count: int | None) -> tuple[float, ...] | None:
    values = _values(_element(ds, keyword))
    if not values:
        return None
    if count is not None and len(values) != count:
        raise DicomError(f"{keyword}: expected {count} values, found {len(values)}", code="BAD_VALUE")
    return tuple(_to_float(v, keyword) for v in values)


def _float_attr(ds: Dataset, keyword: str) -> float | None:
    values = _floats(ds, keyword, 1)
    return None if values is None else values[0]


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames, 1 when absent or empty; BAD_VALUE when it is not a positive integer."""
    frames = _int_attr(ds, "NumberOfFrames", default=1)
    assert frames is not None
    if frames < 1:
        raise DicomError(f"NumberOfFrames: {frames} must be >= 1", code="BAD_VALUE")
    return frames


def is_enhanced(ds: Dataset) -> bool:
    """True for an enhanced (functional-group) multi-frame instance."""
    try:
        return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    except Exception:
        return False


def transfer_syntax_of(ds: Dataset) -> str | None:
    """The file meta Transfer Syntax UID, else the native syntax the data set was read in
    (implicit/explicit little endian, explicit big endian); None for a data set built in memory."""
    meta = getattr(ds, "file_meta", None)
    try:
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
    except Exception:  # a corrupt meta value: fall back to the encoding actually read
        ts = None
    if ts:
        return str(ts).strip()
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    if implicit:
        return str(pydicom.uid.ImplicitVRLittleEndian)
    return str(pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PixelInfo:
    keyword: str
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int

    @property
    def expected_bytes(self) -> int:
        bits = self.rows * self.columns * self.frames * self.samples * self.bits_allocated
        return (bits + 7) // 8


def _pixel_info(ds: Dataset, keyword: str) -> _PixelInfo:
    def required(kw: str) -> int:
        value = _int_attr(ds, kw)
        if value is None:
            raise DicomError(
                f"{kw} is missing; pixel data cannot be decoded without it",
                code="MISSING_ATTRIBUTE",
                hint="the Image Pixel module is incomplete",
            )
        return value

    rows, columns = required("Rows"), required("Columns")
    bits_allocated = required("BitsAllocated")
    is_float = keyword != "PixelData"
    bits_stored = bits_allocated if is_float else required("BitsStored")
    pixel_representation = 0 if is_float else required("PixelRepresentation")
    samples = _int_attr(ds, "SamplesPerPixel", default=1) or 1
    planar = _int_attr(ds, "PlanarConfiguration", default=0) or 0
    photometric_values = _values(_element(ds, "PhotometricInterpretation"))
    if not photometric_values:
        raise DicomError("PhotometricInterpretation is missing", code="MISSING_ATTRIBUTE")
    photometric = str(photometric_values[0]).strip()
    frames = number_of_frames(ds)
    problems = []
    if not (0 < rows <= 0xFFFF and 0 < columns <= 0xFFFF):
        problems.append(f"Rows x Columns {rows} x {columns}")
    if bits_allocated not in (1, 8, 16, 32, 64):
        problems.append(f"BitsAllocated {bits_allocated}")
    if not 1 <= bits_stored <= bits_allocated:
        problems.append(f"BitsStored {bits_stored} (BitsAllocated {bits_allocated})")
    if pixel_representation not in (0, 1):
        problems.append(f"PixelRepresentation {pixel_representation}")
    if samples not in (1, 3, 4):
        problems.append(f"SamplesPerPixel {samples}")
    if planar not in (0, 1):
        problems.append(f"PlanarConfiguration {planar}")
    if problems:
        raise DicomError("invalid Image Pixel attributes: " + ", ".join(problems), code="BAD_VALUE")
    return _PixelInfo(
        keyword, rows, columns, frames, samples, bits_allocated, bits_stored, pixel_representation, photometric, planar
    )


def decode_frames(ds: Dataset, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> np.ndarray:
    """Stored pixel values, frames first: ``(frames, rows, cols)``, or ``(frames, rows, cols,
    samples)`` for colour, in native byte order (no rescale, no colour-space conversion).

    A single-frame instance gives one frame. The dtype follows Bits Allocated and Pixel
    Representation (e.g. int16 for signed 16-bit CT); JPEG 2000 / JPEG-LS sign handling is
    pydicom's. Raises DicomError with the codes listed in the module docstring.
    """
    present = [kw for kw in _PIXEL_KEYWORDS if _has(ds, kw)]
    if not present:
        raise DicomError(
            "no Pixel Data, Float Pixel Data or Double Float Pixel Data element",
            code="MISSING_PIXEL_DATA",
            hint="the instance has no image (or was read with stop_before_pixels)",
        )
    if len(present) > 1:
        raise DicomError(f"more than one pixel data element: {', '.join(present)}", code="BAD_VALUE")
    keyword = present[0]
    ts = transfer_syntax_of(ds)
    raw = ds.get_item(keyword, keep_deferred=True)
    undefined_length = getattr(raw, "length", None) == _UNDEFINED_LENGTH or getattr(raw, "is_undefined_length", False)
    if ts is None:
        ts = str(pydicom.uid.ExplicitVRLittleEndian)
    uid = UID(ts)
    if not uid.is_transfer_syntax or (undefined_length and not uid.is_encapsulated):
        detail = "no transfer syntax for encapsulated pixel data" if undefined_length else f"unknown UID {ts!r}"
        raise DicomError(
            f"cannot tell how the pixel data is encoded: {detail}",
            code="UNSUPPORTED_TRANSFER_SYNTAX",
            hint="the file meta Transfer Syntax UID is missing or wrong",
        )
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError as exc:
        raise DicomError(
            f"no pixel decoder for transfer syntax {uid.name} ({uid})",
            code="UNSUPPORTED_TRANSFER_SYNTAX",
            hint="transcode the instance to a standard image syntax at the edge",
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise DicomError(
            f"the decoder for {uid.name} ({uid}) is not installed: {missing}",
            code="UNSUPPORTED_TRANSFER_SYNTAX",
            hint="install the pylibjpeg codecs listed in DESIGN §3",
        )
    info = _pixel_info(ds, keyword)
    if info.expected_bytes > max_decoded_bytes:
        raise DicomError(
            f"{info.frames} frame(s) of {info.rows} x {info.columns} x {info.samples} at "
            f"{info.bits_allocated} bits = {info.expected_bytes} bytes > limit {max_decoded_bytes}",
            code="PIXELS_TOO_LARGE",
        )
    elem = _element(ds, keyword)
    value = elem.value if elem is not None else None
    if not value:
        raise DicomError(f"{keyword} is empty", code="MISSING_PIXEL_DATA")
    if not uid.is_encapsulated and len(value) < info.expected_bytes:
        raise DicomError(
            f"{keyword} has {len(value)} bytes, {info.frames} frame(s) of {info.rows} x {info.columns} x "
            f"{info.samples} at {info.bits_allocated} bits need {info.expected_bytes}",
            code="TRUNCATED",
            hint="the pixel data was cut short, or Rows/Columns/Number of Frames are wrong",
        )
    options: dict[str, Any] = {
        "rows": info.rows,
        "columns": info.columns,
        "number_of_frames": info.frames,
        "samples_per_pixel": info.samples,
        "planar_configuration": info.planar_configuration,
        "bits_allocated": info.bits_allocated,
        "bits_stored": info.bits_stored,
        "pixel_representation": info.pixel_representation,
        "photometric_interpretation": info.photometric,
        "pixel_keyword": keyword,
        "pixel_vr": elem.VR if elem is not None else "OW",
        "allow_excess_frames": False,
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = decoder.as_array(value, raw=True, **options)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # also a codec's Rust panic (pyo3 PanicException is a BaseException)
        raise DicomError(
            f"cannot decode {keyword} in {uid.name} ({uid}): {type(exc).__name__}: {exc}",
            code="PIXEL_DECODE_FAILED",
            hint="the compressed stream is corrupt or does not match the Image Pixel attributes",
        ) from exc
    shape = (info.frames, info.rows, info.columns) + ((info.samples,) if info.samples > 1 else ())
    try:
        arr = np.asarray(arr).reshape(shape)
    except ValueError as exc:
        raise DicomError(
            f"decoded {np.asarray(arr).shape} does not fit {shape} ({uid.name})", code="PIXEL_DECODE_FAILED"
        ) from exc
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _has(ds: Dataset, keyword: str) -> bool:
    try:
        return keyword in ds
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# Geometry and Hounsfield units
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameGeometry:
    """Where one frame lies and how its stored values map to modality units.

    index: 0-based frame number.
    position_xyz_mm: Image Position (Patient), centre of the first transmitted pixel, patient
        (x, y, z) in mm; None when absent (and for frames > 0 of a classic multi-frame, whose
        header has one position only).
    orientation: Image Orientation (Patient), the row then the column direction cosines (6).
    pixel_spacing_yx_mm: Pixel Spacing (row spacing = y step between rows, column spacing = x
        step between columns) in mm.
    slice_thickness_mm: Slice Thickness in mm.
    rescale_slope, rescale_intercept: modality value = stored x slope + intercept; 1 and 0
        when the header has none (as pydicom's modality LUT does).
    """

    index: int
    position_xyz_mm: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing_yx_mm: tuple[float, float] | None
    slice_thickness_mm: float | None
    rescale_slope: float
    rescale_intercept: float


def _macro_item(groups: Dataset | None, sequence: str) -> Dataset | None:
    if groups is None:
        return None
    items = _values(_element(groups, sequence))
    if not items:
        return None
    if not isinstance(items[0], Dataset):
        raise DicomError(f"{sequence}: not a sequence", code="BAD_VALUE")
    return items[0]


def _from_groups(per_frame: Dataset | None, shared: Dataset | None, fallback: Dataset, sequence: str) -> Dataset:
    """The functional group macro item for one frame: per-frame, else shared, else the top
    level (some converters put the attributes there)."""
    return _macro_item(per_frame, sequence) or _macro_item(shared, sequence) or fallback


def _geometry_of(
    index: int, src_pos: Dataset, src_ori: Dataset, src_px: Dataset, src_rescale: Dataset
) -> FrameGeometry:
    position = _floats(src_pos, "ImagePositionPatient", 3)
    orientation = _floats(src_ori, "ImageOrientationPatient", 6)
    spacing = _floats(src_px, "PixelSpacing", 2)
    if spacing is not None and min(spacing) <= 0:
        raise DicomError(f"PixelSpacing {spacing} must be > 0", code="BAD_VALUE")
    slope = _float_attr(src_rescale, "RescaleSlope")
    intercept = _float_attr(src_rescale, "RescaleIntercept")
    return FrameGeometry(
        index=index,
        position_xyz_mm=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing_yx_mm=spacing,  # type: ignore[arg-type]
        slice_thickness_mm=_float_attr(src_px, "SliceThickness"),
        rescale_slope=1.0 if slope is None else slope,
        rescale_intercept=0.0 if intercept is None else intercept,
    )


def frame_geometry(ds: Dataset) -> list[FrameGeometry]:
    """One :class:`FrameGeometry` per frame.

    Classic instances use the top-level attributes. Enhanced multi-frame instances (Per-frame /
    Shared Functional Groups) take Plane Position, Plane Orientation, Pixel Measures and Pixel
    Value Transformation from the frame's per-frame item, else the shared item, else the top
    level. Raises DicomError BAD_VALUE for unusable values (wrong count, not a number) and when
    the per-frame sequence does not have Number of Frames items.
    """
    try:
        frames = number_of_frames(ds)
        if not is_enhanced(ds):
            first = _geometry_of(0, ds, ds, ds, ds)
            rest = [FrameGeometry(i, None, *(getattr(first, f) for f in _CLASSIC_SHARED)) for i in range(1, frames)]
            return [first, *rest]
        shared = _macro_item(ds, "SharedFunctionalGroupsSequence")
        per_frame_items = _values(_element(ds, "PerFrameFunctionalGroupsSequence"))
        if per_frame_items and len(per_frame_items) != frames:
            raise DicomError(
                f"PerFrameFunctionalGroupsSequence has {len(per_frame_items)} items for {frames} frames",
                code="BAD_VALUE",
            )
        out = []
        for i in range(frames):
            per = per_frame_items[i] if per_frame_items else None
            if per is not None and not isinstance(per, Dataset):
                raise DicomError("PerFrameFunctionalGroupsSequence: not a sequence", code="BAD_VALUE")
            out.append(
                _geometry_of(
                    i,
                    _from_groups(per, shared, ds, "PlanePositionSequence"),
                    _from_groups(per, shared, ds, "PlaneOrientationSequence"),
                    _from_groups(per, shared, ds, "PixelMeasuresSequence"),
                    _from_groups(per, shared, ds, "PixelValueTransformationSequence"),
                )
            )
        return out
    except DicomError:
        raise
    except Exception as exc:  # pydicom raising on a corrupt nested item
        raise DicomError(f"cannot read the frame geometry: {type(exc).__name__}: {exc}", code="BAD_VALUE") from exc


_CLASSIC_SHARED = ("orientation", "pixel_spacing_yx_mm", "slice_thickness_mm", "rescale_slope", "rescale_intercept")


def hounsfield(ds: Dataset, *, frames: np.ndarray | None = None) -> np.ndarray:
    r"""Modality values (Hounsfield units for CT) as float32 ``(frames, y, x)``.

    HU[f] = stored[f] * RescaleSlope[f] + RescaleIntercept[f], with slope and intercept per
    frame for enhanced CT (see :func:`frame_geometry`). ``frames``: already decoded stored
    values from :func:`decode_frames` (decoded here when None). Raises NOT_MONOCHROME for colour
    data, UNSUPPORTED_TRANSFER_SYNTAX / ... as :func:`decode_frames`, BAD_VALUE for unusable
    rescale values.
    """
    stored = decode_frames(ds) if frames is None else frames
    if stored.ndim != 3:
        raise DicomError(f"pixel array of shape {stored.shape} is not monochrome (frames, y, x)", code="NOT_MONOCHROME")
    try:
        has_lut = "ModalityLUTSequence" in ds and "RescaleSlope" not in ds
    except Exception:
        has_lut = False
    if has_lut:
        raise DicomError(
            "the instance uses a Modality LUT Sequence instead of Rescale Slope/Intercept",
            code="UNSUPPORTED_MODALITY_LUT",
        )
    geometry = frame_geometry(ds)
    if len(geometry) != stored.shape[0]:
        raise DicomError(f"{stored.shape[0]} frames decoded, {len(geometry)} described", code="BAD_VALUE")
    slopes = np.array([g.rescale_slope for g in geometry], dtype=np.float32)[:, None, None]
    intercepts = np.array([g.rescale_intercept for g in geometry], dtype=np.float32)[:, None, None]
    out = stored.astype(np.float32)
    out *= slopes
    out += intercepts
    return out
