"""The ENets on the cascade's ring (issue 52, point 2): what training scores is what the
service runs, and the release writes the choice into the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from service.analysis import analyse, models_digest
from service.pipeline.registry import Pipeline, load_registry
from service.pipeline.volume import build_volume
from tests.conftest import read_series
from training.data.sources import PhantomSource
from training.evaluation.scoring import (
    CropRingNetwork,
    crop_ring_source,
    network_segmentations,
    with_crop_ring,
)
from training.release import pipelines

MODELS = Path(__file__).resolve().parents[2] / "models"


def _ringed_models(tmp_path: Path) -> Path:
    """A copy of the shipped models whose Protocol 2 pipeline takes the cascade's ring."""
    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["pipelines"] = pipelines({"enet_p2": "scar_unet"})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_training_scores_the_enet_on_the_cascades_ring_as_the_service_runs_it(
        tmp_path: Path, series_dirs: list[Path]) -> None:
    registry = load_registry(_ringed_models(tmp_path), "cpu")
    enet = registry.pipelines["enet"]
    assert enet.ring.name == "scar-unet" and registry.pipelines["enet-raw"].ring is None
    networks = {"myocardium_unet": registry.models["myocardium-unet"].network,
                "scar_unet": registry.models["scar-unet"].network,
                "enet_p2": with_crop_ring(registry.models["enet-p2"].network, "scar_unet"),
                "enet_p1": registry.models["enet-p1"].network}
    first_ring, segs = network_segmentations(PhantomSource(series_dirs[0]).read(), networks)
    served = analyse(build_volume(read_series(series_dirs[0])), enet, 0.0)
    # What training scores is what the service runs, to the pixel ...
    assert (segs["enet"].myocardium == served.myocardium).all()
    assert (segs["enet"].scar == served.scar).all()
    # ... and the ENet's crop was placed and masked by the cascade's ring (Protocol 2 keeps
    # it), not the myocardium U-Net's; Protocol 1 stays on the first ring.
    assert (served.crop_ring == segs["cascade-unet"].myocardium).all()
    assert (segs["enet"].myocardium == segs["cascade-unet"].myocardium).all()
    assert not (first_ring == segs["cascade-unet"].myocardium).all()
    assert [m.name for m in served.report.models] == ["myocardium-unet", "scar-unet", "enet-p2"]
    plain = Pipeline("enet", enet.myocardium, enet.scar)
    assert models_digest(enet).digest() != models_digest(plain).digest()


def test_the_crop_ring_survives_the_release_s_changes_of_a_network() -> None:
    import dataclasses

    from service.pipeline.segment import Network
    from training.data.dataset import CLASSES, TASKS

    net = Network(lambda batch: batch, TASKS["enet_p2"], CLASSES["enet_p2"], threshold=0.5)
    ringed = with_crop_ring(net, "scar_unet")
    assert isinstance(ringed, CropRingNetwork) and crop_ring_source(ringed) == "scar_unet"
    changed = dataclasses.replace(ringed, threshold=0.3)  # thresholds, post-processing
    assert crop_ring_source(changed) == "scar_unet" and changed.threshold == 0.3
    back = with_crop_ring(changed, None)
    assert crop_ring_source(back) is None and back.threshold == 0.3
    assert crop_ring_source(net) is None


def test_the_manifest_names_the_ring_only_where_chosen() -> None:
    chosen = pipelines({"enet_p2": "scar_unet"})
    assert chosen["enet"]["ring"] == "scar-unet"
    assert "ring" not in chosen["enet-raw"] and "ring" not in chosen["cascade-unet"]
    assert all("ring" not in p for p in pipelines().values())
    assert {p["myocardium"] for p in chosen.values()} == {"myocardium-unet"}


def test_the_models_route_names_the_ring_network(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from service.api.routes.analyses import list_models

    registry = load_registry(_ringed_models(tmp_path), "cpu")
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(registry=registry)))
    listed = {p["name"]: p for p in list_models(request)}
    assert listed["enet"]["ring_model"]["name"] == "scar-unet"
    assert "redrawn by scar-unet" in listed["enet"]["description"]
    assert listed["cascade-unet"]["ring_model"] is None
