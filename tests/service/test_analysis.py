"""The analysis' warm-up: every pipeline and both encoders run before the service is ready."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from service.analysis import warm_up
from service.dicom.synthetic import warmup_series
from service.pipeline.acceptance import header_reasons
from service.pipeline.registry import load_registry
from service.pipeline.volume import build_volume

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_the_warm_up_series_is_an_lge_series_the_service_reads() -> None:
    datasets = warmup_series()
    volume = build_volume(datasets)
    assert len(volume.slices) == 12 and header_reasons(datasets) == []
    # Fresh UIDs each time: a warm-up never collides with anything stored.
    assert warmup_series()[0].StudyInstanceUID != datasets[0].StudyInstanceUID
    assert "WARMUP" in str(datasets[0].PatientName)


def test_warm_up_runs_every_network_of_every_pipeline() -> None:
    registry = load_registry(MODELS)
    calls: dict[str, int] = {}

    def counted(name, predict):
        def run(batch):
            calls[name] = calls.get(name, 0) + 1
            return predict(batch)
        return run

    pipelines = []
    for p in registry.pipelines.values():
        myo = replace(p.myocardium, network=replace(
            p.myocardium.network, predict=counted(f"{p.name}/myo", p.myocardium.network.predict)))
        scar = replace(p.scar, network=replace(
            p.scar.network, predict=counted(f"{p.name}/scar", p.scar.network.predict)))
        pipelines.append(replace(p, myocardium=myo, scar=scar))
    assert warm_up(pipelines) > 0
    assert set(calls) == {f"{p.name}/{n}" for p in pipelines for n in ("myo", "scar")}


def test_the_service_is_ready_only_after_warming_up(monkeypatch) -> None:
    """/readyz answers ready once warm_up has returned, never before."""
    from fastapi.testclient import TestClient

    import service.api.app as app_module

    app = app_module.create_app()
    seen = []

    def recording(pipelines):
        # While warming up, the registry is not published: /readyz would say 503.
        seen.append((len(pipelines), app.state.registry))
        return 0.0

    monkeypatch.setattr(app_module, "warm_up", recording)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
    assert len(seen) == 1 and seen[0][0] >= 3 and seen[0][1] is None


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch) -> None:
    monkeypatch.setenv("EXECUTION_PROVIDER", "cpu")


def test_a_pipeline_with_a_ring_network_crops_the_scar_network_on_its_redrawn_myocardium(
        tmp_path: Path, series_dirs: list[Path]) -> None:
    """The manifest's ``ring``: the ENet runs on the cascade's ring, not the first one."""
    import json
    import shutil

    from service.analysis import analyse, models_digest
    from tests.conftest import read_series

    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["pipelines"]["enet"]["ring"] = "scar-unet"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with_ring = load_registry(copy, "cpu")
    plain = load_registry(MODELS, "cpu")
    assert with_ring.pipelines["enet"].ring.name == "scar-unet"
    assert plain.pipelines["enet"].ring is None
    assert models_digest(with_ring.pipelines["enet"]).digest() != \
        models_digest(plain.pipelines["enet"]).digest()
    volume = build_volume(read_series(series_dirs[0]))
    cascade = analyse(volume, plain.pipelines["cascade-unet"], 0.0)
    first = analyse(volume, plain.pipelines["enet"], 0.0)
    ringed = analyse(volume, with_ring.pipelines["enet"], 0.0)
    assert [m.name for m in ringed.report.models] == ["myocardium-unet", "scar-unet",
                                                      "enet-p2"]
    # The ENet's crop is placed and masked by the cascade's ring (Protocol 2 keeps it) ...
    assert (ringed.crop_ring == cascade.myocardium).all()
    assert (ringed.myocardium == cascade.myocardium).all()
    # ... which is not the myocardium network's own.
    assert not (first.crop_ring == cascade.myocardium).all()
    assert ringed.report.timings_ms.inference > 0
