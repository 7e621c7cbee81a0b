"""Encoders: the stored analysis as DICOM-SEG and DICOM SR (the JSON report is in ``report``)."""
