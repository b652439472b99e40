"""DICOM Part 10 writing for synthetic series (pydicom 3.0; pylibjpeg codecs for compression).

Everything here is deterministic: no clocks, no random UIDs (``Dataset.compress`` is always
called with ``generate_instance_uid=False``), randomness only from a passed-in Generator.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import uid as _uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence

from ctlake.synth.phantom import HU_MAX, HU_MIN, Geometry

CT_IMAGE_STORAGE = str(_uid.CTImageStorage)
MR_IMAGE_STORAGE = str(_uid.MRImageStorage)
SECONDARY_CAPTURE_STORAGE = str(_uid.SecondaryCaptureImageStorage)

EXPLICIT_VR_LITTLE_ENDIAN = str(_uid.ExplicitVRLittleEndian)
IMPLICIT_VR_LITTLE_ENDIAN = str(_uid.ImplicitVRLittleEndian)
EXPLICIT_VR_BIG_ENDIAN = str(_uid.ExplicitVRBigEndian)
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = str(_uid.DeflatedExplicitVRLittleEndian)
RLE_LOSSLESS = str(_uid.RLELossless)
JPEG2000_LOSSLESS = str(_uid.JPEG2000Lossless)

UNCOMPRESSED_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
#: What `compressed` series may use. JPEG-LS needs pyjpegls and JPEG Lossless (process 14) has
#: no pydicom 3.0 encoder, so neither is offered.
COMPRESSED_SYNTAXES = (
    RLE_LOSSLESS,
    JPEG2000_LOSSLESS,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
_ENCAPSULATED = (RLE_LOSSLESS, JPEG2000_LOSSLESS)

UID_ROOT = "2.25."
_UID_NAMESPACE = uuid.UUID("6f1c7d52-3c1e-5b0a-9d7e-7f7a1c2b9e01")
IMPLEMENTATION_CLASS_UID = "2.25.238622406375431640914335447016458373634"
IMPLEMENTATION_VERSION = "CTLAKE_SYNTH_1"
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def synthetic_uid(*parts: object) -> str:
    """A deterministic UID ``2.25.<128-bit int>`` (ISO/IEC 9834-8 UUID form) from ``parts``:
    a name-based UUID (uuid5, fixed namespace) of the parts joined by '|'."""
    return UID_ROOT + str(uuid.uuid5(_UID_NAMESPACE, "|".join(str(p) for p in parts)).int)


def syntax_support() -> dict[str, str]:
    """Which of COMPRESSED_SYNTAXES can be written here: UID -> 'ok' or the missing dependency."""
    from pydicom.pixels import get_encoder

    out: dict[str, str] = {}
    for ts in COMPRESSED_SYNTAXES:
        if ts in _ENCAPSULATED:
            enc = get_encoder(ts)
            out[ts] = "ok" if enc.is_available else "missing: " + "; ".join(enc.missing_dependencies)
        else:
            out[ts] = "ok"  # the writer handles deflate and byte order itself
    return out


def _encoding_plugin(ts: str) -> str:
    from pydicom.pixels import get_encoder

    enc = get_encoder(ts)
    return "pylibjpeg" if "pylibjpeg" in enc.available_plugins else ""


# --------------------------------------------------------------------------------------------
# Scanner profiles
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scanner:
    """A vendor's CT line: models, reconstruction kernels (name -> sharpness) and pixel format."""

    manufacturer: str
    models: tuple[str, ...]
    kernels: tuple[tuple[str, str], ...]
    pixel_representation: int  # 0 unsigned (BitsStored 12), 1 signed (BitsStored 16)


SCANNERS: dict[str, Scanner] = {
    s.manufacturer: s
    for s in (
        Scanner(
            "SIEMENS",
            ("SOMATOM Definition AS+", "SOMATOM Force", "Sensation 64"),
            (("B30f", "soft"), ("B45f", "medium"), ("B70f", "sharp"), ("I30f", "soft"), ("Br40d", "medium")),
            0,
        ),
        Scanner(
            "GE MEDICAL SYSTEMS",
            ("LightSpeed VCT", "Revolution CT", "Discovery CT750 HD"),
            (("STANDARD", "soft"), ("SOFT", "soft"), ("LUNG", "sharp"), ("BONE", "sharp")),
            1,
        ),
        Scanner(
            "Philips",
            ("Brilliance 64", "iCT 256", "IQon - Spectral CT"),
            (("B", "soft"), ("C", "medium"), ("L", "sharp"), ("YA", "sharp")),
            0,
        ),
        Scanner(
            "TOSHIBA",
            ("Aquilion ONE", "Aquilion PRIME", "Aquilion 64"),
            (("FC01", "soft"), ("FC13", "soft"), ("FC51", "sharp"), ("FC52", "sharp")),
            1,
        ),
    )
}

