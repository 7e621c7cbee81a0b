"""The analysis as a DICOM Segmentation (highdicom), following the contract's conventions.

BINARY, three segments (Myocardium; Scar inside it; MVO inside the scar, empty
when there is none) with SCT codes, one frame per
source image and segment with empty frames kept (viewers misplace masks
when they are omitted), per-frame references to the source MR instances,
same Study and Frame of Reference, a new Series.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr.coding import CodedConcept
from pydicom.sr.codedict import codes

from service import __version__
from service.dicom.uids import UidMaker, random_uids, rename_uid, stamp
from service.pipeline.volume import GeometryError

MYOCARDIUM_CATEGORY = CodedConcept("91723000", "SCT", "Anatomical Structure")
MYOCARDIUM_TYPE = CodedConcept("74281007", "SCT", "Myocardium")
SCAR_CATEGORY = CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")
SCAR_TYPE = CodedConcept("55641003", "SCT", "Infarct")
# DICOM's code lists hold no microvascular-obstruction concept: the contract fixes SCT
# "Obstruction" in the myocardium, with the full name in the Segment Description.
MVO_TYPE = CodedConcept("26036001", "SCT", "Obstruction")
MVO_DESCRIPTION = "Microvascular obstruction"
# Colour-blind-safe Okabe-Ito colours (sky blue, vermillion, yellow), shown by OHIF and
# Slicer; the yellow MVO stands out on the vermillion scar it lies in.
MYOCARDIUM_RGB = (86, 180, 233)
SCAR_RGB = (213, 94, 0)
MVO_RGB = (240, 228, 66)
MANUFACTURER = "DB-LGE scar service (research use)"
SEG_SERIES_NUMBER = 9901


class SourceFrame(Protocol):
    """One slice's source: a single-frame image, or a frame of a multi-frame one."""

    dataset: pydicom.Dataset
    frame_number: int | None


def segment_descriptions(algorithm_name: str, algorithm_version: str,
                         uid: UidMaker = random_uids) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=algorithm_version,
        family=codes.cid7162.ArtificialIntelligence)
    mvo = hd.seg.SegmentDescription(
        segment_number=3, segment_label="MVO", segmented_property_category=SCAR_CATEGORY,
        segmented_property_type=MVO_TYPE, algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm, tracking_id="MVO", tracking_uid=uid("track-mvo"),
        anatomic_regions=[MYOCARDIUM_TYPE],
        display_color=hd.color.CIELabColor.from_rgb(*MVO_RGB))
    mvo.SegmentDescription = MVO_DESCRIPTION  # (0062,0006), not a highdicom parameter
    return [
        hd.seg.SegmentDescription(
            segment_number=1, segment_label="Myocardium",
            segmented_property_category=MYOCARDIUM_CATEGORY,
            segmented_property_type=MYOCARDIUM_TYPE, algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, tracking_id="Myocardium",
            tracking_uid=uid("track-myocardium"),
            display_color=hd.color.CIELabColor.from_rgb(*MYOCARDIUM_RGB)),
        hd.seg.SegmentDescription(
            segment_number=2, segment_label="Scar", segmented_property_category=SCAR_CATEGORY,
            segmented_property_type=SCAR_TYPE, algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, tracking_id="Scar",
            tracking_uid=uid("track-scar"),
            anatomic_regions=[MYOCARDIUM_TYPE],
            display_color=hd.color.CIELabColor.from_rgb(*SCAR_RGB)),
        mvo,
    ]


# A result to be checked by a person says so where a PACS worklist shows it (LO: 64 chars).
REVIEW_PREFIX = "REVIEW NEEDED: "
SEG_DESCRIPTION = "LGE myocardium, scar and MVO (research, not for clinical use)"
SEG_REVIEW_DESCRIPTION = REVIEW_PREFIX + "LGE myocardium, scar, MVO (research only)"


