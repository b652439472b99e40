"""ctlake.dicom.reader: parse bytes/files, decode every common transfer syntax, HU, geometry.

Real files come from ../shared/data/dicom (pydicom's samples, a TCIA chest CT series); a missing
folder fails the test with a message, it is never skipped.
"""

from __future__ import annotations

import glob
import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctlake.dicom.flatten import flatten, header_json, instance_summary
from ctlake.dicom.reader import (
    ENHANCED_CT_IMAGE_STORAGE,
    FrameGeometry,
    decode_frames,
    frame_geometry,
    hounsfield,
    parse_dicom,
    read_dicom_file,
    transfer_syntax_of,
)
from ctlake.errors import DicomError
from ctlake.synth import SynthConfig, generate_cohort
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom"
SAMPLES = DATA / "samples"
CT_SERIES = DATA / "ct_series" / "Lung_Dx-A0002_series3_B40f"

#: Every pydicom sample: (parse outcome, decode outcome). "ok" or a DicomError code; for a decode
#: that succeeds, the (frames, rows, cols) shape.
SAMPLE_OUTCOMES: dict[str, tuple[str, str | tuple[int, ...]]] = {
    "CT_small.dcm": ("ok", (1, 128, 128)),
    "no_meta.dcm": ("ok", (1, 128, 128)),  # bare data set after a stray meta pad byte
    "693_UNCI.dcm": ("ok", (1, 512, 512)),
    "693_J2KR.dcm": ("ok", (1, 512, 512)),
    "693_J2KI.dcm": ("ok", (1, 512, 512)),
    "MR_small.dcm": ("ok", (1, 64, 64)),
    "MR_small_RLE.dcm": ("ok", (1, 64, 64)),
    "MR_small_bigendian.dcm": ("ok", (1, 64, 64)),
    "MR_small_jp2klossless.dcm": ("ok", (1, 64, 64)),
    "MR_small_jpeg_ls_lossless.dcm": ("ok", (1, 64, 64)),
    "image_dfl.dcm": ("ok", (1, 512, 512)),  # deflated
    "MR_truncated.dcm": ("TRUNCATED", "-"),  # Pixel Data says 8192 bytes, 8130 follow
    "rtplan_truncated.dcm": ("TRUNCATED", "-"),  # file ends inside Beam Sequence
    "badVR.dcm": ("ok", "BAD_VALUE"),  # Number of Frames '1A'
    "meta_missing_tsyntax.dcm": ("ok", "MISSING_ATTRIBUTE"),  # 2 bytes of pixel data, no Rows
    "nested_priv_SQ.dcm": ("ok", "MISSING_ATTRIBUTE"),
    "JPEG2000-embedded-sequence-delimiter.dcm": ("ok", "PIXEL_DECODE_FAILED"),  # 250-byte stub stream
}

#: 693_J2KI is a ~339:1 lossy JPEG 2000 of the 693_J2KR image (its header says so);
#: 693_UNCI is that lossy image decoded and stored uncompressed. Measured J2KR vs UNCI:
#: max |diff| 2080 and RMSE 121.04 stored values; bounds a little above.
LOSSY_MAX_ABS_DIFF = 2100
LOSSY_RMSE = 125.0


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (see ../shared/data/README.md); it is needed, not optional")
    return path


def _sample(name: str) -> Path:
    return _require(SAMPLES / name)


def _bytes(name: str) -> bytes:
    return _sample(name).read_bytes()


def _code(fn, *args, **kwargs) -> str:
    with pytest.raises(DicomError) as err:
        fn(*args, **kwargs)
    assert err.value.code and str(err.value)
    return err.value.code


# --------------------------------------------------------------------------------------------
# every sample file
# --------------------------------------------------------------------------------------------
def test_every_sample_is_listed():
    found = {Path(p).name for p in glob.glob(str(_require(SAMPLES) / "*.dcm"))}
    assert found == set(SAMPLE_OUTCOMES), f"unlisted: {found - set(SAMPLE_OUTCOMES)}"


