"""The analysis' warm-up: every pipeline and both encoders run before the service is ready."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from service.analysis import warm_up
from service.config import get_settings
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
        ready = client.get("/readyz")
        assert ready.status_code == 200
        # Every model is loaded before ready (CONTRACT.md), whichever pipelines ran once.
        names = {m["name"] for m in ready.json()["models"]}
        assert names == {m["name"] for m in client.app.state.registry.manifest["models"]}
    assert len(seen) == 1 and seen[0][0] == 1 and seen[0][1] is None  # the default pipeline
    monkeypatch.setenv("WARM_PIPELINES", "all")
    get_settings.cache_clear()
    app = app_module.create_app()
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
    assert len(seen) == 2 and seen[1][0] == len(client.app.state.registry.pipelines) >= 3


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch) -> None:
    monkeypatch.setenv("EXECUTION_PROVIDER", "cpu")


def test_a_series_unlike_the_scans_trained_on_takes_the_wider_scale(
        series_dirs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis judges the series' look and hands it to the interval: the same masks get
    the calibration's unlike scale when the look is beyond the LGE trained on."""
    import service.analysis as analysis
    from service.pipeline.uncertainty import IntervalCalibration
    from tests.conftest import read_series

    pipeline = load_registry(MODELS).pipelines["cascade-unet"]
    calibration = IntervalCalibration(offset=0.1, floor_percent=1.0, scale=1.0,
                                      terms=("scar",), unlike_scale=3.0, unlike_series=40)
    pipeline = replace(pipeline, scar=replace(pipeline.scar, interval=calibration))
    volume = build_volume(read_series(series_dirs[0]))
    widths = {}
    for unlike in (False, True):
        monkeypatch.setattr(analysis, "is_unlike_training", lambda evidence, u=unlike: u)
        report = analysis.analyse(volume, pipeline, 0.0).report
        low, high = report.scar_percent_interval
        assert low <= report.scar_percent <= high
        widths[unlike] = (report.scar_percent - low, high - report.scar_percent)
    # Unclipped sides are exactly three times as far from the value.
    assert widths[True][1] == pytest.approx(3.0 * widths[False][1])
