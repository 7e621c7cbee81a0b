"""The model registry: ``models/manifest.json`` read once, every file checked, sessions made.

A file whose sha256 differs from the manifest is refused, so the service
never runs weights other than the ones described and evaluated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from service.errors import ModelStoreError
from service.pipeline.infer import OnnxModel, choose_providers
from service.pipeline.preprocess import InputSpec
from service.pipeline.segment import Network
from service.pipeline.uncertainty import IntervalCalibration


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    sha256: str
    network: Network
    execution_provider: str
    # The scar % interval's calibration (scar networks released with one; else None).
    interval: IntervalCalibration | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    myocardium: LoadedModel
    scar: LoadedModel


@dataclass(frozen=True)
class Registry:
    models: dict[str, LoadedModel]
    pipelines: dict[str, Pipeline]
    default_pipeline: str
    manifest: dict


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_registry(models_dir: Path, provider: str = "auto", memory_arena: bool = True
                  ) -> Registry:
    manifest_path = Path(models_dir) / "manifest.json"
    if not manifest_path.exists():
        raise ModelStoreError(f"no manifest at {manifest_path}; run `python -m training`")
    manifest = json.loads(manifest_path.read_text())
    providers = choose_providers(provider)
    models = {}
    for entry in manifest["models"]:
        path = Path(models_dir) / entry["file"]
        if not path.exists():
            raise ModelStoreError(f"model file {path} named in the manifest is missing")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise ModelStoreError(f"{path.name}: sha256 {actual} does not match the manifest's "
                                  f"{entry['sha256']}; refusing to serve unknown weights")
        model = OnnxModel(path, providers, fall_back_to_cpu=provider == "auto",
                          memory_arena=memory_arena)
        models[entry["name"]] = LoadedModel(
            name=entry["name"], version=entry["version"], sha256=actual,
            network=Network(model, InputSpec.from_dict(entry["input"]["preprocessing"]),
                            tuple(entry["output"]["classes"]),
                            float(entry["output"].get("threshold", 0.5))),
            execution_provider=model.execution_provider,
            interval=(IntervalCalibration.from_dict(entry["output"]["interval"])
                      if entry["output"].get("interval") else None))
    pipelines, default = {}, None
    for name, parts in manifest["pipelines"].items():
        try:
            pipelines[name] = Pipeline(name, models[parts["myocardium"]], models[parts["scar"]])
        except KeyError as missing:
            raise ModelStoreError(f"pipeline {name} names unknown model {missing}") from None
        if parts.get("default"):
            default = name
    if default is None:
        raise ModelStoreError("the manifest names no default pipeline")
    return Registry(models=models, pipelines=pipelines, default_pipeline=default,
                    manifest=manifest)