@pytest.mark.parametrize("name", sorted(SAMPLE_OUTCOMES))
def test_sample_outcome(name: str):
    parse_outcome, decode_outcome = SAMPLE_OUTCOMES[name]
    if parse_outcome != "ok":
        assert _code(parse_dicom, _bytes(name)) == parse_outcome
        assert _code(read_dicom_file, _sample(name)) == parse_outcome
        return
    ds = parse_dicom(_bytes(name))
    # parsed samples flatten without raising
    assert isinstance(header_json(ds), dict)
    assert isinstance(flatten(ds), dict)
    assert isinstance(instance_summary(ds)["warnings"], list)
    if isinstance(decode_outcome, tuple):
        arr = decode_frames(ds)
        assert arr.shape == decode_outcome
        assert arr.dtype.isnative
    else:
        assert _code(decode_frames, ds) == decode_outcome


def test_truncated_sample_header_still_readable_before_pixels():
    ds = parse_dicom(_bytes("MR_truncated.dcm"), stop_before_pixels=True)
    assert ds.Modality == "MR"
    assert _code(decode_frames, ds) == "MISSING_PIXEL_DATA"


def test_ct_series_5slices_folder_decodes():
    files = sorted(p for p in _require(SAMPLES / "ct_series_5slices_uniform").iterdir() if p.is_file())
    assert len(files) == 5
    z = [frame_geometry(read_dicom_file(p))[0].position_xyz_mm[2] for p in files]
    assert all(decode_frames(read_dicom_file(p)).shape[0] == 1 for p in files)
    assert len(set(np.round(np.diff(sorted(z)), 3))) == 1  # uniform spacing


# --------------------------------------------------------------------------------------------
# transfer syntaxes
# --------------------------------------------------------------------------------------------
def test_jpeg2000_lossy_within_measured_bound():
    unci = decode_frames(parse_dicom(_bytes("693_UNCI.dcm"))).astype(np.float64)
    j2ki = decode_frames(parse_dicom(_bytes("693_J2KI.dcm"))).astype(np.float64)
    j2kr = decode_frames(parse_dicom(_bytes("693_J2KR.dcm"))).astype(np.float64)
    # UNCI *is* the decoded lossy stream: equal
    np.testing.assert_array_equal(j2ki, unci)
    # lossless original vs lossy: close, not equal
    diff = j2kr - unci
    assert 0 < np.abs(diff).max() <= LOSSY_MAX_ABS_DIFF
    assert np.sqrt((diff**2).mean()) <= LOSSY_RMSE
    assert np.corrcoef(j2kr.ravel(), unci.ravel())[0, 1] > 0.99
    assert float(parse_dicom(_bytes("693_UNCI.dcm")).LossyImageCompressionRatio) == pytest.approx(338.69, abs=0.01)


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_mr_small_variants_equal_uncompressed(name: str):
    ref = decode_frames(parse_dicom(_bytes("MR_small.dcm")))
    ds = parse_dicom(_bytes(name))
    assert transfer_syntax_of(ds) != pydicom.uid.ExplicitVRLittleEndian
    np.testing.assert_array_equal(decode_frames(ds), ref)


def test_no_meta_is_ct_small_and_deflate_parses():
    ct = parse_dicom(_bytes("CT_small.dcm"))
    bare = parse_dicom(_bytes("no_meta.dcm"))
    assert bare.preamble is None and "TransferSyntaxUID" not in bare.file_meta
    assert bare.SOPInstanceUID == ct.SOPInstanceUID
    assert transfer_syntax_of(bare) == pydicom.uid.ExplicitVRLittleEndian  # as read
    np.testing.assert_array_equal(decode_frames(bare), decode_frames(ct))
    dfl = parse_dicom(_bytes("image_dfl.dcm"))
    assert transfer_syntax_of(dfl) == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert decode_frames(dfl).dtype == np.uint8


def test_installed_codecs_cover_the_common_syntaxes():
    common = [
        "1.2.840.10008.1.2",  # implicit VR little endian
        "1.2.840.10008.1.2.1",  # explicit VR little endian
        "1.2.840.10008.1.2.1.99",  # deflated
        "1.2.840.10008.1.2.2",  # explicit VR big endian
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.57",  # JPEG lossless
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
    ]
    missing = {ts: pydicom.pixels.get_decoder(ts).missing_dependencies for ts in common}
    assert not {ts: m for ts, m in missing.items() if not pydicom.pixels.get_decoder(ts).is_available}


