"""ctlake.dicom.deid: PS3.15 Annex E Basic Profile + Retain Longitudinal Temporal Information with Modified
Dates Option.

Every dataset here is built in code with identifiers whose answer is known by construction (names, IDs, dates,
UIDs, a private block, nested sequences), then checked element by element, file meta and sequences included;
the real sample files and a synthetic `phi` cohort go through the same path as an edge node would.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from ctlake.dicom.deid import (
    DEFAULT_OFFSET_DAYS,
    PROFILE_VERSION,
    DeidProfile,
    annex_e_table,
    check_deidentified,
    date_offset_days,
    deidentify,
    deidentify_bytes,
    deidentify_path,
    pseudonym,
    remap_uid,
    time_offset_seconds,
)
from ctlake.dicom.reader import parse_dicom
from ctlake.errors import ConfigError, DeidentificationRefused, DicomError
from ctlake.synth import SynthConfig, generate_cohort
from ctlake.synth.dicomio import phi_found_in
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR", "ignore:VR lookup failed")

SITE = DeidProfile(site_key=b"site-A secret key, 32 bytes long", site_key_id="site-A")
OTHER_SITE = DeidProfile(site_key=b"site-B: another key of 32 bytes!", site_key_id="site-B")

PATIENT = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN20240611",
    "PatientBirthDate": "19570312",
    "PatientAddress": "12 Elm Street, Springfield, IL 62704",
    "PatientTelephoneNumbers": "+1 555 201 7788",
    "OtherPatientIDs": "555-12-3456",
}
STUDY = {
    "AccessionNumber": "A987654321",
    "InstitutionName": "Saint Example Hospital",
    "InstitutionAddress": "1 Hospital Way, Springfield",
    "ReferringPhysicianName": "HOUSE^GREGORY^^DR.",
    "OperatorsName": "CAMERON^ALLISON",
    "StationName": "EXAMPLECT01",
    "StudyDescription": "CT chest for Jane Doe",
    "StudyID": "ST-77123",
}
PRIVATE_TEXT = "Doe, Jane Q. (MRN20240611)"
NESTED_NAME = "WILSON^JAMES"
NESTED_PRIVATE_TEXT = "room 12B, bed Doe"
SOURCE_AE = "STEXAMPLE_CT1"
PHI_STRINGS = [*PATIENT.values(), *STUDY.values(), PRIVATE_TEXT, NESTED_NAME, NESTED_PRIVATE_TEXT, SOURCE_AE]

STUDY_UID = "1.2.826.0.1.3680043.8.498.10001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.10001.2"
FRAME_UID = "1.2.826.0.1.3680043.8.498.10001.3"
PIXELS = np.arange(16, dtype=np.uint16).reshape(4, 4)


def sop_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.10001.2.{n}"


def make_instance(
    n: int = 1,
    *,
    patient: dict[str, str] | None = None,
    study_uid: str = STUDY_UID,
    series_uid: str = SERIES_UID,
    study_date: str = "20190304",
    study_time: str = "101500",
    acquisition_time: str = "101742.25",
    refers_to: str | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    sop_class: str = CTImageStorage,
) -> Dataset:
    """One CT slice full of identifiers (values known by construction)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid(n)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = SOURCE_AE
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid(n)
    ds.ImageType = list(image_type)
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    for keyword, value in {**PATIENT, **(patient or {}), **STUDY}.items():
        setattr(ds, keyword, value)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime, ds.SeriesTime = study_time, study_time
    ds.AcquisitionTime = ds.ContentTime = acquisition_time
    ds.AcquisitionDateTime = f"{study_date}{acquisition_time.split('.')[0]}.250000+0100"
    ds.DateOfLastCalibration = "20190301"  # a date without its time: moves by whole days
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, FRAME_UID
    ds.InstanceNumber = n

    block = ds.private_block(0x0011, "ACME RIS 2.1", create=True)
    block.add_new(0x01, "LO", PRIVATE_TEXT)

    request = Dataset()  # Request Attributes Sequence is X: goes as a whole
    request.ScheduledPerformingPhysicianName = NESTED_NAME
    request.RequestedProcedureID = "RP-4471"
    request.StudyInstanceUID = study_uid
    ds.RequestAttributesSequence = Sequence([request])

    series_ref = Dataset()  # not in Table E.1-1: kept and walked
    series_ref.SeriesInstanceUID = series_uid
    series_ref.PerformingPhysicianName = NESTED_NAME
    nested_block = series_ref.private_block(0x0029, "ACME CT 1.0", create=True)
    nested_block.add_new(0x10, "LO", NESTED_PRIVATE_TEXT)
    ds.ReferencedSeriesSequence = Sequence([series_ref])
    if refers_to is not None:
        source = Dataset()  # X/Z/U*: kept, UIDs inside remapped
        source.ReferencedSOPClassUID = CTImageStorage
        source.ReferencedSOPInstanceUID = refers_to
        ds.SourceImageSequence = Sequence([source])

    ds.Rows, ds.Columns = PIXELS.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = PIXELS.tobytes()
    return ds


