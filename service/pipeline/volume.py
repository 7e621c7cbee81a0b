"""DICOM datasets to one short-axis stack, ordered by geometry from base to apex.

Slices are ordered by the position of their centre along the slice normal
(ImagePositionPatient projected on the cross product of the two
ImageOrientationPatient directions), never by file order, file name or
InstanceNumber. The stack's direction is then chosen so that index 0 is the
base: the LV apex points to the patient's left, anterior and inferior (LPS
+x, -y, -z), so the apical end is the one further along (1, -1, -1).
Dextrocardia and situs inversus would be ordered apex first; a warning
cannot detect them, the reader must.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom import config
from pydicom.uid import UID
from pydicom.valuerep import validate_value

from service.errors import InputError
from service.pipeline.intensity import to_float

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.4"
MULTI_FRAME_MR = (ENHANCED_MR_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE)
APEX_DIRECTION_LPS = np.array([1.0, -1.0, -1.0]) / np.sqrt(3.0)
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE_MM = 1e-3
SAME_POSITION_MM = 0.01


class GeometryError(InputError):
    status_code = 422
    code = "inconsistent_geometry"


@dataclass(frozen=True)
class Slice:
    dataset: pydicom.Dataset
    frame_number: int | None  # 1-based frame of an Enhanced MR instance, None for single-frame
    image: np.ndarray  # float32, physical values (rescale applied)
    position: np.ndarray  # ImagePositionPatient of the first pixel, mm
    orientation: np.ndarray  # 6 direction cosines
    spacing: tuple[float, float]

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass(frozen=True)
class Volume:
    slices: list[Slice]  # base to apex
    spacing: tuple[float, float]  # (row, column) mm
    slice_spacing_mm: float  # median centre-to-centre distance
    normal: np.ndarray  # unit vector from base to apex
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    warnings: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[np.ndarray]:
        return [s.image for s in self.slices]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.slices), *self.slices[0].image.shape)


def _required(ds: pydicom.Dataset, keyword: str, what: str):
    value = ds.get(keyword)
    if value is None or value == "":
        raise GeometryError(f"{keyword} is missing, so the {what} is unknown",
                            code="missing_geometry")
    return value


def decode_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """The instance's pixel array (pydicom keeps it, so decoding twice costs nothing), or an
    InputError saying why it cannot be had (``corrupt_dicom`` for damaged pixel data)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise InputError(f"instance {ds.get('SOPInstanceUID', '?')} has no pixel data",
                         code="no_pixel_data", status_code=422)
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    try:
        return ds.pixel_array
    except NotImplementedError as exc:
        raise InputError(f"transfer syntax {syntax} ({syntax.name}) cannot be decoded here: "
                         f"{exc}", code="unsupported_transfer_syntax", status_code=415) from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - decoders raise many kinds on damaged data;
        # the Rust ones (pylibjpeg-rle) panic, and pyo3's PanicException is a BaseException.
        if not syntax.is_transfer_syntax:
            raise InputError(f"transfer syntax {syntax or '(none)'} is not supported",
                             code="unsupported_transfer_syntax", status_code=415) from None
        raise InputError(f"pixel data of instance {ds.get('SOPInstanceUID', '?')} cannot be "
                         f"decoded ({type(exc).__name__}: {exc}); the file may be truncated",
                         code="corrupt_dicom") from None


def _numbers(value, count: int, keyword: str) -> np.ndarray:
    """``count`` finite numbers from a DICOM value, or a 422 naming the attribute."""
    try:
        values = np.array([float(v) for v in (value if isinstance(value, list | tuple |
                                                      pydicom.multival.MultiValue)
                                              else [value])], dtype=float)
    except (TypeError, ValueError):
        values = np.array([])
    if values.size != count or not np.all(np.isfinite(values)):
        raise GeometryError(f"{keyword} must be {count} number(s), got {str(value)[:60]!r}",
                            code="missing_geometry")
    return values


def _rescale(item: pydicom.Dataset) -> tuple[float, float]:
    slope = _numbers(item.get("RescaleSlope", 1) or 1, 1, "RescaleSlope")[0]
    intercept = _numbers(item.get("RescaleIntercept", 0) or 0, 1, "RescaleIntercept")[0]
    return float(slope), float(intercept)