#: Image noise (HU, standard deviation) and in-plane blur (mm) per kernel sharpness.
KERNEL_NOISE_SD_HU = {"soft": 12.0, "medium": 20.0, "sharp": 32.0}
KERNEL_BLUR_SD_MM = {"soft": 0.7, "medium": 0.45, "sharp": 0.25}


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhiValue:
    """One planted PHI value and where it is: a keyword, ``Seq[0].Keyword`` or a private tag
    ``(gggg,eeee) CREATOR``."""

    path: str
    value: str


@dataclass(frozen=True)
class SeriesHeader:
    """The per-series DICOM header values shared by every slice of a series."""

    patient_id: str
    patient_name: str
    patient_sex: str
    patient_age: str
    patient_birth_date: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_time: str
    accession_number: str
    series_number: int
    manufacturer: str
    model: str
    kernel: str
    kvp: int
    tube_current_ma: int
    pixel_representation: int
    slice_thickness_mm: float
    fov_mm: float
    gantry_tilt_deg: float
    window_center: int
    window_width: int
    burned_in_annotation: bool = False
    phi: tuple[PhiValue, ...] = ()

    @property
    def bits_stored(self) -> int:
        return 16 if self.pixel_representation else 12


def hu_to_stored(hu: np.ndarray, pixel_representation: int) -> np.ndarray:
    """Stored value = HU + 1024 (RescaleIntercept -1024, slope 1), HU clipped to [-1024, 3071];
    uint16 for PixelRepresentation 0 (BitsStored 12), int16 for 1 (BitsStored 16)."""
    stored = np.clip(hu, int(HU_MIN), int(HU_MAX)).astype(np.int16, copy=False)
    stored += 1024  # 0..4095 fits both int16 and uint16
    return stored if pixel_representation else stored.view(np.uint16)