def all_strings(ds: Dataset) -> list[str]:
    """Every value of every element (file meta, nested items, private blocks) as text."""
    out: list[str] = []
    elements = list(ds.file_meta.iterall()) if getattr(ds, "file_meta", None) is not None else []
    for elem in [*elements, *ds.iterall()]:
        if elem.VR == "SQ" or elem.value is None:
            continue
        if isinstance(elem.value, bytes):
            if elem.tag != 0x7FE00010:
                out.append(elem.value.decode("latin-1"))
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        out.extend(str(v) for v in values)
    return out


def instant(ds: Dataset, date_kw: str, time_kw: str) -> dt.datetime:
    day = dt.datetime.strptime(str(ds.data_element(date_kw).value), "%Y%m%d")
    hhmmss, _, frac = str(ds.data_element(time_kw).value).partition(".")
    seconds = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6])
    return day + dt.timedelta(seconds=seconds, microseconds=int(frac.ljust(6, "0")) if frac else 0)


# --------------------------------------------------------------------------------------------
# the embedded table
# --------------------------------------------------------------------------------------------
def test_table_is_the_whole_annex_e_table_with_its_patterns():
    rows = annex_e_table()
    assert len(rows) >= 600
    by_tag = {r.tag: r for r in rows}
    assert len(by_tag) == len(rows), "one row per tag"
    expect = {
        "(0010,0010)": ("PatientName", "Z", ""),
        "(0010,0020)": ("PatientID", "Z/D", ""),
        "(0010,0030)": ("PatientBirthDate", "Z", ""),  # no option entry: emptied, not shifted
        "(0008,0020)": ("StudyDate", "Z", "C"),
        "(0008,0030)": ("StudyTime", "Z", "C"),
        "(0008,002A)": ("AcquisitionDateTime", "X/Z/D", "C"),
        "(0008,0018)": ("SOPInstanceUID", "U", ""),
        "(0002,0003)": ("MediaStorageSOPInstanceUID", "U", ""),
        "(0008,1140)": ("ReferencedImageSequence", "X/Z/U*", ""),
        "(0008,0080)": ("InstitutionName", "X/Z/D", ""),
        "(0040,0275)": ("RequestAttributesSequence", "X", ""),
        "(50xx,xxxx)": ("CurveData", "X", ""),
        "(60xx,3000)": ("OverlayData", "X", ""),
        "(60xx,4000)": ("OverlayComments", "X", ""),
        "(gggg,eeee)": ("PrivateAttributes", "X", ""),
    }
    for tag, (keyword, basic, option) in expect.items():
        row = by_tag[tag]
        assert (row.keyword, row.basic, row.modified_dates) == (keyword, basic, option), tag
    assert {r.basic for r in rows} == {"X", "Z", "D", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
    assert all("UID" not in r.keyword for r in rows if r.modified_dates == "C")


# --------------------------------------------------------------------------------------------
# keyed derivations
# --------------------------------------------------------------------------------------------
def test_keyed_derivations_are_stable_per_key_and_differ_across_keys():
    uid = sop_uid(1)
    new = remap_uid(uid, SITE.site_key)
    assert new == remap_uid(uid + "\x00", SITE.site_key) == remap_uid(f" {uid} ", SITE.site_key)
    assert new != remap_uid(uid, OTHER_SITE.site_key)
    assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid
    assert remap_uid("", SITE.site_key) == ""

    alias = pseudonym("MRN20240611", SITE.site_key)
    assert alias == pseudonym("MRN20240611  ", SITE.site_key)
    assert alias != pseudonym("MRN20240611", OTHER_SITE.site_key)
    assert alias.startswith("P-") and len(alias) == 18 and alias[2:].isalnum()

    offsets = [date_offset_days(f"MRN{i:08d}", SITE.site_key) for i in range(200)]
    low, high = DEFAULT_OFFSET_DAYS
    assert all(low <= d <= high for d in offsets) and len(set(offsets)) > 150
    seconds = [time_offset_seconds(f"MRN{i:08d}", SITE.site_key) for i in range(200)]
    assert all(1 <= s <= 86399 for s in seconds)


def test_profile_refuses_a_weak_key_and_a_bad_offset_range():
    with pytest.raises(ConfigError):
        DeidProfile(site_key=b"short")
    with pytest.raises(ConfigError):
        DeidProfile(site_key=b"k" * 32, offset_days=(-30, 0))
    assert "site-A secret" not in repr(SITE)


# --------------------------------------------------------------------------------------------
# de-identification of one instance
# --------------------------------------------------------------------------------------------
def test_no_identifier_survives_anywhere():
    ds = make_instance(1, refers_to=sop_uid(2))
    out = deidentify(ds, SITE).dataset
    texts = all_strings(out)
    originals = [*PHI_STRINGS, STUDY_UID, SERIES_UID, FRAME_UID, sop_uid(1), sop_uid(2), "20190304", "101500"]
    leaks = [(phi, text) for phi in originals for text in texts if phi in text]
    assert leaks == []
    assert all(not elem.tag.is_private for elem in out.iterall())
    assert "RequestAttributesSequence" not in out
    assert "PatientBirthDate" in out and not out.PatientBirthDate  # Z: present, empty
    assert "PatientAddress" not in out and "OtherPatientIDs" not in out  # X
    assert out.InstitutionName == "ANONYMIZED"  # X/Z/D -> D
    assert out.AccessionNumber in (None, "")  # Z
    nested = out.ReferencedSeriesSequence[0]
    assert "PerformingPhysicianName" not in nested and len(nested) == 1  # private block gone too
    assert check_deidentified(out, known_phi=PHI_STRINGS) == []


def test_identity_markers_and_method_codes():
    out = deidentify(make_instance(), SITE).dataset
    alias = pseudonym(PATIENT["PatientID"], SITE.site_key)
    assert out.PatientID == alias and str(out.PatientName) == alias
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert PROFILE_VERSION in out.DeidentificationMethod
    codes = {(c.CodeValue, c.CodingSchemeDesignator) for c in out.DeidentificationMethodCodeSequence}
    assert codes == {("113100", "DCM"), ("113107", "DCM")}


def test_uids_are_remapped_consistently_across_instances_and_references():
    first = deidentify(make_instance(1), SITE).dataset
    second = deidentify(make_instance(2, refers_to=sop_uid(1)), SITE).dataset
    assert first.StudyInstanceUID == second.StudyInstanceUID == remap_uid(STUDY_UID, SITE.site_key)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != SERIES_UID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert second.SourceImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert second.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage  # a class UID is kept
    assert second.ReferencedSeriesSequence[0].SeriesInstanceUID == second.SeriesInstanceUID
    for out in (first, second):
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert "SourceApplicationEntityTitle" not in out.file_meta

    elsewhere = deidentify(make_instance(1), OTHER_SITE).dataset
    assert elsewhere.SOPInstanceUID != first.SOPInstanceUID
    assert elsewhere.StudyInstanceUID != first.StudyInstanceUID
    assert elsewhere.PatientID != first.PatientID


def test_dates_move_by_one_offset_per_patient_so_intervals_are_kept():
    jane_1 = make_instance(1, study_date="20190304", study_time="101500", acquisition_time="101742.25")
    jane_2 = make_instance(
        2,
        study_uid=STUDY_UID + ".9",
        series_uid=SERIES_UID + ".9",
        study_date="20200715",
        study_time="235000",
        acquisition_time="235930.5",
    )
    john = make_instance(3, patient={"PatientID": "MRN99887766", "PatientName": "ROE^JOHN"})
    out_1, out_2, out_john = (deidentify(ds, SITE).dataset for ds in (jane_1, jane_2, john))

    def shift(src: Dataset, out: Dataset, date_kw: str, time_kw: str) -> dt.timedelta:
        return instant(out, date_kw, time_kw) - instant(src, date_kw, time_kw)

    pid = PATIENT["PatientID"]
    expected = dt.timedelta(days=date_offset_days(pid, SITE.site_key), seconds=time_offset_seconds(pid, SITE.site_key))
    for src, out in ((jane_1, out_1), (jane_2, out_2)):
        assert shift(src, out, "StudyDate", "StudyTime") == expected
        assert shift(src, out, "AcquisitionDate", "AcquisitionTime") == expected
        assert out.StudyDate != src.StudyDate and out.StudyTime != src.StudyTime
        # a date without its time moves by whole days
        moved = dt.datetime.strptime(out.DateOfLastCalibration, "%Y%m%d") - dt.datetime(2019, 3, 1)
        assert moved.days == date_offset_days(pid, SITE.site_key)
        # a DT moves as one instant, precision and UTC offset kept
        original = dt.datetime.strptime(src.AcquisitionDateTime[:21], "%Y%m%d%H%M%S.%f")
        assert out.AcquisitionDateTime.endswith("+0100") and len(out.AcquisitionDateTime) == 26
        assert dt.datetime.strptime(out.AcquisitionDateTime[:21], "%Y%m%d%H%M%S.%f") - original == expected
    interval = instant(jane_2, "StudyDate", "StudyTime") - instant(jane_1, "StudyDate", "StudyTime")
    assert instant(out_2, "StudyDate", "StudyTime") - instant(out_1, "StudyDate", "StudyTime") == interval
    assert shift(john, out_john, "StudyDate", "StudyTime") != expected


def test_times_can_be_kept_while_dates_move_by_whole_days():
    profile = DeidProfile(site_key=SITE.site_key, shift_time_of_day=False)
    src = make_instance(study_time="235000")
    out = deidentify(src, profile).dataset
    days = date_offset_days(PATIENT["PatientID"], SITE.site_key)
    assert out.StudyTime == "235000" and out.AcquisitionTime == src.AcquisitionTime
    assert (dt.datetime.strptime(out.StudyDate, "%Y%m%d") - dt.datetime(2019, 3, 4)).days == days


@pytest.mark.parametrize(
    "value, length",
    [("2019", 4), ("201903", 6), ("20190304", 8), ("20190304101742", 14), ("20190304101742.25+0100", 22)],
)
def test_a_datetime_keeps_its_precision(value: str, length: int):
    src = make_instance()
    src.AcquisitionDateTime = value
    out = deidentify(src, SITE).dataset.AcquisitionDateTime
    assert len(out) == length and out < value  # same precision, earlier
    assert out.endswith("+0100") == value.endswith("+0100")


def test_an_unparseable_date_gets_the_basic_action():
    src = make_instance()
    src.StudyDate = "20190399"  # the right shape, no such day
    out = deidentify(src, SITE).dataset
    assert out.StudyDate in (None, "")  # Z
    assert check_deidentified(out) == []


def test_input_dataset_is_not_modified():
    ds = make_instance(1, refers_to=sop_uid(2))
    before = copy.deepcopy(ds)
    deidentify(ds, SITE)
    assert ds == before
    assert ds.file_meta == before.file_meta
    assert ds.PatientName == PATIENT["PatientName"] and ds.private_block(0x0011, "ACME RIS 2.1")[0x01].value


def test_audit_names_what_was_done_never_a_value():
    result = deidentify(make_instance(1, refers_to=sop_uid(2)), SITE)
    audit = result.audit
    actions = audit.actions()
    assert actions["PatientName"] == "D" and actions["PatientID"] == "D"
    assert actions["StudyDate"] == "C" and actions["PatientAddress"] == "X"
    assert actions["AccessionNumber"] == "Z" and actions["SOPInstanceUID"] == "U"
    assert actions["RequestAttributesSequence"] == "X"
    assert actions["SourceImageSequence[0].ReferencedSOPInstanceUID"] == "U"
    assert actions["ReferencedSeriesSequence[0].PerformingPhysicianName"] == "X"
    assert actions["(0011,0010)"] == "X" and actions["(0011,1001)"] == "X"  # private creator and its element
    assert audit.profile_version == PROFILE_VERSION
    assert audit.site_key_id_sha256 == SITE.site_key_id_sha256 and len(audit.site_key_id_sha256) == 64
    text = json.dumps(audit.to_dict())
    originals = [*PHI_STRINGS, STUDY_UID, SERIES_UID, sop_uid(1), sop_uid(2), "20190304", "101500", "site-A"]
    assert [v for v in originals if v in text] == []
    assert SITE.site_key.decode() not in text and result.patient_pseudonym not in text


# --------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------
def test_burned_in_annotation_is_refused_even_when_cleared():
    ds = make_instance()
    ds.BurnedInAnnotation = "YES"
    for allow in (False, True):
        with pytest.raises(DeidentificationRefused) as err:
            deidentify(ds, SITE, allow_secondary=allow)
        assert err.value.code == "BURNED_IN_ANNOTATION"


@pytest.mark.parametrize(
    "image_type, sop_class",
    [
        (("DERIVED", "SECONDARY", "AXIAL"), CTImageStorage),
        (("ORIGINAL", "PRIMARY", "SCREEN SAVE"), CTImageStorage),
        (("ORIGINAL", "PRIMARY"), SecondaryCaptureImageStorage),
    ],
)
def test_secondary_capture_is_refused_unless_an_operator_cleared_it(image_type, sop_class):
    ds = make_instance(image_type=image_type, sop_class=sop_class)
    with pytest.raises(DeidentificationRefused) as err:
        deidentify(ds, SITE)
    assert err.value.code == "SECONDARY_CAPTURE"
    with pytest.raises(DeidentificationRefused):
        deidentify_bytes(part10(ds), SITE)
    out = deidentify(ds, SITE, allow_secondary=True).dataset
    assert check_deidentified(out, known_phi=PHI_STRINGS) == []


# --------------------------------------------------------------------------------------------
# the gate
# --------------------------------------------------------------------------------------------
def test_gate_flags_a_raw_instance_and_passes_its_deidentified_copy():
    raw = make_instance(1, refers_to=sop_uid(2))
    reasons = check_deidentified(raw, known_phi=PHI_STRINGS)
    codes = {r.split(":")[0] for r in reasons}
    assert codes >= {"IDENTITY_NOT_REMOVED", "PRIVATE_TAG", "NOT_CLEANED", "UID_NOT_REMAPPED", "KNOWN_PHI"}
    assert any("ReferencedSeriesSequence[0].(0029,1010)" in r for r in reasons), "nested private tag"
    assert not any(phi in r for r in reasons for phi in PHI_STRINGS), "reasons never quote a value"

    out = deidentify(raw, SITE).dataset
    assert check_deidentified(out, known_phi=PHI_STRINGS) == []
    out.BodyPartExamined = "CHEST DOE^JANE^Q"  # PHI in an attribute the table does not list
    assert [r.split(":")[0] for r in check_deidentified(out, known_phi=PHI_STRINGS)] == ["KNOWN_PHI"]
    out.BodyPartExamined = "CHEST"
    out.ReferencedSeriesSequence[0].OperatorsName = "CAMERON^ALLISON"
    assert any(r.startswith("NOT_CLEANED: ReferencedSeriesSequence[0].OperatorsName") for r in check_deidentified(out))


# --------------------------------------------------------------------------------------------
# Part-10 bytes and files
# --------------------------------------------------------------------------------------------
def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def test_bytes_round_trip_keeps_transfer_syntax_and_pixels(tmp_path: Path):
    src = make_instance(1)
    payload, audit = deidentify_bytes(part10(src), SITE)
    out = pydicom.dcmread(io.BytesIO(payload))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PixelData == PIXELS.tobytes()
    assert (
        out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID == deidentify(src, SITE).dataset.SOPInstanceUID
    )
    assert audit.entries and check_deidentified(out, known_phi=PHI_STRINGS) == []

    (tmp_path / "in.dcm").write_bytes(part10(src))
    deidentify_path(tmp_path / "in.dcm", tmp_path / "out" / "a.dcm", SITE)
    assert pydicom.dcmread(tmp_path / "out" / "a.dcm").SOPInstanceUID == out.SOPInstanceUID
    with pytest.raises(DicomError) as err:
        deidentify_bytes(b"not a dicom file at all", SITE)
    assert err.value.code == "NOT_DICOM"
    with pytest.raises(DicomError):
        deidentify_path(tmp_path / "missing.dcm", tmp_path / "out" / "b.dcm", SITE)
    assert not (tmp_path / "out" / "b.dcm").exists()


def _sample_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("LICENSE"))