def _single_frame_slices(ds: pydicom.Dataset) -> list[Slice]:
    position = _numbers(_required(ds, "ImagePositionPatient", "slice position"), 3,
                        "ImagePositionPatient")
    orientation = _numbers(_required(ds, "ImageOrientationPatient", "slice orientation"), 6,
                           "ImageOrientationPatient")
    spacing = tuple(_numbers(_required(ds, "PixelSpacing", "pixel size"), 2, "PixelSpacing"))
    pixels = decode_pixels(ds)
    if pixels.ndim != 2:
        raise InputError(f"expected one 2-D image per MR instance, got shape {pixels.shape}",
                         code="unsupported_image", status_code=422)
    return [Slice(ds, None, to_float(pixels, *_rescale(ds)), position, orientation, spacing)]


def _functional(ds: pydicom.Dataset, frame: pydicom.Dataset, sequence: str):
    for groups in (frame, ds.get("SharedFunctionalGroupsSequence", [None])[0]):
        if groups is not None and sequence in groups and len(groups[sequence].value):
            return groups[sequence][0]
    raise GeometryError(f"{sequence} is missing from the Enhanced MR functional groups",
                        code="missing_geometry")


def _enhanced_slices(ds: pydicom.Dataset) -> list[Slice]:
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames:
        raise GeometryError("Enhanced MR without PerFrameFunctionalGroupsSequence",
                            code="missing_geometry")
    pixels = decode_pixels(ds)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape[0] != len(frames):
        raise GeometryError(f"{pixels.shape[0]} frames of pixel data but {len(frames)} "
                            "per-frame functional groups")
    out = []
    for k, frame in enumerate(frames):
        position = _numbers(_functional(ds, frame, "PlanePositionSequence")
                            .get("ImagePositionPatient"), 3, "ImagePositionPatient")
        orientation = _numbers(_functional(ds, frame, "PlaneOrientationSequence")
                               .get("ImageOrientationPatient"), 6, "ImageOrientationPatient")
        spacing = tuple(_numbers(_functional(ds, frame, "PixelMeasuresSequence")
                                 .get("PixelSpacing"), 2, "PixelSpacing"))
        try:
            slope, intercept = _rescale(_functional(ds, frame,
                                                    "PixelValueTransformationSequence"))
        except GeometryError:
            slope, intercept = 1.0, 0.0
        out.append(Slice(ds, k + 1, to_float(pixels[k], slope, intercept), position,
                         orientation, spacing))
    return out


def is_mr_image(ds: pydicom.Dataset) -> bool:
    """An MR image this service can analyse (single-frame MR or an Enhanced MR class)."""
    return (str(ds.get("Modality", "")) == "MR"
            and str(ds.get("SOPClassUID", "")) in (MR_IMAGE_STORAGE, *MULTI_FRAME_MR))


def _check_one_mr_series(datasets: list[pydicom.Dataset]) -> None:
    for ds in datasets:
        if not is_mr_image(ds):
            found = (f"{ds.get('Modality') or 'no modality'}, SOP class "
                     f"{ds.get('SOPClassUID') or 'none'}")
            raise InputError(f"instance is {found}; send MR Image or Enhanced MR Image "
                             "instances",
                             code="not_mr", status_code=422)
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if "" in series:
        raise InputError("an instance has no SeriesInstanceUID", code="missing_attribute",
                         status_code=422)
    if len(series) > 1:
        raise InputError(f"the request holds {len(series)} series; send one series per "
                         "analysis (or use STOW-RS, which splits them)", code="multiple_series",
                         status_code=422)
    studies = {str(ds.get("StudyInstanceUID", "")) for ds in datasets}
    if len(studies) != 1 or "" in studies:
        raise InputError("instances of one series must share one StudyInstanceUID",
                         code="missing_attribute", status_code=422)


# The patient and study attributes every derived object (SEG, SR) repeats from its source:
# a value that is not valid for its VR cannot be repeated validly, so it is refused here,
# by name and rule, instead of failing later in the SEG encoder.
COPIED_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                     "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                     "StudyID")
_VR_RULES = {"DA": "a date YYYYMMDD", "TM": "a time HHMMSS.FFFFFF", "PN": "one person name",
             "LO": "at most 64 characters", "SH": "at most 16 characters",
             "CS": "at most 16 upper-case characters"}


def _check_copied_attributes(ds: pydicom.Dataset) -> None:
    for keyword in COPIED_ATTRIBUTES:
        element = ds.data_element(keyword) if keyword in ds else None
        if element is None or element.value in (None, ""):
            continue
        vr = element.VR
        problem = element.VM > 1
        if not problem:
            try:
                validate_value(vr, element.value, config.RAISE)
            except (ValueError, TypeError):
                problem = True
        if problem:
            # The value itself is patient data: never repeated in a message or a log.
            raise InputError(f"{keyword} is not a valid DICOM {vr} value "
                             f"({_VR_RULES.get(vr, 'see PS3.5 6.2')}, one value); the SEG and "
                             f"SR must repeat it, so correct it at the source",
                             code="invalid_attribute", status_code=422)


