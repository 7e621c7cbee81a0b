"""The measurements as a DICOM Comprehensive 3D SR (TID 1500), referencing the SEG.

Three volumetric ROI groups (TID 1411), one per SEG segment: myocardium
volume and mass; scar volume and mass and the scar extent in per cent of
the myocardium; MVO volume and its extent in per cent of the myocardium.
The extents have no standard code; they carry local ones (scheme
``99DBLGE``), as PS3.16 allows for private concepts.
"""

from __future__ import annotations

from datetime import datetime

import highdicom as hd
import pydicom
from highdicom.sr.coding import CodedConcept
from pydicom.sr.codedict import codes

from service import __version__
from service.dicom.seg import MANUFACTURER, MVO_TYPE, MYOCARDIUM_TYPE, REVIEW_PREFIX, SCAR_TYPE
from service.dicom.uids import UidMaker, random_uids, stamp

ML = CodedConcept("ml", "UCUM", "milliliter")
GRAM = CodedConcept("g", "UCUM", "gram")
PERCENT = CodedConcept("%", "UCUM", "Percent")
SCAR_EXTENT = CodedConcept("SCAR-EXTENT", "99DBLGE", "Scar extent of LV myocardium")
# The 95 % interval's bounds are measurements of their own (local concepts, like the extent).
SCAR_EXTENT_LOWER = CodedConcept("SCAR-EXTENT-LO95", "99DBLGE",
                                 "Scar extent, lower limit of 95 % interval")
SCAR_EXTENT_UPPER = CodedConcept("SCAR-EXTENT-HI95", "99DBLGE",
                                 "Scar extent, upper limit of 95 % interval")
MVO_EXTENT = CodedConcept("MVO-EXTENT", "99DBLGE",
                          "Microvascular obstruction extent of LV myocardium")
NEEDS_REVIEW = CodedConcept("NEEDS-REVIEW", "99DBLGE", "Result needs review by a person")
SR_DESCRIPTION = "LGE scar measurements (research, not for clinical use)"
SR_REVIEW_DESCRIPTION = REVIEW_PREFIX + "LGE scar measurements (research only)"
CARDIAC_MRI = CodedConcept("241620005", "SCT", "Magnetic resonance imaging of heart")
LV_MYOCARDIUM = CodedConcept("49848007", "SCT", "Left Ventricle Myocardium")
SR_SERIES_NUMBER = 9902


def _segment_references(seg: pydicom.Dataset) -> dict[int, hd.sr.ReferencedSegment]:
    """References to the SEG's three segments, each naming the series it was derived from.

    TID 1411 takes the source series or the source images; the SEG already references
    every source image frame by frame, and the document's evidence lists them all, so
    the series is named here: 36 image items fewer made the SR 1.4x faster to build and
    write (BENCHMARKS.md, "Profile of one analysis").
    """
    source = hd.sr.SourceSeriesForSegmentation(
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    return {number: hd.sr.ReferencedSegment(seg.SOPClassUID, seg.SOPInstanceUID, number,
                                            source_series=source)
            for number in (1, 2, 3)}


def _group(segment: hd.sr.ReferencedSegment, label: str, finding: CodedConcept,
           measurements: list[hd.sr.Measurement], algorithm: hd.sr.AlgorithmIdentification,
           uid: UidMaker, evaluations: list[hd.sr.QualitativeEvaluation] | None = None
           ) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid(f"sr-track-{label.lower()}"),
                                                     identifier=label),
        referenced_segment=segment,
        finding_type=finding, algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(LV_MYOCARDIUM)], measurements=measurements,
        qualitative_evaluations=evaluations)


def build_sr(source_images: list[pydicom.Dataset], seg: pydicom.Dataset, figures: dict,
             algorithm_name: str, algorithm_version: str,
             scar_interval: tuple[float, float] | None = None, review: bool = False,
             uid: UidMaker = random_uids, created_at: datetime | None = None
             ) -> pydicom.Dataset:
    """``figures``: myocardium_volume_ml, myocardium_mass_g, scar_volume_ml, scar_mass_g,
    scar_percent, mvo_volume_ml, mvo_percent. A result that needs review says so in the
    Series Description and, as a qualitative evaluation of the scar, in the content. With
    ``uid`` and ``created_at`` fixed, the same bytes every time."""
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version)
    bounds = [] if scar_interval is None else [
        hd.sr.Measurement(name=concept, value=value, unit=PERCENT, algorithm_id=algorithm)
        for concept, value in zip((SCAR_EXTENT_LOWER, SCAR_EXTENT_UPPER), scar_interval,
                                  strict=True)]
    review_evaluation = [hd.sr.QualitativeEvaluation(
        NEEDS_REVIEW, codes.SCT.Yes if review else codes.SCT.No)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid("sr-observer"), name=algorithm_name, manufacturer_name=MANUFACTURER))
    segments = _segment_references(seg)
    groups = [
        _group(segments[1], "Myocardium", MYOCARDIUM_TYPE, [
            hd.sr.Measurement(name=codes.SCT.Volume, value=figures["myocardium_volume_ml"],
                              unit=ML, algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.SCT.Mass, value=figures["myocardium_mass_g"],
                              unit=GRAM, algorithm_id=algorithm),
        ], algorithm, uid),
        _group(segments[2], "Scar", SCAR_TYPE, [
            hd.sr.Measurement(name=codes.SCT.Volume, value=figures["scar_volume_ml"], unit=ML,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=codes.SCT.Mass, value=figures["scar_mass_g"], unit=GRAM,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=SCAR_EXTENT, value=figures["scar_percent"], unit=PERCENT,
                              algorithm_id=algorithm),
            *bounds,
        ], algorithm, uid, review_evaluation),
        _group(segments[3], "MVO", MVO_TYPE, [
            hd.sr.Measurement(name=codes.SCT.Volume, value=figures["mvo_volume_ml"], unit=ML,
                              algorithm_id=algorithm),
            hd.sr.Measurement(name=MVO_EXTENT, value=figures["mvo_percent"], unit=PERCENT,
                              algorithm_id=algorithm),
        ], algorithm, uid),
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CARDIAC_MRI, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source_images, seg], content=report[0], series_instance_uid=uid("sr-series"),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=uid("sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=SR_REVIEW_DESCRIPTION if review else SR_DESCRIPTION,
        software_versions=__version__)
    if created_at is not None:
        stamp(sr, created_at)
    return sr