def distinct_datasets(slices: Sequence[SourceFrame]) -> list[pydicom.Dataset]:
    """The source instances behind the slices, each once (a multi-frame image has many)."""
    return list({id(s.dataset): s.dataset for s in slices}.values())


def check_referencable(slices: Sequence[SourceFrame]) -> None:
    """A SEG can reference these sources: highdicom's checks on them, made before an
    analysis is accepted, since its SEG is encoded after the answer. (The volume stage
    compares geometry within a tolerance; highdicom wants some of it identical.)"""
    multi_frame = any(s.frame_number is not None for s in slices)
    if multi_frame and len({id(s.dataset) for s in slices}) > 1:
        raise GeometryError(
            "the series holds several Enhanced MR instances; a DICOM SEG references one "
            "multi-frame image or single-frame images, not several multi-frame ones: "
            "send the series as one Enhanced MR instance or as MR Image instances",
            code="unsupported_image")
    first = slices[0].dataset
    if multi_frame:
        shared = first.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()]
        if "PlaneOrientationSequence" not in shared[0]:
            raise GeometryError("no DICOM SEG can reference these images: the Enhanced MR "
                                "instance has no shared orientation (PlaneOrientationSequence "
                                "in the SharedFunctionalGroupsSequence)")
        return
    orientation = first.get("ImageOrientationPatient")
    if any(s.dataset.get("ImageOrientationPatient") != orientation for s in slices):
        raise GeometryError("no DICOM SEG can reference these images: their "
                            "ImageOrientationPatient values are not identical (the same "
                            "orientation written differently counts): send the series as "
                            "the scanner wrote it")


def build_seg(slices: Sequence[SourceFrame], myocardium: np.ndarray, scar: np.ndarray,
              mvo: np.ndarray, algorithm_name: str, algorithm_version: str,
              review: bool = False, uid: UidMaker = random_uids,
              created_at: datetime | None = None) -> pydicom.Dataset:
    """One SEG instance over every slice (masks ordered like ``slices``); with ``uid`` and
    ``created_at`` fixed, the same bytes every time."""
    check_referencable(slices)
    if any(s.frame_number is not None for s in slices):
        source_images = [slices[0].dataset]
        order = np.argsort([s.frame_number for s in slices])
    else:
        source_images = [s.dataset for s in slices]
        order = np.arange(len(slices))
    myocardium = np.asarray(myocardium, dtype=bool)
    scar = np.asarray(scar, dtype=bool) & myocardium
    # Segments stacked on the slowest axis, seen as the last: highdicom's overlap check
    # (a sum over segments) and its per-segment frames then read whole planes (6x
    # faster than a trailing axis of three, BENCHMARKS.md profile).
    labels = np.moveaxis(np.stack([myocardium[order], scar[order],
                                   (np.asarray(mvo, dtype=bool) & scar)[order]]), 0, -1)
    try:
        seg = _segmentation(source_images, labels, algorithm_name, algorithm_version, uid,
                            SEG_REVIEW_DESCRIPTION if review else SEG_DESCRIPTION)
    except ValueError as exc:
        # highdicom checks the sources strictly (identical orientation strings, one frame
        # of reference, equal matrix): what it refuses is the input's doing, not ours.
        raise GeometryError(f"no DICOM SEG can reference these images: {exc}") from None
    rename_uid(seg, "DimensionOrganizationUID", uid("seg-dimension-organization"))
    if created_at is not None:
        stamp(seg, created_at)
    return seg


def _segmentation(source_images, labels, algorithm_name, algorithm_version, uid: UidMaker,
                  description: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=source_images, pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(algorithm_name, algorithm_version, uid),
        series_instance_uid=uid("seg-series"), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=uid("seg"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=algorithm_name,
        software_versions=__version__, device_serial_number="0",
        series_description=description,
        content_label="SCAR", content_description="Automatic myocardium, scar and MVO",
        omit_empty_frames=False,
    )
