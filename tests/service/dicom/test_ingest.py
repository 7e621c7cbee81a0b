"""Ingest's conversion of every element, once a series (issue 54): the same datasets and
the same refusals as converting every element of every instance."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataelem import RawDataElement

from service.dicom import headers, ingest
from service.dicom.ingest import Blob, read_dataset
from service.dicom.instances import one_copy_each
from service.errors import InputError


def _elements(ds: pydicom.Dataset) -> list[tuple]:
    """Every element, sequences' items included, converted: what a later stage reads."""
    return [(e.tag, e.VR, e.value) for e in ds.iterall() if e.VR != "SQ"]


def _blobs(series_dir: Path) -> list[Blob]:
    return [Blob(p.name, p) for p in sorted((series_dir / "dicom").glob("*.dcm"))]


def test_a_series_converted_once_gives_the_datasets_of_every_element_converted(
        series_dirs, monkeypatch) -> None:
    blobs = _blobs(series_dirs[0])
    whole = [read_dataset(b) for b in blobs]
    calls = []
    original = ingest.convert_raw_data_element
    monkeypatch.setattr(ingest, "convert_raw_data_element",
                        lambda raw, **kw: calls.append(raw.tag) or original(raw, **kw))
    converted: ingest.Converted = set()
    shared = [read_dataset(b, converted) for b in blobs]
    # Left as read, so the headers share their encodings; the same bytes packed.
    assert headers.pack_headers(shared) == headers.pack_headers(whole)
    assert [_elements(ds) for ds in shared] == [_elements(ds) for ds in whole]
    elements = len(whole[0])
    # The instances differ in a few elements (UIDs, position, number, pixels).
    assert elements <= len(calls) < 3 * elements
    assert len(calls) == len(converted)


def _with_element(path: Path, out: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(old) == 1
    out.write_bytes(data.replace(old, new))
    return out


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def test_a_damaged_element_is_refused_in_whichever_instance_carries_it(series_dirs,
                                                                       tmp_path) -> None:
    """A US of three bytes in the last instance, after the others' (good) Rows were
    converted: 400 corrupt_dicom naming that file, as with every element converted."""
    blobs = _blobs(series_dirs[0])
    tag = 0x00280010  # Rows, US
    good = _explicit(tag, "US", struct.pack("<H", pydicom.dcmread(blobs[-1].path).Rows))
    damaged = Blob(blobs[-1].name, _with_element(blobs[-1].path, tmp_path / "last.dcm", good,
                                                 _explicit(tag, "US", b"\x01\x02\x03")))
    with pytest.raises(InputError) as alone:
        read_dataset(damaged)
    assert alone.value.code == "corrupt_dicom" and "BytesLengthException" in alone.value.message
    with pytest.raises(InputError) as in_series:
        one_copy_each([*blobs[:-1], damaged], 10**9)
    assert (in_series.value.code, in_series.value.message) == ("corrupt_dicom",
                                                               alone.value.message)


def test_the_same_bytes_under_another_character_set_read_as_that_set(series_dirs,
                                                                     tmp_path) -> None:
    """A name's bytes are Latin-1 in one instance and Cyrillic in the next."""
    source = _blobs(series_dirs[0])[:2]
    blobs = []
    for k, (blob, charset) in enumerate(zip(source, ("ISO_IR 100", "ISO_IR 144"),
                                            strict=True)):
        ds = pydicom.dcmread(blob.path)
        ds.SpecificCharacterSet = charset
        ds.save_as(tmp_path / f"{k}.dcm", enforce_file_format=True)
        name = _explicit(0x00100010, "PN", _explicit_value(ds.PatientName))
        blobs.append(Blob(blob.name, _with_element(tmp_path / f"{k}.dcm", tmp_path / f"n{k}.dcm",
                                                   name, _explicit(0x00100010, "PN",
                                                                   b"\xc4\xc4"))))
    converted: ingest.Converted = set()
    first, second = (read_dataset(b, converted) for b in blobs)
    assert (str(first.PatientName), str(second.PatientName)) == ("ÄÄ", "ФФ")


def _explicit_value(value) -> bytes:
    data = str(value).encode("ascii")
    return data + b" " * (len(data) % 2)


@pytest.mark.parametrize("path", [p for p in get_testdata_files("*.dcm")
                                  if Path(p).stat().st_size < 2_000_000],
                         ids=lambda p: Path(p).name)
def test_pydicoms_files_give_the_same_dataset_or_the_same_refusal(path: str,
                                                                  tmp_path) -> None:
    """Implicit VR, big endian, sequences, character sets, private tags, damaged files:
    read twice as one series (the second copy's elements all seen before), each the same
    elements as with every element converted, or the same 400."""
    blob = Blob("file", Path(shutil.copy(path, tmp_path / "a.dcm")))
    try:
        expected = _elements(read_dataset(blob))
    except InputError as exc:
        for _ in range(2):
            with pytest.raises(InputError) as again:
                read_dataset(blob, set())
            assert (again.value.code, again.value.message) == (exc.code, exc.message)
        return
    converted: ingest.Converted = set()
    for _ in range(2):
        assert _elements(read_dataset(blob, converted)) == expected


def test_an_element_left_as_read_is_raw_until_used(series_dirs) -> None:
    blob = _blobs(series_dirs[0])[0]
    ds = read_dataset(blob, set())
    assert isinstance(ds.get_item(0x00180087), RawDataElement)  # Magnetic Field Strength
    assert isinstance(read_dataset(blob).get_item(0x00180087), pydicom.DataElement)