@pytest.mark.parametrize("allow_secondary", [False, True])
def test_every_sample_file_is_deidentified_or_refused(shared_data: Path, allow_secondary: bool):
    files = _sample_files(shared_data / "dicom" / "samples")
    assert len(files) >= 15
    done: dict[str, str] = {}
    for path in files:
        data = path.read_bytes()
        try:
            payload, _ = deidentify_bytes(data, SITE, allow_secondary=allow_secondary)
        except (DeidentificationRefused, DicomError) as exc:
            done[path.name] = exc.code
            continue
        done[path.name] = "ok"
        src = parse_dicom(data)  # the same reader as the pipeline (no_meta.dcm has no preamble)
        out = pydicom.dcmread(io.BytesIO(payload))
        known = [str(src.get(k, "")) for k in ("PatientName", "PatientID")]
        assert check_deidentified(out, known_phi=[k for k in known if len(k.strip("^ ")) > 2]) == [], path.name
        assert out.get("PixelData") == src.get("PixelData"), path.name
        src_syntax = src.file_meta.get("TransferSyntaxUID") if getattr(src, "file_meta", None) else None
        if src_syntax:
            assert out.file_meta.TransferSyntaxUID == src_syntax, path.name
    assert done["CT_small.dcm"] == done["693_J2KR.dcm"] == done["MR_small_bigendian.dcm" if allow_secondary else "2062"]
    assert done["CT_small.dcm"] == "ok"
    assert done["MR_small.dcm"] == ("ok" if allow_secondary else "SECONDARY_CAPTURE")
    assert done["image_dfl.dcm"] == ("ok" if allow_secondary else "SECONDARY_CAPTURE")  # deflated, no PatientID
    assert done["nested_priv_SQ.dcm"] != "ok"  # no patient, study or instance to file it under
    assert done["no_meta.dcm"] == "ok"  # a bare data set without preamble or file meta