def _ds(v: float) -> str:
    """A DS string (<= 16 chars) for a coordinate already rounded to 4 decimals."""
    s = repr(float(round(float(v), 4)) + 0.0)
    return s[:-2] if s.endswith(".0") else s


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _common(ds: Dataset, h: SeriesHeader, modality: str, sop_class: str, sop_uid: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = h.study_date
    ds.SeriesDate = h.study_date
    ds.AcquisitionDate = h.study_date
    ds.ContentDate = h.study_date
    ds.StudyTime = h.study_time
    ds.SeriesTime = h.study_time
    ds.AccessionNumber = h.accession_number
    ds.Modality = modality
    ds.Manufacturer = h.manufacturer
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CT CHEST"
    ds.ManufacturerModelName = h.model
    ds.PatientName = h.patient_name
    ds.PatientID = h.patient_id
    ds.PatientBirthDate = h.patient_birth_date
    ds.PatientSex = h.patient_sex
    ds.PatientAge = h.patient_age
    ds.StudyInstanceUID = h.study_uid
    ds.StudyID = "1"
    ds.BurnedInAnnotation = "YES" if h.burned_in_annotation else "NO"


def ct_slice_dataset(
    h: SeriesHeader,
    geometry: Geometry,
    slice_index: int,
    stored_yx: np.ndarray,
    *,
    sop_uid: str,
    instance_number: int,
) -> Dataset:
    """One CT Image Storage instance (uncompressed, little endian) for slice ``slice_index``."""
    ds = Dataset()
    ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_uid)
    _common(ds, h, "CT", CT_IMAGE_STORAGE, sop_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesInstanceUID = h.series_uid
    ds.SeriesNumber = h.series_number
    ds.SeriesDescription = f"CHEST {h.slice_thickness_mm:g}mm {h.kernel}"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = _ds(h.slice_thickness_mm)
    ds.SpacingBetweenSlices = _ds(geometry.spacing_zyx_mm[0])
    ds.KVP = str(h.kvp)
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = _ds(h.fov_mm)
    ds.GantryDetectorTilt = _ds(h.gantry_tilt_deg)
    ds.TableHeight = "150"
    ds.XRayTubeCurrent = h.tube_current_ma
    ds.ConvolutionKernel = h.kernel
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [_ds(v) for v in geometry.image_position_xyz_mm(slice_index)]
    ds.ImageOrientationPatient = [_ds(v) for v in AXIAL_ORIENTATION]
    ds.FrameOfReferenceUID = h.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(geometry.slice_z_mm[slice_index])
    _pixel_module(ds, stored_yx, geometry, h.pixel_representation)
    ds.WindowCenter = str(h.window_center)
    ds.WindowWidth = str(h.window_width)
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    _plant_phi(ds, h.phi)
    return ds


def _pixel_module(ds: Dataset, pixels: np.ndarray, geometry: Geometry | None, pixel_representation: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    if geometry is not None:
        ds.PixelSpacing = [_ds(geometry.spacing_zyx_mm[1]), _ds(geometry.spacing_zyx_mm[2])]
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = 8 if pixels.dtype == np.uint8 else (16 if pixel_representation else 12)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = pixel_representation
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def mr_slice_dataset(
    h: SeriesHeader,
    geometry: Geometry,
    slice_index: int,
    pixels_yx: np.ndarray,
    *,
    sop_uid: str,
    instance_number: int,
) -> Dataset:
    """An MR Image Storage instance (Modality MR, 12-bit unsigned, no rescale) on a CT grid."""
    ds = Dataset()
    ds.file_meta = _file_meta(MR_IMAGE_STORAGE, sop_uid)
    _common(ds, h, "MR", MR_IMAGE_STORAGE, sop_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SeriesInstanceUID = h.series_uid
    ds.SeriesNumber = h.series_number
    ds.SeriesDescription = "T1 SE AX THORAX"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = _ds(geometry.spacing_zyx_mm[0])
    ds.RepetitionTime = "500"
    ds.EchoTime = "15"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "1.5"
    ds.ImagingFrequency = "63.87"
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [_ds(v) for v in geometry.image_position_xyz_mm(slice_index)]
    ds.ImageOrientationPatient = [_ds(v) for v in AXIAL_ORIENTATION]
    ds.FrameOfReferenceUID = h.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    _pixel_module(ds, pixels_yx.astype(np.uint16), geometry, 0)
    return ds


def sc_dataset(h: SeriesHeader, pixels_yx: np.ndarray, *, sop_uid: str) -> Dataset:
    """A Secondary Capture Image Storage instance that claims Modality CT (a console screenshot):
    8-bit MONOCHROME2, no geometry, no rescale."""
    ds = Dataset()
    ds.file_meta = _file_meta(SECONDARY_CAPTURE_STORAGE, sop_uid)
    _common(ds, h, "CT", SECONDARY_CAPTURE_STORAGE, sop_uid)
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.SeriesInstanceUID = h.series_uid
    ds.SeriesNumber = h.series_number
    ds.SeriesDescription = "SCREEN CAPTURE"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    _pixel_module(ds, pixels_yx.astype(np.uint8), None, 0)
    return ds


# --------------------------------------------------------------------------------------------
# Writing and encoding
# --------------------------------------------------------------------------------------------
def write_dataset(ds: Dataset, path: Path, transfer_syntax: str) -> int:
    """Write ``ds`` (uncompressed little-endian PixelData) as a Part 10 file in ``transfer_syntax``.

    RLE Lossless and JPEG 2000 Lossless are encoded by pydicom (pylibjpeg plugins when present);
    Deflated and the two uncompressed little-endian syntaxes are handled by dcmwrite; for
    Explicit VR Big Endian the pixel words are byte-swapped here (pydicom writes PixelData as given).
    Returns the number of PixelData bytes in the file (encapsulated or not; before deflation).
    """
    if transfer_syntax in _ENCAPSULATED:
        arr = _pixels_of(ds)
        ds.compress(
            transfer_syntax,
            arr,
            encoding_plugin=_encoding_plugin(transfer_syntax),
            generate_instance_uid=False,
        )
    else:
        if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN and ds.BitsAllocated == 16:
            ds.PixelData = _pixels_of(ds).byteswap().tobytes()
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return len(ds.PixelData)


def _pixels_of(ds: Dataset) -> np.ndarray:
    if ds.BitsAllocated == 8:
        dtype: type = np.uint8
    else:
        dtype = np.int16 if ds.PixelRepresentation else np.uint16
    return np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns)


def truncate_file(path: Path, pixel_bytes: int, transfer_syntax: str) -> dict[str, object]:
    """Cut a written file inside its pixel data: half the PixelData value is dropped (half the
    file for Deflated, whose pixel data sits inside one deflate stream)."""
    size = path.stat().st_size
    keep = size // 2 if transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else size - max(1, pixel_bytes // 2)
    with path.open("r+b") as fh:
        fh.truncate(keep)
    return {"original_bytes": size, "kept_bytes": keep}


def corrupt_file(path: Path, rng: np.random.Generator, mode: str) -> dict[str, object]:
    """Garble a written file: ``garbage_header`` overwrites its first 388 bytes (preamble, 'DICM'
    and the start of the meta group) with random bytes; ``random_bytes`` replaces all of it by
    random bytes of the same length. Bytes 128-131 are never 'DICM' afterwards."""
    data = bytearray(path.read_bytes())
    n = len(data) if mode == "random_bytes" else min(len(data), 132 + 256)
    data[:n] = rng.bytes(n)
    if data[128:132] == b"DICM":
        data[128] ^= 0xFF
    path.write_bytes(bytes(data))
    return {"mode": mode, "bytes_overwritten": n}


# --------------------------------------------------------------------------------------------
# PHI
# --------------------------------------------------------------------------------------------
_FIRST = (
    "ANNA",
    "JOHN",
    "MARIA",
    "WEI",
    "FATIMA",
    "JOSÉ",
    "OLGA",
    "PIETER",
    "AIKO",
    "LIAM",
    "CHIARA",
    "KWAME",
)
_LAST = (
    "MÜLLER",
    "GARCÍA",
    "NGUYEN",
    "O'BRIEN",
    "KOWALSKI",
    "SMITH",
    "ROSSI",
    "JOHANSSON",
    "DUBOIS",
    "TANAKA",
    "OKAFOR",
    "PATEL",
)
_STREETS = ("Maple Street", "Elm Avenue", "Harbour Road", "Lindenweg", "Rue des Lilas", "Oak Lane")
_CITIES = (
    ("Springfield", "IL 62704"),
    ("Riverton", "WY 82501"),
    ("Fairview", "OR 97024"),
    ("Ashford", "CT 06278"),
)
_HOSPITALS = (
    "St. Agatha Memorial Hospital",
    "Riverside University Medical Center",
    "Mercy General Hospital",
    "Lakeview Clinic of Radiology",
)
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "ACME RIS 2.1"


def sample_phi(rng: np.random.Generator, study_date: str, study_time: str) -> tuple[PhiValue, ...]:
    """Realistic-looking (invented) identifiers for a `phi` series; every value is distinct text."""

    def pick(seq: tuple) -> object:
        return seq[int(rng.integers(0, len(seq)))]

    first, last = str(pick(_FIRST)), str(pick(_LAST))
    middle = "ABCDEFGHJKLMNPRSTW"[int(rng.integers(0, 18))]
    ref_first, ref_last = str(pick(_FIRST)), str(pick(_LAST))
    sched_first, sched_last = str(pick(_FIRST)), str(pick(_LAST))
    birth = _dt.date(1935, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 40 * 365)))
    city, zip_code = pick(_CITIES)  # type: ignore[misc]
    hospital = str(pick(_HOSPITALS))
    mrn = f"MRN{int(rng.integers(10**7, 10**8))}"
    return (
        PhiValue("PatientName", f"{last}^{first}^{middle}"),
        PhiValue("PatientID", mrn),
        PhiValue("PatientBirthDate", birth.strftime("%Y%m%d")),
        PhiValue("PatientAddress", f"{int(rng.integers(1, 9999))} {pick(_STREETS)}, {city}, {zip_code}"),
        PhiValue("PatientTelephoneNumbers", f"+1 555 {int(rng.integers(100, 999))} {int(rng.integers(1000, 9999))}"),
        PhiValue(
            "OtherPatientIDs",
            f"{int(rng.integers(100, 899)):03d}-{int(rng.integers(10, 99))}-{int(rng.integers(1000, 9999))}",
        ),
        PhiValue("AccessionNumber", f"A{int(rng.integers(10**8, 10**9))}"),
        PhiValue("InstitutionName", hospital),
        PhiValue("InstitutionAddress", f"{int(rng.integers(1, 999))} Hospital Drive, {city}, {zip_code}"),
        PhiValue("ReferringPhysicianName", f"{ref_last}^{ref_first}^^DR."),
        PhiValue("OperatorsName", f"{sched_first[0]}{ref_last[:3]}TECH"),
        PhiValue("StudyDate", study_date),
        PhiValue("StudyTime", study_time),
        PhiValue(f"({PRIVATE_GROUP:04X},1001) {PRIVATE_CREATOR}", f"{last}, {first} {middle}."),
        PhiValue(f"({PRIVATE_GROUP:04X},1002) {PRIVATE_CREATOR}", f"{mrn} {hospital}"),
        PhiValue("RequestAttributesSequence[0].ScheduledPerformingPhysicianName", f"{sched_last}^{sched_first}"),
        PhiValue(
            "RequestAttributesSequence[0].RequestedProcedureDescription",
            f"CT chest for {first.title()} {last.title()}",
        ),
    )


