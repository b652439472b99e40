"""ctlake.dicom.flatten: DICOM JSON model without bulk data, typed columns, derived views."""

from __future__ import annotations

import datetime as dt
import io
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from ctlake.dicom.flatten import (
    INSTANCE_SUMMARY_TYPES,
    OMITTED_BULK_DATA_URI,
    PN_FIELDS,
    VR_LOGICAL_TYPE,
    FlatRow,
    LogicalType,
    column_types,
    flatten,
    header_json,
    header_json_text,
    instance_summary,
    is_bulk_data_tag,
    patient_summary,
    series_summary,
    study_summary,
)
from ctlake.dicom.reader import parse_dicom, read_dicom_file
from ctlake.errors import DicomError
from pydicom import datadict
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dicom"
SAMPLES = DATA / "samples"
CT_SERIES = DATA / "ct_series" / "Lung_Dx-A0002_series3_B40f"
#: samples that parse (the two truncated ones do not; see test_dicom_reader.SAMPLE_OUTCOMES)
PARSEABLE = sorted(
    {
        "CT_small.dcm",
        "no_meta.dcm",
        "693_UNCI.dcm",
        "693_J2KR.dcm",
        "693_J2KI.dcm",
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "image_dfl.dcm",
        "badVR.dcm",
        "meta_missing_tsyntax.dcm",
        "nested_priv_SQ.dcm",
        "JPEG2000-embedded-sequence-delimiter.dcm",
    }
)
PIXEL_KEYS = {"7FE00010", "7FE00008", "7FE00009"}


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (see ../shared/data/README.md); it is needed, not optional")
    return path


def _sample(name: str) -> Dataset:
    return parse_dicom(_require(SAMPLES / name).read_bytes())