def test_nested_private_sequences_of_a_sample_are_removed(shared_data: Path):
    ds = pydicom.dcmread(shared_data / "dicom" / "samples" / "nested_priv_SQ.dcm", force=True)
    ds.SOPInstanceUID = sop_uid(7)
    out = deidentify(ds, SITE).dataset
    assert not any(elem.tag.is_private for elem in out.iterall())
    assert out.PixelData == ds.PixelData


@pytest.fixture(scope="module")
def phi_cohort(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("phi_cohort")
    manifest = generate_cohort(root, SynthConfig(patients=1, size=32, slices=8, edge_cases=("phi",)))
    return root, manifest


def test_planted_phi_of_a_synthetic_cohort_is_gone(phi_cohort, tmp_path: Path):
    root, manifest = phi_cohort
    planted = [p["value"] for s in manifest.series for p in s.phi_values]
    assert len(planted) >= 15
    outputs = []
    for series in manifest.series:
        for record in series.files:
            audit = deidentify_path(root / record.path, tmp_path / record.path, SITE)
            assert audit.entries
            outputs.append(pydicom.dcmread(tmp_path / record.path))
    assert len(outputs) == 8
    for out in outputs:
        assert phi_found_in(out) & set(planted) == set()
        texts = all_strings(out)
        assert [v for v in planted for t in texts if v in t] == []
        assert check_deidentified(out, known_phi=planted) == []
    assert len({o.PatientID for o in outputs}) == len({o.SeriesInstanceUID for o in outputs}) == 1
