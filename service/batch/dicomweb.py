"""A DICOMweb server's studies, retrieved series by series into a folder the batch reads.

With the store-back credentials (``DICOMWEB_STORE_USERNAME``/``_PASSWORD`` or
``_TOKEN``). Instances already in the folder are not fetched again, so an interrupted
retrieval resumes; each is written to a temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.pacs.dicomweb import dicomweb_client
from service.store.files import write_atomic

SERIES_UID, SOP_UID = "0020000E", "00080018"


def retrieve_studies(url: str, study_uids: list[str], folder: Path, settings: Settings,
                     timeout_s: float = 120.0) -> int:
    """Every instance of these studies under FOLDER/study/series/; returns how many new."""
    import io

    client = dicomweb_client(url, settings, timeout_s)
    written = 0
    for study in study_uids:
        for series in client.search_for_series(study):
            series_uid = series[SERIES_UID]["Value"][0]
            target = Path(folder) / study / series_uid
            known = {p.stem for p in target.glob("*.dcm")} if target.exists() else set()
            wanted = [i[SOP_UID]["Value"][0] for i in client.search_for_instances(
                study, series_uid, fields=[SOP_UID])]
            for sop_uid in wanted:
                if sop_uid in known:
                    continue
                ds = client.retrieve_instance(study, series_uid, sop_uid)
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                write_atomic(target / f"{sop_uid}.dcm", buffer.getvalue())
                written += 1
    return written