def _keys(obj) -> set[str]:
    """Every tag key in a JSON model, at any depth."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if len(k) == 8:
                out.add(k)
            out |= _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _keys(v)
    return out


def _roundtrip(ds: Dataset) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return parse_dicom(buf.getvalue())


# --------------------------------------------------------------------------------------------
# (a) JSON model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PARSEABLE)
def test_json_model_of_every_sample(name: str):
    ds = _sample(name)
    problems: list[str] = []
    model = header_json(ds, problems=problems)
    text = json.dumps(model, allow_nan=False)
    assert not _keys(model) & PIXEL_KEYS
    assert "7FE00010" not in text
    assert json.loads(header_json_text(ds)) == json.loads(text)
    for value in model.values():
        assert set(value) <= {"vr", "Value", "InlineBinary", "BulkDataURI"}
    row = flatten(ds)
    assert isinstance(row, FlatRow) and isinstance(row.warnings, list)
    summary = instance_summary(ds)
    assert list(summary) == list(INSTANCE_SUMMARY_TYPES)
    if name != "badVR.dcm":
        assert problems == [] and row.warnings == []


def test_ct_small_json_values():
    model = header_json(_sample("CT_small.dcm"))
    assert model["00100020"] == {"vr": "LO", "Value": ["1CT1"]}
    assert model["00280030"] == {"vr": "DS", "Value": [0.661468, 0.661468]}
    assert model["00280010"] == {"vr": "US", "Value": [128]}
    assert model["00100010"]["Value"][0]["Alphabetic"] == "CompressedSamples^CT1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the omitted private OB has no bulk data handler
        back = Dataset.from_json(model)
    assert back.PatientID == "1CT1" and back.Rows == 128


def test_bad_vr_value_kept_as_un_with_a_warning():
    ds = _sample("badVR.dcm")  # NumberOfFrames '1A'
    problems: list[str] = []
    model = header_json(ds, problems=problems)
    assert model["00280008"]["vr"] == "UN"
    assert model["00280008"]["InlineBinary"] == "MUE="  # b'1A'
    assert any(p.startswith("00280008") for p in problems)
    row = flatten(ds, ["NumberOfFrames", "Rows"])
    assert row["NumberOfFrames"] is None and isinstance(row["Rows"], int)
    assert row.warnings == ["NumberOfFrames: '1A' is not an integer"]
    assert instance_summary(ds)["number_of_frames"] is None


def test_nested_private_sequences_stay_in_json():
    model = header_json(_sample("nested_priv_SQ.dcm"))
    outer = model["00010001"]
    assert outer["vr"] == "SQ"
    inner = outer["Value"][0]["00010001"]["Value"][0]["00010001"]
    assert base64_decode(inner["InlineBinary"]) == b"Double Nested SQ"


def base64_decode(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def _odd_dataset() -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values on purpose
        return _roundtrip(_odd_values())


def _odd_values() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPInstanceUID = "2.25.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.add(DataElement(0x00180050, "UN", b"2.5 "))  # SliceThickness sent as UN
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "OB", bytes(range(256)) * 20)  # 5120 bytes of private binary
    ds.add_new(0x00091002, "UN", b"abc\x00")
    ds.StudyDate = "20231345"
    ds.SeriesDate = "2023.02.28"  # ACR-NEMA style
    ds.AcquisitionDate = ""
    ds.StudyTime = "1535"
    ds.SeriesTime = "153557.12"
    ds.AcquisitionTime = "25"
    ds.AcquisitionDateTime = "20230102153557.5+0100"
    ds.PatientName = "Doe^John^Q^Dr^Jr=ド^ジョン=どう^じょん"
    ds.OperatorsName = ["A^B", "C^D"]
    ds.WindowCenter = ["40", "-600"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.FrameIncrementPointer = 0x00181063
    ds.PatientWeight = "nan"
    ds.ConvolutionKernel = ["B40f", "2"]
    ds.KVP = "120"
    ds.add_new(0x60000010, "US", 4)  # OverlayRows: a repeating group
    ds.add_new(0x60003000, "OW", bytes(4))  # OverlayData: bulk
    icon = Dataset()
    icon.Rows = 2
    icon.add_new(0x7FE00010, "OB", bytes(8))
    ds.IconImageSequence = [icon]
    return ds


def test_json_bulk_threshold_and_nested_pixel_data():
    ds = _odd_dataset()
    model = header_json(ds)
    assert model["00091001"] == {"vr": "OB", "BulkDataURI": f"{OMITTED_BULK_DATA_URI}?bytes=5120"}
    assert model["00091002"] == {"vr": "UN", "InlineBinary": "YWJjAA=="}
    assert "60003000" not in model and "60000010" in model
    assert model["00880200"]["Value"][0] == {"00280010": {"vr": "US", "Value": [2]}}  # icon pixels gone
    assert model["00180050"] == {"vr": "DS", "Value": [2.5]}  # UN resolved by the dictionary
    assert model["00080020"] == {"vr": "DA", "Value": ["20231345"]}  # the JSON keeps the text
    assert header_json(ds, bulk_threshold_bytes=10_000)["00091001"]["InlineBinary"].startswith("AAECAwQF")
    problems: list[str] = []
    model = header_json(ds, problems=problems)
    assert model["00101030"] == {"vr": "DS", "Value": [None]}
    assert problems == ["00101030: non-finite number nan written as null"]
    json.dumps(model, allow_nan=False)


def test_bulk_data_tags():
    for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009, 0x60003000, 0x601E3000, 0x54001010, 0x00420011, 0x50003000):
        assert is_bulk_data_tag(tag), hex(tag)
    for tag in (0x60010010, 0x60003001, 0x00280010, 0x00091001):
        assert not is_bulk_data_tag(tag), hex(tag)


# --------------------------------------------------------------------------------------------
# (b) typed columns
# --------------------------------------------------------------------------------------------
def test_vr_table_covers_the_dictionary():
    vrs = {entry[0] for entry in datadict.DicomDictionary.values()}
    assert vrs - set(VR_LOGICAL_TYPE) == {"SQ", "NONE"}
    assert set(VR_LOGICAL_TYPE.values()) == {"string", "date", "double", "long", "pn", "binary"}
    expected = {"DA": "date", "TM": "string", "DT": "string", "DS": "double", "IS": "long", "FL": "double"}
    expected |= {"FD": "double", "SS": "long", "US": "long", "SL": "long", "UL": "long", "SV": "long", "UV": "long"}
    expected |= {"PN": "pn", "AS": "string", "CS": "string", "UI": "string", "UR": "string", "OB": "binary"}
    assert {vr: VR_LOGICAL_TYPE[vr] for vr in expected} == expected


def test_column_types_and_spark_ddl():
    types = column_types(["PixelSpacing", "StudyDate", "PatientName", "Rows", "ConvolutionKernel", "StudyTime"])
    assert types == {
        "PixelSpacing": LogicalType("double", True),
        "StudyDate": LogicalType("date"),
        "PatientName": LogicalType("pn"),
        "Rows": LogicalType("long"),
        "ConvolutionKernel": LogicalType("string", True),
        "StudyTime": LogicalType("string"),
    }
    assert types["PixelSpacing"].spark_ddl == "array<double>"
    assert types["Rows"].spark_ddl == "bigint"
    assert types["PatientName"].spark_ddl == "struct<" + ",".join(f"{f}:string" for f in PN_FIELDS) + ">"
    with pytest.raises(DicomError) as err:
        column_types(["NoSuchKeyword"])
    assert err.value.code == "UNKNOWN_KEYWORD"
    with pytest.raises(DicomError) as err:
        column_types(["ReferencedImageSequence"])
    assert err.value.code == "NOT_A_COLUMN"


def test_typed_values_of_ct_small():
    row = flatten(_sample("CT_small.dcm"))
    assert row.warnings == []
    assert row["PatientName"] == {
        "family": "CompressedSamples",
        "given": "CT1",
        "middle": None,
        "prefix": None,
        "suffix": None,
        "alphabetic": "CompressedSamples^CT1",
        "ideographic": None,
        "phonetic": None,
    }
    assert row["StudyDate"] == dt.date(2004, 1, 19)
    assert row["StudyTime"] == "07:27:30.000000"
    assert row["PixelSpacing"] == [0.661468, 0.661468]
    assert row["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert row["Rows"] == 128 and row["InstanceNumber"] == 1 and row["RescaleIntercept"] == -1024.0
    assert row["PatientBirthDate"] is None and row["AccessionNumber"] is None  # present, empty
    assert "PixelData" not in row and "ReferencedImageSequence" not in row
    types = column_types(row)
    python_type = {"string": str, "date": dt.date, "double": float, "long": int, "pn": dict, "binary": bytes}
    for keyword, value in row.items():
        if value is None:
            continue
        lt = types[keyword]
        items = value if lt.array else [value]
        assert isinstance(value, list) == lt.array, keyword
        assert all(v is None or type(v) is python_type[lt.kind] for v in items), (keyword, value)


def test_typed_values_of_odd_values():
    row = flatten(_odd_dataset())
    assert row["SliceThickness"] == 2.5
    assert row["StudyDate"] is None  # 2023-13-45
    assert row["SeriesDate"] == dt.date(2023, 2, 28)
    assert row["AcquisitionDate"] is None
    assert row["StudyTime"] == "15:35:00.000000"
    assert row["SeriesTime"] == "15:35:57.120000"
    assert row["AcquisitionTime"] is None
    assert row["AcquisitionDateTime"] == "2023-01-02T15:35:57.500000+01:00"
    assert row["PatientName"]["family"] == "Doe" and row["PatientName"]["suffix"] == "Jr"
    assert row["PatientName"]["ideographic"] == "ド^ジョン" and row["PatientName"]["phonetic"] == "どう^じょん"
    assert [p["given"] for p in row["OperatorsName"]] == ["B", "D"]
    assert row["WindowCenter"] == [40.0, -600.0]
    assert row["FrameIncrementPointer"] == ["00181063"]
    assert row["PatientWeight"] is None
    assert row["KVP"] == 120.0 and row["ConvolutionKernel"] == ["B40f", "2"]
    assert "OverlayRows" not in row and "OverlayData" not in row
    assert row.warnings == [
        "StudyDate: '20231345' is not a valid date (month must be in 1..12)",
        "AcquisitionTime: '25' is not a valid time of day",
        "PatientWeight: 'nan' is not a finite number",
    ]
    chosen = flatten(_odd_dataset(), ["PatientID", "SliceThickness", "StudyDate"])
    assert dict(chosen) == {"PatientID": None, "SliceThickness": 2.5, "StudyDate": None}
    assert instance_summary(_odd_dataset())["convolution_kernel"] == "B40f\\2"


@pytest.mark.parametrize(
    ("vr", "text", "expected"),
    [
        ("TM", "07", "07:00:00.000000"),
        ("TM", "0712", "07:12:00.000000"),
        ("TM", "071233.1", "07:12:33.100000"),
        ("TM", "07:12:33", "07:12:33.000000"),  # ACR-NEMA
        ("TM", "235960", "23:59:60.000000"),  # leap second
        ("TM", "2460", None),
        ("TM", "abc", None),
        ("DT", "2023", "2023-01-01T00:00:00.000000"),
        ("DT", "20230102", "2023-01-02T00:00:00.000000"),
        ("DT", "20230102101112.123456-0500", "2023-01-02T10:11:12.123456-05:00"),
        ("DT", "20230230", None),
        ("DA", "20240229", dt.date(2024, 2, 29)),
        ("DA", "20230229", None),
        ("DA", "2023-02-01", None),
    ],
)
def test_date_time_normalisation(vr: str, text: str, expected):
    keyword = {"TM": "StudyTime", "DT": "AcquisitionDateTime", "DA": "StudyDate"}[vr]
    ds = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add(DataElement(datadict.tag_for_keyword(keyword), vr, text))
    row = flatten(ds, [keyword])
    assert row[keyword] == expected
    assert (row.warnings == []) == (expected is not None)


# --------------------------------------------------------------------------------------------
# derived views
# --------------------------------------------------------------------------------------------
def test_instance_and_series_summary_of_the_real_series():
    files = sorted(_require(CT_SERIES).glob("*.dcm"))
    assert len(files) == 30
    rows = [instance_summary(read_dicom_file(p, stop_before_pixels=True)) for p in files]
    first = rows[0]
    assert first["manufacturer"] == "SIEMENS" and first["manufacturer_model_name"] == "Sensation 10"
    assert first["convolution_kernel"] == "B40f" and first["kvp"] == 120.0
    assert first["pixel_spacing_mm"] == pytest.approx((0.6465, 0.6465), abs=1e-4)
    assert first["rows"] == first["columns"] == 512 and first["number_of_frames"] == 1
    assert first["slice_thickness_mm"] == 8.0 and first["rescale_intercept"] == -1024.0
    assert first["image_orientation_patient"] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert first["transfer_syntax_uid"] == pydicom.uid.ExplicitVRLittleEndian
    assert first["study_date"] == dt.date(2007, 4, 25)
    series = series_summary(rows[::-1])
    assert series["instance_count"] == series["distinct_instance_count"] == series["frame_count"] == 30
    assert series["slice_step_mm"] == pytest.approx(8.0)
    assert series["extent_mm"] == pytest.approx(29 * 8.0)
    assert series["first_position_mm"][2] < series["last_position_mm"][2]
    assert series["instance_number_range"] == (1, 30)
    assert series["inconsistent"] == [] and series["modalities"] == ["CT"]
    study = study_summary(rows)
    assert study["series_count"] == 1 and study["instance_count"] == 30
    patient = patient_summary(rows)
    assert patient["patient_id"] == first["patient_id"] and patient["study_count"] == 1


def test_series_summary_flags_duplicates_and_inconsistencies():
    base = instance_summary(_sample("CT_small.dcm"))
    other = dict(base, sop_instance_uid="2.25.9", rows=256, image_position_patient_mm=(0.0, 0.0, 10.0))
    summary = series_summary([base, base, other])
    assert summary["duplicate_instance_count"] == 1 and summary["distinct_instance_count"] == 2
    assert summary["rows"] is None and summary["inconsistent"] == ["rows"]
    mixed = dict(base, series_instance_uid="2.25.77")
    for fn, code in ((series_summary, "MIXED_SERIES"), (study_summary, None), (patient_summary, None)):
        if code:
            with pytest.raises(DicomError) as err:
                fn([base, mixed])
            assert err.value.code == code
        else:
            assert fn([base, mixed])["series_count"] == 2
    with pytest.raises(DicomError) as err:
        series_summary([])
    assert err.value.code == "NO_INSTANCES"
    with pytest.raises(DicomError) as err:
        study_summary([base, dict(base, study_instance_uid="2.25.5")])
    assert err.value.code == "MIXED_STUDY"


def test_summary_types_match_values():
    summary = instance_summary(_sample("CT_small.dcm"))
    python_type = {"string": str, "date": dt.date, "double": float, "long": int}
    for key, lt in INSTANCE_SUMMARY_TYPES.items():
        value = summary[key]
        assert value is not None, key
        items = list(value) if lt.array else [value]
        assert all(type(v) is python_type[lt.kind] for v in items), (key, value)
    assert summary["image_position_patient_mm"] == (-158.135803, -179.035797, -75.699997)