def test_jpeg_baseline_decodes_close_to_source():
    from PIL import Image  # pinned in requirements/lock.txt

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:64, 0:64]
    img = (128 + 60 * np.sin(x / 6.0) * np.cos(y / 9.0) + rng.normal(0, 3, (64, 64))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    ds = _image_dataset(1, 64, 64, bits=8, signed=False)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.PixelData = pydicom.encaps.encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    out = parse_dicom(_to_bytes(ds))
    arr = decode_frames(out)
    assert arr.shape == (1, 64, 64) and arr.dtype == np.uint8
    assert np.abs(arr[0].astype(int) - img).max() <= 10  # q95: measured 7


def test_synthetic_compressed_cohort_equals_uncompressed(tmp_path: Path):
    cfg = {"patients": 2, "size": 32, "slices": 8}
    packed = generate_cohort(tmp_path / "c", SynthConfig(**cfg, edge_cases=("compressed",)))
    plain = generate_cohort(tmp_path / "p", SynthConfig(**cfg))
    seen = set()
    for s_c, s_p in zip(packed.ct_series(), plain.ct_series(), strict=True):
        assert s_c.patient_index == s_p.patient_index
        for f_c, f_p in zip(s_c.files, s_p.files, strict=True):
            assert f_c.slice_index == f_p.slice_index
            ds = read_dicom_file(tmp_path / "c" / f_c.path)
            assert transfer_syntax_of(ds) == f_c.transfer_syntax_uid
            seen.add(f_c.transfer_syntax_uid)
            ref = read_dicom_file(tmp_path / "p" / f_p.path)
            np.testing.assert_array_equal(decode_frames(ds), decode_frames(ref))
            np.testing.assert_array_equal(hounsfield(ds), hounsfield(ref))
    assert seen >= {
        pydicom.uid.RLELossless,
        pydicom.uid.JPEG2000Lossless,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
    }


# --------------------------------------------------------------------------------------------
# reading: bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "NOT_DICOM"),
        (b"hello world " * 20, "NOT_DICOM"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "NOT_DICOM"),
        (bytes(100), "NOT_DICOM"),  # a lone zero preamble
        (b"DICM", "TRUNCATED"),  # the marker and nothing after it
    ],
    ids=["empty", "text", "png", "zeros", "dicm-only"],
)
def test_not_dicom(data: bytes, code: str):
    assert _code(parse_dicom, data) == code