def _check_consistent(slices: list[Slice]) -> None:
    first = slices[0]
    for s in slices[1:]:
        if np.abs(s.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise GeometryError("slices have different ImageOrientationPatient; send one "
                                "short-axis stack")
        if max(abs(a - b) for a, b in zip(s.spacing, first.spacing, strict=True)) \
                > SPACING_TOLERANCE_MM:
            raise GeometryError(f"slices have different PixelSpacing ({_mm(s.spacing)} vs "
                                f"{_mm(first.spacing)})")
        if s.image.shape != first.image.shape:
            raise GeometryError(f"slices have different matrix sizes ({s.image.shape} vs "
                                f"{first.image.shape})")
    row, col = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 \
            or abs(row @ col) > 0.01:
        raise GeometryError("ImageOrientationPatient is not two orthogonal unit vectors",
                            code="missing_geometry")
    if min(first.spacing) <= 0:
        raise GeometryError(f"PixelSpacing {_mm(first.spacing)} is not positive",
                            code="missing_geometry")


def _mm(spacing) -> str:
    """A spacing for a message: plain numbers (never numpy's ``np.float64(1.6)``)."""
    return " x ".join(f"{float(v):g}" for v in spacing) + " mm"


def build_volume(datasets: list[pydicom.Dataset]) -> Volume:
    """Check, decode and order one series; InputError says what is wrong with it."""
    if not datasets:
        raise InputError("no DICOM instances", code="no_files")
    _check_one_mr_series(datasets)
    _check_copied_attributes(datasets[0])
    slices: list[Slice] = []
    for ds in datasets:
        is_enhanced = str(ds.SOPClassUID) in MULTI_FRAME_MR
        slices.extend(_enhanced_slices(ds) if is_enhanced else _single_frame_slices(ds))
    _check_consistent(slices)
    warnings: list[str] = []

    normal = np.cross(slices[0].orientation[:3], slices[0].orientation[3:])
    normal /= np.linalg.norm(normal)
    if normal @ APEX_DIRECTION_LPS < 0:
        normal = -normal
    # Ties (duplicates) break on InstanceNumber then UID, so file order never matters.
    slices.sort(key=lambda s: (round(float(s.position @ normal) / SAME_POSITION_MM),
                               int(s.dataset.get("InstanceNumber", 0) or 0),
                               s.sop_instance_uid, s.frame_number or 0))

    unique: list[Slice] = []
    for s in slices:
        if unique and abs(float((s.position - unique[-1].position) @ normal)) < SAME_POSITION_MM:
            if unique[-1].sop_instance_uid == s.sop_instance_uid \
                    and unique[-1].frame_number == s.frame_number:
                warnings.append(f"instance {s.sop_instance_uid} was sent more than once; "
                                "the copy was ignored")
            else:
                warnings.append("two images share one slice position; the one with the "
                                f"lower InstanceNumber was kept, {s.sop_instance_uid} ignored")
            continue
        unique.append(s)
    if len(unique) < 2:
        raise InputError("the series has a single slice position; scar volume needs a "
                         "short-axis stack", code="single_slice", status_code=422)

    positions = np.array([float(s.position @ normal) for s in unique])
    steps = np.diff(positions)
    slice_spacing = float(np.median(steps))
    for k in np.nonzero(steps > 1.5 * slice_spacing)[0]:
        warnings.append(f"gap of {steps[k]:.1f} mm between slices {k} and {k + 1} (usual "
                        f"spacing {slice_spacing:.1f} mm); volumes assume the usual spacing")
    in_plane_offsets = [np.linalg.norm((s.position - unique[0].position)
                                       - ((s.position - unique[0].position) @ normal) * normal)
                        for s in unique]
    if max(in_plane_offsets) > 0.5 * max(unique[0].spacing):
        warnings.append("slices are shifted in-plane relative to each other; masks are "
                        "reported on each slice's own grid")

    ds0 = unique[0].dataset
    frames = {str(s.dataset.get("FrameOfReferenceUID", "")) for s in unique}
    if len(frames) > 1:
        raise GeometryError(f"the slices have {len(frames)} FrameOfReferenceUIDs; positions "
                            "from different frames of reference cannot be stacked")
    return Volume(
        slices=unique, spacing=unique[0].spacing, slice_spacing_mm=slice_spacing,
        normal=normal, study_instance_uid=str(ds0.StudyInstanceUID),
        series_instance_uid=str(ds0.SeriesInstanceUID),
        frame_of_reference_uid=str(_required(ds0, "FrameOfReferenceUID", "frame of reference")),
        warnings=warnings)
