"""Batch re-analysis of an archive on Ray: one command, resumable, one row per series.

``python -m service.batch SOURCE OUT``: the series of a folder tree (found by their
UIDs, whatever the layout and file names) or of a DICOMweb server's studies, each
analysed by the same code as ``POST /v1/analyses`` (:func:`service.analysis.analyse_files`)
inside Ray Data actors that open the onnxruntime sessions once, on this machine or on
a Ray cluster. OUT gets each series' report, SEG and SR under names fixed by the series
UID and the models' hash, written atomically, and ``results.parquet`` /
``failures.parquet`` made from those files, so that a retried or resumed series is
there once. ``discover`` finds the series, ``outputs`` names and writes what they
give, ``engine`` runs them; docs/batch.md is the guide.

May import: itself, ``service.analysis``, ``service.pipeline``, ``service.dicom``,
``service.pacs`` (its DICOMweb client), ``service.store`` (durable writes),
``service.config``, ``service.errors``,
``service`` (its version).
"""