def test_random_bytes_are_not_dicom():
    rng = np.random.default_rng(5)
    for _ in range(20):
        data = rng.integers(0, 256, size=int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        try:
            parse_dicom(data)
        except DicomError as err:
            assert err.code in ("NOT_DICOM", "TRUNCATED", "BAD_HEADER")


@pytest.mark.parametrize("keep", [132, 140, 200, 401, 1000, 20000, -1], ids=lambda k: f"keep{k}")
def test_cut_files_are_truncated(keep: int):
    """Cut inside the meta, inside an element header or value, inside the pixel data. (A cut that
    falls exactly between two elements leaves a shorter valid data set: byte 400 of CT_small
    is such a boundary, and it parses.)"""
    data = _bytes("CT_small.dcm")
    assert parse_dicom(data[:400]).get("PixelData") is None
    cut = data[:keep]
    assert _code(parse_dicom, cut) == "TRUNCATED"
    assert _code(parse_dicom, cut, defer_size=256) == "TRUNCATED"


def test_cut_deflated_file_is_truncated():
    data = _bytes("image_dfl.dcm")
    assert _code(parse_dicom, data[: len(data) // 2]) == "TRUNCATED"


def test_preamble_stripped_and_buffer_types(tmp_path: Path):
    data = _bytes("CT_small.dcm")
    ds = parse_dicom(data[128:])  # 'DICM' first
    assert ds.preamble is None and ds.SOPInstanceUID == parse_dicom(data).SOPInstanceUID
    assert parse_dicom(bytearray(data)).Rows == 128
    assert parse_dicom(memoryview(data)).Rows == 128
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(data[128:])
    assert read_dicom_file(bare).Rows == 128


def test_file_variant_and_deferred_reads(tmp_path: Path):
    path = _sample("CT_small.dcm")
    ref = decode_frames(parse_dicom(path.read_bytes()))
    ds = read_dicom_file(path, defer_size=1024)
    assert ds.get_item("PixelData", keep_deferred=True).value is None  # still on disk
    np.testing.assert_array_equal(decode_frames(ds), ref)
    in_memory = parse_dicom(path.read_bytes(), defer_size=1024)
    np.testing.assert_array_equal(decode_frames(in_memory), ref)
    for name in ("image_dfl.dcm", "no_meta.dcm"):  # deferred offsets point into the inflated / padded buffer
        whole = decode_frames(read_dicom_file(_sample(name)))
        np.testing.assert_array_equal(decode_frames(read_dicom_file(_sample(name), defer_size=1024)), whole)
    assert _code(read_dicom_file, tmp_path / "missing.dcm") == "FILE_UNREADABLE"
    assert _code(read_dicom_file, tmp_path) == "FILE_UNREADABLE"


# --------------------------------------------------------------------------------------------
# decoding: errors
# --------------------------------------------------------------------------------------------
def test_decode_error_codes():
    ct = parse_dicom(_bytes("CT_small.dcm"))
    assert _code(decode_frames, parse_dicom(_bytes("CT_small.dcm"), stop_before_pixels=True)) == "MISSING_PIXEL_DATA"
    assert _code(decode_frames, ct, max_decoded_bytes=1000) == "PIXELS_TOO_LARGE"

    mpeg = parse_dicom(_bytes("CT_small.dcm"))
    mpeg.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
    assert _code(decode_frames, mpeg) == "UNSUPPORTED_TRANSFER_SYNTAX"
    private = parse_dicom(_bytes("CT_small.dcm"))
    private.file_meta.TransferSyntaxUID = UID("1.2.3.4.5")
    assert _code(decode_frames, private) == "UNSUPPORTED_TRANSFER_SYNTAX"
    no_ts = parse_dicom(_bytes("693_J2KR.dcm"))
    del no_ts.file_meta.TransferSyntaxUID  # encapsulated, and nothing says which codec
    assert _code(decode_frames, no_ts) == "UNSUPPORTED_TRANSFER_SYNTAX"

    short = parse_dicom(_bytes("CT_small.dcm"))
    short.Rows = 256  # twice the pixel bytes there are
    assert _code(decode_frames, short) == "TRUNCATED"
    no_rows = parse_dicom(_bytes("CT_small.dcm"))
    del no_rows.Rows
    assert _code(decode_frames, no_rows) == "MISSING_ATTRIBUTE"
    bad_bits = parse_dicom(_bytes("CT_small.dcm"))
    bad_bits.BitsAllocated = 12
    assert _code(decode_frames, bad_bits) == "BAD_VALUE"


def test_corrupt_codestream_names_syntax_and_codec_error():
    ds = parse_dicom(_bytes("MR_small_jp2klossless.dcm"))
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(300)])
    with pytest.raises(DicomError) as err:
        decode_frames(ds)
    assert err.value.code == "PIXEL_DECODE_FAILED"
    assert "JPEG 2000" in str(err.value) and "1.2.840.10008.1.2.4.90" in str(err.value)


# --------------------------------------------------------------------------------------------
# Hounsfield units and geometry
# --------------------------------------------------------------------------------------------
def _series_files() -> list[Path]:
    files = sorted(_require(CT_SERIES).glob("*.dcm"))
    assert len(files) == 30, f"expected the 30-slice series in {CT_SERIES}"
    return files


def test_real_ct_series_hu_geometry_and_columns():
    z = []
    for path in _series_files():
        ds = read_dicom_file(path)
        stored = ds.pixel_array
        expected = stored.astype(np.float32) * np.float32(ds.RescaleSlope) + np.float32(ds.RescaleIntercept)
        hu = hounsfield(ds)
        assert hu.shape == (1, 512, 512) and hu.dtype == np.float32
        np.testing.assert_array_equal(hu[0], expected)
        (g,) = frame_geometry(ds)
        assert g.position_xyz_mm == tuple(float(v) for v in ds.ImagePositionPatient)
        assert g.orientation == tuple(float(v) for v in ds.ImageOrientationPatient)
        assert g.pixel_spacing_yx_mm == pytest.approx((0.6465, 0.6465), abs=1e-4)
        assert g.slice_thickness_mm == 8.0
        assert (g.rescale_slope, g.rescale_intercept) == (1.0, -1024.0)
        row = instance_summary(ds)
        assert row["manufacturer"] == "SIEMENS"
        assert row["convolution_kernel"] == "B40f"
        assert row["pixel_spacing_mm"] == pytest.approx((0.6465, 0.6465), abs=1e-4)
        assert row["rescale_intercept"] == -1024.0 and row["warnings"] == []
        z.append(g.position_xyz_mm[2])
    steps = np.diff(sorted(z))
    np.testing.assert_allclose(steps, 8.0)
    # air outside the body, soft tissue / water near 0 HU somewhere
    assert hu.min() <= -1000 + 1


def _image_dataset(frames: int, rows: int, cols: int, *, bits: int = 16, signed: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1001"
    ds.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    ds.SOPInstanceUID = "2.25.1001"
    ds.StudyInstanceUID = "2.25.1002"
    ds.SeriesInstanceUID = "2.25.1003"
    ds.PatientID = "P1"
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    return ds


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _seq_item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def enhanced_ct(
    frames: int = 3, rows: int = 4, cols: int = 5, *, rescale: str = "per_frame"
) -> tuple[bytes, np.ndarray]:
    """An Enhanced CT Image Storage instance: shared pixel measures and orientation, a plane
    position per frame 2.5 mm apart, and per frame RescaleSlope i+1, intercept -1000 + 10 i
    (``rescale='shared'``: slope 2, intercept -1024 for every frame). Returns its bytes and the
    stored values (frames, rows, cols)."""
    ds = _image_dataset(frames, rows, cols)
    stored = (np.arange(frames * rows * cols, dtype=np.int16).reshape(frames, rows, cols) * 3 - 20).astype(np.int16)
    ds.PixelData = stored.tobytes()
    shared = _seq_item(
        PixelMeasuresSequence=[_seq_item(PixelSpacing=[0.5, 0.75], SliceThickness=1.25)],
        PlaneOrientationSequence=[_seq_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        CTReconstructionSequence=[_seq_item(ConvolutionKernel="FC51")],
        CTXRayDetailsSequence=[_seq_item(KVP=100)],
    )
    if rescale == "shared":
        shared.PixelValueTransformationSequence = [_seq_item(RescaleSlope=2, RescaleIntercept=-1024, RescaleType="HU")]
    per_frame = []
    for i in range(frames):
        item = _seq_item(PlanePositionSequence=[_seq_item(ImagePositionPatient=[-10.0, -20.0, 30.0 + 2.5 * i])])
        if rescale == "per_frame":
            item.PixelValueTransformationSequence = [
                _seq_item(RescaleSlope=i + 1, RescaleIntercept=-1000 + 10 * i, RescaleType="HU")
            ]
        per_frame.append(item)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.AcquisitionDateTime = "20240102101500"
    return _to_bytes(ds), stored


def test_enhanced_ct_per_frame_rescale_and_positions():
    data, stored = enhanced_ct()
    ds = parse_dicom(data)
    np.testing.assert_array_equal(decode_frames(ds), stored)
    hu = hounsfield(ds)
    for i in range(3):
        np.testing.assert_array_equal(hu[i], stored[i].astype(np.float32) * (i + 1) + (-1000 + 10 * i))
    geometry = frame_geometry(ds)
    assert [g.position_xyz_mm for g in geometry] == [(-10.0, -20.0, 30.0), (-10.0, -20.0, 32.5), (-10.0, -20.0, 35.0)]
    assert all(g.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0) for g in geometry)
    assert geometry[2] == FrameGeometry(
        2, (-10.0, -20.0, 35.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (0.5, 0.75), 1.25, 3.0, -980.0
    )
    row = instance_summary(ds)
    assert row["number_of_frames"] == 3
    assert row["image_position_patient_mm"] == (-10.0, -20.0, 30.0)
    assert row["pixel_spacing_mm"] == (0.5, 0.75)
    assert (row["rescale_slope"], row["rescale_intercept"]) == (1.0, -1000.0)
    assert (row["convolution_kernel"], row["kvp"]) == ("FC51", 100.0)
    assert str(row["acquisition_date"]) == "2024-01-02"


def test_enhanced_ct_shared_rescale_and_compressed_multiframe():
    data, stored = enhanced_ct(rows=32, cols=32, rescale="shared")  # openjpeg needs >= 32 px
    ds = parse_dicom(data)
    np.testing.assert_array_equal(hounsfield(ds), stored.astype(np.float32) * 2 - 1024)
    for syntax in (pydicom.uid.RLELossless, pydicom.uid.JPEG2000Lossless):
        packed = parse_dicom(data)
        packed.compress(syntax, generate_instance_uid=False)
        again = parse_dicom(_to_bytes(packed))
        assert transfer_syntax_of(again) == syntax
        np.testing.assert_array_equal(decode_frames(again), stored)


def test_enhanced_ct_bad_per_frame_count():
    ds = parse_dicom(enhanced_ct()[0])
    ds.NumberOfFrames = 4
    assert _code(frame_geometry, ds) == "BAD_VALUE"


def test_classic_multiframe_has_one_position():
    ds = _image_dataset(2, 2, 2)
    ds.ImagePositionPatient = [1, 2, 3]
    ds.PixelSpacing = [0.5, 0.5]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.zeros((2, 2, 2), np.int16).tobytes()
    geometry = frame_geometry(parse_dicom(_to_bytes(ds)))
    assert [g.position_xyz_mm for g in geometry] == [(1.0, 2.0, 3.0), None]
    assert all(g.rescale_intercept == -1024.0 for g in geometry)
    assert hounsfield(parse_dicom(_to_bytes(ds))).tolist() == [[[-1024.0] * 2] * 2] * 2


def test_geometry_bad_values():
    ds = parse_dicom(_bytes("CT_small.dcm"))
    ds.ImagePositionPatient = [1, 2]
    assert _code(frame_geometry, ds) == "BAD_VALUE"
    ds = parse_dicom(_bytes("CT_small.dcm"))
    ds.RescaleSlope = "7.25"
    bad = parse_dicom(_to_bytes(ds).replace(b"7.25", b"abcd"))
    assert _code(hounsfield, bad) == "BAD_VALUE"


def test_hounsfield_defaults_without_rescale():
    ds = parse_dicom(_bytes("MR_small.dcm"))
    assert "RescaleSlope" not in ds
    np.testing.assert_array_equal(hounsfield(ds), decode_frames(ds).astype(np.float32))


# --------------------------------------------------------------------------------------------
# robustness
# --------------------------------------------------------------------------------------------
def test_fuzzed_ct_small_raises_only_dicom_error():
    """300 copies of CT_small with 1-8 bytes overwritten (mostly in the header, where the
    structure is): parse + flatten + decode + HU either work or raise DicomError."""
    data = _bytes("CT_small.dcm")
    rng = np.random.default_rng(20240601)
    outcomes: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(300):
            mutated = bytearray(data)
            span = 4096 if rng.random() < 0.8 else len(data)
            for pos, value in zip(
                rng.integers(0, span, size=int(rng.integers(1, 9))), rng.integers(0, 256, size=8), strict=False
            ):
                mutated[int(pos)] = int(value)
            stage = "parse"
            try:
                ds = parse_dicom(bytes(mutated))
                stage = "flatten"
                header_json(ds)
                flatten(ds)
                instance_summary(ds)
                stage = "decode"
                hounsfield(ds)
                frame_geometry(ds)
                stage = "ok"
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except DicomError as err:
                assert stage != "flatten", f"flatten raised {err.code}: {err}"
                outcomes[err.code] = outcomes.get(err.code, 0) + 1
    assert outcomes.get("ok", 0) > 50 and sum(outcomes.values()) == 300
    assert set(outcomes) - {"ok"} <= {
        "TRUNCATED",
        "BAD_HEADER",
        "NOT_DICOM",
        "BAD_VALUE",
        "MISSING_ATTRIBUTE",
        "MISSING_PIXEL_DATA",
        "UNSUPPORTED_TRANSFER_SYNTAX",
        "PIXEL_DECODE_FAILED",
        "PIXELS_TOO_LARGE",
        "NOT_MONOCHROME",
    }


def test_corrupt_rle_frames_raise_only_dicom_error():
    """Overwritten bytes in an RLE frame (its segment header half the time): the codecs raise
    errors or, in pylibjpeg-rle 2.0, a Rust panic (pyo3 PanicException, a BaseException); either
    is PIXEL_DECODE_FAILED. Some mutations still decode (to other pixels)."""
    raw = _bytes("MR_small_RLE.dcm")
    frame = next(pydicom.encaps.generate_frames(parse_dicom(raw).PixelData, number_of_frames=1))
    rng = np.random.default_rng(3)
    outcomes: set[str] = set()
    for i in range(200):
        mutated = bytearray(frame)
        for pos in rng.integers(0, 64 if i % 2 else len(mutated), size=int(rng.integers(1, 5))):
            mutated[int(pos)] = int(rng.integers(0, 256))
        ds = parse_dicom(raw)
        ds.PixelData = pydicom.encaps.encapsulate([bytes(mutated)])
        try:
            decode_frames(ds)
            outcomes.add("ok")
        except DicomError as err:
            outcomes.add(err.code)
    assert outcomes == {"ok", "PIXEL_DECODE_FAILED"}
