"""A synthetic short-axis LGE series in memory, to warm the service up before it says ready.

The first analysis after start-up otherwise pays for what is initialised lazily
(onnxruntime's kernels and arenas for the series' shapes, highdicom's and
pydicom's code tables, NumPy and SciPy paths): 3.25x the steady latency was
measured from outside (issue 36). The picture is a crude bright-blood LGE
mid-ventricle (a bright cavity in a nulled ring with one bright sector), in a
plain double-oblique-free geometry; it carries no patient data.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

WARMUP_SLICES = 12
WARMUP_SIZE = 256
WARMUP_SPACING_MM = 1.4


def _picture(size: int, spacing: float, k: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r_mm = np.hypot(yy - size / 2, xx - size / 2) * spacing
    angle = np.arctan2(yy - size / 2, xx - size / 2)
    radius = 24.0 - 0.6 * k  # the LV narrows towards the apex
    image = np.full((size, size), 300.0)
    image[r_mm < radius] = 900.0  # bright blood pool
    ring = (r_mm >= radius) & (r_mm < radius + 9.0)
    image[ring] = 80.0  # nulled myocardium
    image[ring & (np.abs(angle) < 0.6)] = 850.0  # an enhanced sector
    image[r_mm > 150.0] = 0.0  # air outside the body
    rng = np.random.default_rng(k)
    return np.clip(image + rng.normal(0.0, 25.0, image.shape), 0, 4095).astype(np.uint16)


def warmup_series(n_slices: int = WARMUP_SLICES, size: int = WARMUP_SIZE,
                  spacing: float = WARMUP_SPACING_MM) -> list[pydicom.Dataset]:
    """MR Image Storage datasets of one synthetic LGE series (fresh UIDs each call)."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(n_slices):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame
        ds.Modality, ds.BodyPartExamined = "MR", "HEART"
        ds.PatientName, ds.PatientID = "WARMUP^SYNTHETIC", "WARMUP"
        ds.StudyDate = ds.SeriesDate = "20260101"
        ds.StudyTime = ds.SeriesTime = "000000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.PatientBirthDate, ds.PatientSex = "", ""
        ds.Manufacturer = "synthetic"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.SeriesDescription = ds.ProtocolName = "LGE PSIR short axis (synthetic warm-up)"
        ds.ScanningSequence, ds.SequenceVariant = ["GR", "IR"], ["SP"]
        ds.EchoTime, ds.RepetitionTime, ds.InversionTime = 2.0, 700.0, 300.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-size * spacing / 2, -size * spacing / 2, -8.0 * k]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness, ds.SpacingBetweenSlices = 8.0, 8.0
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = _picture(size, spacing, k).tobytes()
        datasets.append(ds)
    return datasets
