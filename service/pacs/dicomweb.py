"""A DICOMweb client with the store-back credentials (basic auth or a bearer token).

One place for how the service authenticates to a PACS, for store-back and for the
batch command's retrieval.
"""

from __future__ import annotations

from service.config import Settings


def dicomweb_client(url: str, settings: Settings, timeout_s: float):
    """A dicomweb-client for ``url`` with the settings' credentials, without its own
    blocking retries (callers retry on their terms)."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if settings.dicomweb_store_username:
        session.auth = (settings.dicomweb_store_username,
                        settings.dicomweb_store_password or "")
    headers = ({"Authorization": f"Bearer {settings.dicomweb_store_token}"}
               if settings.dicomweb_store_token else None)
    client = DICOMwebClient(url, session=session, headers=headers, timeout=timeout_s)
    client.set_http_retry_params(retry=False)
    return client
