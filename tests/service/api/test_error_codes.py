"""Every error code the service can send is in the README's table, with its status."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Codes of errors that are bugs or start-up failures, never an answer to a client's input.
NOT_FOR_CLIENTS = {"internal_error", "model_store_invalid", "startup_failed",
                   "execution_provider_unavailable", "data_dir_in_use"}


def _codes_in_service() -> set[str]:
    codes = set()
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        codes |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'"code":\s*"([a-z_]+)"', text))
    return codes - NOT_FOR_CLIENTS


def test_every_code_is_in_the_readmes_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = {code for row in readme.splitlines() if row.startswith("| `")
             for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    codes = _codes_in_service()
    assert len(codes) > 20, codes  # the scan still finds them
    assert codes <= table, sorted(codes - table)


def test_an_unexpected_exception_is_a_json_500_with_an_id_in_the_log(monkeypatch,
                                                                     caplog) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.api.routes import pages

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pages, "index_page", broken)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        r = client.get("/")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal" and len(error["id"]) == 12
    assert error["id"] in error["message"] and "a bug" not in error["message"]
    assert any(error["id"] in record.getMessage() and record.exc_info
               for record in caplog.records)
