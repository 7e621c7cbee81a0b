"""The image pipeline: a series' datasets in, masks and measures out.

volume (datasets sorted by geometry) -> preprocess -> infer -> segment ->
postprocess -> quantify, with the checks and readings around them
(acceptance, contrast, uncertainty, quality) and the model registry that
loads the networks. Pure functions on arrays and datasets, apart from the
ONNX sessions: no HTTP, no storage, no DICOM writing.

May import: itself, ``service.errors``. Training imports this package (and
nothing else of the service) so that it trains on what the service runs.
"""
