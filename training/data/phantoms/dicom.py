"""Write a rendered phantom as an MR Image Storage series plus its ground truth.

Output layout of one series (documented in ``docs/phantoms.md``)::

    <out>/<series_id>/dicom/<random>.dcm   one file per slice, random names
    <out>/<series_id>/truth.npz            masks, base->apex, keyed by SOP UID
    <out>/<series_id>/meta.json            the spec and summary figures

UIDs, dates and file names derive from (seed, index), so the same seed always
writes byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from training.data.phantoms.render import RenderedSeries
from training.data.phantoms.spec import PhantomSpec

IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1438.1"


def _uid(spec: PhantomSpec, *parts: object) -> str:
    return generate_uid(entropy_srcs=["dblge-phantom", str(spec.seed), str(spec.index),
                                      *map(str, parts)])


def _ds_float(value: float) -> str:
    """A DS value that fits in 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def series_id(spec: PhantomSpec) -> str:
    return f"phantom_{spec.seed:04d}_{spec.index:05d}"


def stored_pixels(spec: PhantomSpec, image: np.ndarray) -> np.ndarray:
    """Physical values back to stored integers through slope/intercept."""
    acq = spec.acquisition
    stored = np.rint((image - acq.rescale_intercept) / acq.rescale_slope)
    hi = (2 ** (acq.bits_stored - 1) - 1) if acq.signed else (2**acq.bits_stored - 1)
    stored = np.clip(stored, 0, hi)
    return stored.astype(np.int16 if acq.signed else np.uint16)


def _instance_numbers(spec: PhantomSpec) -> list[int]:
    n = spec.acquisition.n_slices
    order = spec.acquisition.instance_order
    if order == "base_to_apex":
        return list(range(1, n + 1))
    if order == "apex_to_base":
        return list(range(n, 0, -1))
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, spec.index, 7]))
    return [int(v) + 1 for v in rng.permutation(n)]


def build_datasets(spec: PhantomSpec, rendered: RenderedSeries) -> list[Dataset]:
    """One MR dataset per slice, in base-to-apex order."""
    acq = spec.acquisition
    study_uid = _uid(spec, "study")
    series_uid = _uid(spec, "series")
    frame_uid = _uid(spec, "frame")
    date = dt.date(2024, 1, 1) + dt.timedelta(days=(spec.seed * 7919 + spec.index) % 700)
    date_s = date.strftime("%Y%m%d")
    pixels = stored_pixels(spec, rendered.image)
    numbers = _instance_numbers(spec)
    datasets = []
    for k, geom in enumerate(rendered.geometry):
        sop_uid = _uid(spec, "sop", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_UID
        meta.ImplementationVersionName = "DBLGE_PHANTOM"

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date_s
        ds.StudyTime = "093000"
        ds.SeriesTime = "094500"
        ds.AcquisitionTime = ds.ContentTime = f"0945{k:02d}"
        ds.AccessionNumber = f"SYN{spec.index:07d}"
        ds.Modality = "MR"
        ds.Manufacturer = "dblge-scar synthetic phantom"
        ds.InstitutionName = "Synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Cardiac MRI (synthetic phantom)"
        ds.SeriesDescription = "DB-LGE SAX (synthetic phantom, not patient data)"
        ds.ManufacturerModelName = "phantom"
        ds.PatientName = f"PHANTOM^LGE{spec.seed:02d}{spec.index:05d}"
        ds.PatientID = f"PH{spec.seed:02d}-{spec.index:05d}"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = "HEART"
        ds.PatientPosition = "HFS"
        ds.ScanningSequence = ["IR", "GR"]
        ds.SequenceVariant = ["SP", "MP"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "db_lge_psir"
        ds.SliceThickness = _ds_float(geom.slice_thickness)
        ds.SpacingBetweenSlices = _ds_float(acq.thickness + acq.gap)
        ds.RepetitionTime = "750"
        ds.EchoTime = "3.2"
        ds.InversionTime = "300"
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = "63.87"
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = "1.5"
        ds.EchoTrainLength = "1"
        ds.FlipAngle = "20"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = f"{spec.index}"
        ds.SeriesNumber = 1001
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = numbers[k]
        ds.ImagePositionPatient = [_ds_float(v) for v in geom.image_position]
        ds.ImageOrientationPatient = [_ds_float(v) for v in geom.image_orientation]
        normal = np.cross(geom.image_orientation[:3], geom.image_orientation[3:])
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_float(float(np.dot(geom.image_position, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = acq.rows, acq.cols
        ds.PixelSpacing = [_ds_float(v) for v in geom.pixel_spacing]
        ds.BitsAllocated = 16
        ds.BitsStored = acq.bits_stored
        ds.HighBit = acq.bits_stored - 1
        ds.PixelRepresentation = 1 if acq.signed else 0
        if acq.rescale_slope != 1.0 or acq.rescale_intercept != 0.0:
            ds.RescaleIntercept = _ds_float(acq.rescale_intercept)
            ds.RescaleSlope = _ds_float(acq.rescale_slope)
            ds.RescaleType = "US"
        centre = float(np.percentile(pixels, 99.5)) / 2
        ds.WindowCenter = _ds_float(centre * acq.rescale_slope + acq.rescale_intercept)
        ds.WindowWidth = _ds_float(2 * centre * acq.rescale_slope)
        ds.PixelData = pixels[k].tobytes()
        datasets.append(ds)
    return datasets


def write_series(spec: PhantomSpec, rendered: RenderedSeries, out_dir: Path) -> Path:
    """Write DICOM files in a random order with random names, then the truth files."""
    series_dir = out_dir / series_id(spec)
    dicom_dir = series_dir / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    datasets = build_datasets(spec, rendered)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, spec.index, 11]))
    for k in rng.permutation(len(datasets)):
        ds = datasets[k]
        name = hashlib.sha1(ds.SOPInstanceUID.encode()).hexdigest()[:16]
        ds.save_as(dicom_dir / f"{name}.dcm", enforce_file_format=True)
    uids = np.array([ds.SOPInstanceUID for ds in datasets])
    np.savez_compressed(
        series_dir / "truth.npz",
        sop_instance_uids=uids,
        myocardium=rendered.myocardium,
        scar=rendered.scar,
        mvo=rendered.mvo,
        cavity=rendered.cavity,
        slice_depth_mm=np.asarray(rendered.slice_depth_mm),
    )
    myo, scar = int(rendered.myocardium.sum()), int(rendered.scar.sum())
    meta = {
        "series_id": series_id(spec),
        "study_instance_uid": datasets[0].StudyInstanceUID,
        "series_instance_uid": datasets[0].SeriesInstanceUID,
        "n_slices": len(datasets),
        "pixel_spacing_mm": spec.acquisition.pixel_spacing,
        "scar_percent": 100.0 * scar / myo if myo else 0.0,
        "territories": [s.territory for s in spec.scars],
        "spec": spec.to_json(),
    }
    (series_dir / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return series_dir
