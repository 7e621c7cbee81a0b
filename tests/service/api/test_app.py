from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[3]


def test_healthz() -> None:
    with TestClient(create_app()) as client:
        r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_not_ready_while_models_load() -> None:
    app = create_app()
    with TestClient(app) as client:
        app.state.registry = None  # as between start-up and the end of model loading
        r = client.get("/readyz")
        busy = client.get("/v1/models")
    assert r.status_code == 503 and r.json()["models"] == []
    assert busy.status_code == 503 and "Retry-After" in busy.headers


def test_unknown_path_gets_contract_error_body() -> None:
    with TestClient(create_app()) as client:
        r = client.get("/no/such/thing")
    assert r.status_code == 404
    assert set(r.json()) == {"error"}
    assert r.json()["error"]["code"] == "not_found"


def test_settings_defaults_and_env(monkeypatch) -> None:
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8000 and s.execution_provider == "auto"
    assert s.models_dir == ROOT / "models"
    monkeypatch.setenv("EXECUTION_PROVIDER", "cpu")
    monkeypatch.setenv("MAX_CONCURRENT_ANALYSES", "3")
    s = Settings()
    assert s.execution_provider == "cpu" and s.max_concurrent_analyses == 3


def test_service_never_imports_tensorflow_or_training() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(tensorflow|keras|tf2onnx|training)\b", re.M)
    offenders = [p.name for p in (ROOT / "service").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_base_install_has_no_tensorflow() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "tensorflow" not in base and "keras" not in base
    assert any(d.startswith("tensorflow") for d in project["optional-dependencies"]["train"])
    for dep in project["dependencies"]:
        assert "==" in dep, f"unpinned dependency {dep}"


def test_the_docs_page_loads_nothing_from_another_host() -> None:
    import re

    from fastapi.testclient import TestClient

    from service.api.app import create_app

    with TestClient(create_app()) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            r = client.get(source)
            assert r.status_code == 200 and len(r.content) > 100, source
        assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
        assert client.get("/docs/assets/..%2Fconfig.py").status_code == 404
        assert client.get("/docs/assets/index.html").status_code == 404


@pytest.mark.parametrize(("env", "starts"), [
    ({"HOST": "0.0.0.0"}, False),
    ({"HOST": "192.0.2.10"}, False),
    ({"HOST": "0.0.0.0", "API_KEY": "k"}, True),
    ({"HOST": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "true"}, True),
    ({"HOST": "127.0.0.1"}, True),
    ({"HOST": "::1"}, True),
    ({"HOST": "localhost"}, True),
])
def test_no_open_door_beyond_loopback_without_a_key(monkeypatch, env, starts) -> None:
    from pydantic import ValidationError

    from service.config import Settings

    for key in ("HOST", "API_KEY", "ALLOW_UNAUTHENTICATED"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if starts:
        Settings()
    else:
        with pytest.raises(ValidationError, match="API_KEY"):
            Settings()
