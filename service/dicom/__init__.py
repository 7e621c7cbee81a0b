"""DICOM in and out: request bodies to datasets (ingest), and the Segmentation and
Comprehensive 3D SR that carry an analysis back to a PACS (seg, sr).

May import: itself, ``service.pipeline`` (the volume and figures it encodes),
``service.errors``.
"""
