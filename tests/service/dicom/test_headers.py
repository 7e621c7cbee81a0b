"""The stored source headers (issue 54): each element of a series encoded once, the same
bytes as pydicom writing every instance's header whole, and the same refusals."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException

from service.dicom import headers
from service.dicom.ingest import Blob, read_dataset
from tests.conftest import read_series


def _members(packed: bytes) -> list[bytes]:
    with zipfile.ZipFile(io.BytesIO(packed)) as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]


def _whole(paths: list[Path]) -> list[bytes]:
    """Every header written whole by pydicom (the code before issue 54), on fresh reads."""
    return [headers._header(pydicom.dcmread(p)) for p in paths]


def test_a_series_packs_to_the_bytes_of_each_header_written_whole(series_dirs) -> None:
    paths = sorted((series_dirs[0] / "dicom").glob("*.dcm"))
    # As the service holds them (every value converted at ingest) and as read (raw).
    ingested = [read_dataset(Blob(p.name, p)) for p in paths]
    assert _members(headers.pack_headers(ingested)) == _whole(paths)
    assert _members(headers.pack_headers([pydicom.dcmread(p) for p in paths])) == _whole(paths)


def test_shared_elements_are_encoded_once(series_dirs) -> None:
    datasets = read_series(series_dirs[0])
    encoded: headers.Encoded = {}
    for ds in datasets:
        headers._header_shared(ds, encoded)
    elements = len([t for t in datasets[0].keys() if 2 < t.group < headers.PIXEL_GROUP])
    # The instances differ in a few elements (UIDs, position, number): far fewer encodings
    # than elements times instances.
    assert elements <= len(encoded) < 3 * elements


@pytest.mark.parametrize("path", [p for p in get_testdata_files("*.dcm")
                                  if Path(p).stat().st_size < 2_000_000],
                         ids=lambda p: Path(p).name)
def test_pydicoms_files_give_the_same_header_or_the_same_error(path: str) -> None:
    """Implicit VR, big endian, sequences, character sets, private tags: the same bytes
    (or the same exception) as the header written whole."""
    try:
        pydicom.dcmread(path)
    except Exception:  # noqa: BLE001 - some of pydicom's files are deliberately broken
        pytest.skip("pydicom cannot read it")
    try:
        expected = headers._header(pydicom.dcmread(path))
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)):
            headers._header_shared(pydicom.dcmread(path), {})
        return
    encoded: headers.Encoded = {}
    assert headers._header_shared(pydicom.dcmread(path), encoded) == expected
    # Read again with the elements already encoded: the same bytes from the cache.
    assert headers._header_shared(pydicom.dcmread(path), encoded) == expected


def test_an_element_that_cannot_be_read_back_fails_in_any_instance(series_dirs) -> None:
    """An element that does not convert fails as it did with every header written whole,
    whichever instance carries it, after the others' elements were encoded (a US of three
    bytes: ingest refuses such a file as corrupt before, so this is the last line)."""
    paths = sorted((series_dirs[0] / "dicom").glob("*.dcm"))
    tag = pydicom.tag.Tag(0x00181310)  # Acquisition Matrix, US

    def damaged() -> list[pydicom.Dataset]:
        datasets = [pydicom.dcmread(p) for p in paths]
        datasets[-1]._dict[tag] = RawDataElement(tag, "US", 3, b"\x01\x02\x03", 0, False,
                                                 True)
        return datasets

    with pytest.raises(BytesLengthException):
        headers._header(damaged()[-1])
    with pytest.raises(BytesLengthException):
        headers.pack_headers(damaged())


def test_packing_leaves_the_sources_as_they_were() -> None:
    """pydicom's FileMetaDataset(ds.file_meta) shares the source's elements: setting the
    copy's transfer syntax set the source's, so an RLE image no longer decoded by its own."""
    from service.pipeline.volume import decode_pixels

    path = get_testdata_files("MR_small_RLE.dcm")[0]
    expected = pydicom.dcmread(path).pixel_array
    ds = pydicom.dcmread(path)
    syntax, meta = ds.file_meta.TransferSyntaxUID, dict(ds.file_meta.items())
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"  # unlike SOPInstanceUID: the copy's set
    headers.SourceHeaders([ds]).pack([ds])
    headers.pack_headers([ds])
    assert ds.file_meta.TransferSyntaxUID == syntax != pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3"
    assert set(ds.file_meta.keys()) == set(meta)
    assert (decode_pixels(ds) == expected).all()


def test_headers_encoded_as_read_pack_as_after_the_volume_stage(series_dirs) -> None:
    """Encoded before the volume stage converts what it reads (the service's order), the
    same bytes as packed after it; the sources' elements left as read share encodings."""
    from service.dicom.seg import distinct_datasets
    from service.pipeline.volume import build_volume

    paths = sorted((series_dirs[0] / "dicom").glob("*.dcm"))
    converted: set = set()
    datasets = [read_dataset(Blob(p.name, p), converted) for p in paths]
    early = headers.SourceHeaders(datasets)
    assert len(early._encoded) < 2 * len(datasets[0])  # shared, file meta included
    volume = build_volume(datasets)
    sources = distinct_datasets(volume.slices)
    assert early.pack(sources) == headers.pack_headers(sources)
    assert _members(early.pack(sources)) == _whole([Path(s.filename) for s in sources])


def test_a_value_that_cannot_be_written_fails_when_its_instance_is_packed(series_dirs) -> None:
    paths = sorted((series_dirs[0] / "dicom").glob("*.dcm"))
    datasets = [pydicom.dcmread(p) for p in paths]
    datasets[-1].add_new(0x00181310, "US", [70000, 0, 0, 256])  # over a US's 65535
    early = headers.SourceHeaders(datasets)  # no refusal yet: the volume stage comes first
    assert len(_members(early.pack(datasets[:-1]))) == len(datasets) - 1
    with pytest.raises(OSError, match="ushort format") as refused:
        early.pack(datasets)
    with pytest.raises(OSError) as whole:
        headers.pack_headers(datasets)
    assert str(whole.value) == str(refused.value)
