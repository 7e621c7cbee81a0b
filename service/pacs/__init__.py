"""The PACS side: STOW-RS in (stow), the inbox of received series, their analysis once
quiet (received), and the store-back of SEG and SR to a DICOMweb destination
(store_back).

May import: ``service.pipeline``, ``service.dicom``, ``service.store``,
``service.analysis``, ``service.config``, ``service.errors``; not ``api`` or ``viewer``.
"""