def _plant_phi(ds: Dataset, phi: tuple[PhiValue, ...]) -> None:
    if not phi:
        return
    item = Dataset()
    item.RequestedProcedureID = "RP1"
    item.ScheduledProcedureStepID = "SPS1"
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for p in phi:
        if p.path.startswith("("):
            block.add_new(int(p.path[6:10], 16) & 0xFF, "LO", p.value)
        elif p.path.startswith("RequestAttributesSequence[0]."):
            setattr(item, p.path.split(".", 1)[1], p.value)
        else:
            setattr(ds, p.path, p.value)
    ds.RequestAttributesSequence = Sequence([item])


def phi_found_in(ds: Dataset) -> set[str]:
    """Every string value in ``ds`` and its nested items (for tests that scan for planted PHI)."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR in ("SQ", "OB", "OW", "UN") or elem.value is None:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        found.update(str(v) for v in values)
    return found


# --------------------------------------------------------------------------------------------
# Burned-in text (3x5 bitmap font)
# --------------------------------------------------------------------------------------------
_GLYPHS = {
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "110001010100111",
    "3": "110001010001110",
    "4": "101101111001001",
    "5": "111100110001110",
    "6": "011100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001110",
    "-": "000000111000000",
    ".": "000000000000010",
    ",": "000000000010100",
    ":": "000010000010000",
    "/": "001001010100100",
    "'": "010010000000000",
    " ": "000000000000000",
}


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """Boolean (rows, cols) rendering of ``text`` (accents folded, upper case) in a 3x5 font."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().upper()
    glyphs = [_GLYPHS.get(ch, _GLYPHS[" "]) for ch in folded]
    out = np.zeros((5, 4 * max(1, len(glyphs))), dtype=bool)
    for n, g in enumerate(glyphs):
        out[:, 4 * n : 4 * n + 3] = np.array([c == "1" for c in g]).reshape(5, 3)
    return np.kron(out, np.ones((scale, scale), dtype=bool)) if scale > 1 else out


def burn_in(stored_yx: np.ndarray, text: str, value: int) -> tuple[list[int], list[int], str]:
    """Draw ``text`` in the top-left corner (2 px margin) with stored ``value``; text that does not
    fit the width is cut. Returns the [row0, row1) and [col0, col1) box and the text drawn."""
    rows, cols = stored_yx.shape
    scale = max(1, cols // 170)
    max_chars = max(1, (cols - 4) // (4 * scale))
    drawn = text[:max_chars]
    bm = text_bitmap(drawn, scale)
    h, w = bm.shape
    stored_yx[2 : 2 + h, 2 : 2 + w][bm] = value
    return [2, 2 + h], [2, 2 + w], drawn


def date_from(rng: np.random.Generator, first: _dt.date, days: int) -> str:
    return (first + _dt.timedelta(days=int(rng.integers(0, days)))).strftime("%Y%m%d")


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
