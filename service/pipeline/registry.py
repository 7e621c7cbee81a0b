"""The model registry: ``models/manifest.json`` read once, every file checked, sessions made.

A file whose sha256 differs from the manifest is refused, so the service
never runs weights other than the ones described and evaluated. Every file is checked
when the registry is made; a model's session is made the first time a pipeline or a
caller asks for it (and its file checked again then), because a release of fold
ensembles ships a dozen networks and most analyses run the default pipeline's three.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import ModelStoreError
from service.pipeline.ensemble import MeanOfModels
from service.pipeline.infer import OnnxModel, choose_providers, share_cores_with_onnxruntime
from service.pipeline.preprocess import InputSpec
from service.pipeline.segment import Network
from service.pipeline.uncertainty import IntervalCalibration


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    # Of the file actually run (the float32 or the int8 one); of an ensemble, the digest of
    # its members' (``ensemble_digest``).
    sha256: str
    network: Network
    execution_provider: str
    precision: str = "fp32"
    # The scar % interval's calibration (scar networks released with one; else None).
    interval: IntervalCalibration | None = None


@dataclass(frozen=True)
class Pipeline:
    name: str
    myocardium: LoadedModel
    scar: LoadedModel
    # A network that redraws the myocardium inside the heart box (the cascade's scar U-Net)
    # run between the two: its ring, not the myocardium network's, places and masks the
    # scar network's crop (the manifest's ``ring``, where the release chose it out of fold).
    ring: LoadedModel | None = None

    @property
    def models(self) -> tuple[LoadedModel, ...]:
        """The models an analysis runs, in order."""
        return (self.myocardium, *((self.ring,) if self.ring else ()), self.scar)


class LazyMapping(Mapping):
    """Names known at once, values made on first access, once, under the registry's lock
    (two requests for a pipeline not yet loaded load it once)."""

    def __init__(self, names: list[str], make: Callable[[str], object],
                 lock: threading.RLock) -> None:
        self._names, self._make, self._lock = list(names), make, lock
        self._made: dict[str, object] = {}

    def __getitem__(self, name: str):
        made = self._made.get(name)
        if made is not None:
            return made
        if name not in self._names:
            raise KeyError(name)
        with self._lock:
            if name not in self._made:
                self._made[name] = self._make(name)
            return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    @property
    def made(self) -> list:
        return list(self._made.values())


@dataclass(frozen=True)
class Registry:
    # Each model at the precision asked for the service as a whole; a pipeline may run
    # a network's int8 copy where the release measured it to hold (``model_file``). Both
    # mappings make their sessions on first access.
    models: LazyMapping
    pipelines: LazyMapping
    default_pipeline: str
    manifest: dict
    # Opens every file the manifest may run, so many at once (see :meth:`load_all`).
    _open_all: Callable[[int], None] = field(repr=False, compare=False)

    def load_all(self, workers: int = 2) -> None:
        """Every model's and pipeline's session, the files opened ``workers`` at once: an
        ENet's session takes about a quarter of a second to make
        (benchmarks/results/enet_sessions.json) and a release ships ten, and the service is
        ready only once every model is loaded (CONTRACT.md, ``/readyz``)."""
        self._open_all(workers)
        for name in self.pipelines:
            self.pipelines[name]
        for name in self.models:
            self.models[name]

    @property
    def loaded(self) -> list[LoadedModel]:
        """Every model with a session so far, once."""
        every = [*self.models.made, *(m for p in self.pipelines.made for m in p.models)]
        return list({id(m): m for m in every}.values())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensemble_digest(member_digests: list[str]) -> str:
    """One digest for an ensemble: sha256 of its members' sha256s in manifest order."""
    return hashlib.sha256("\n".join(member_digests).encode()).hexdigest()


def model_file(entry: dict, precision: str = "auto", pipeline: str | None = None
               ) -> tuple[str, str, str]:
    """(file, sha256, precision) of a manifest entry to run at ``precision`` in ``pipeline``.

    ``auto`` takes the int8 file only where the release made it the default (it held
    accuracy on every test set and is faster): for every pipeline (``default``), or for
    the pipelines it names (``pipelines``: a network shared by several pipelines can
    hold accuracy in one and not in another). ``int8`` takes any int8 file; a model
    without one runs in float32 whatever is asked.
    """
    int8 = entry.get("int8")
    if int8 and _runs_int8(int8, precision, pipeline):
        return int8["file"], int8["sha256"], "int8"
    return entry["file"], entry["sha256"], "fp32"


def _runs_int8(int8: dict, precision: str, pipeline: str | None) -> bool:
    return precision == "int8" or (precision == "auto" and (
        bool(int8.get("default")) or pipeline in int8.get("pipelines", ())))


def representative_int8_file(entry: dict) -> str | None:
    """The int8 file that stands for an entry in per-network benchmarks: its own, or an
    ensemble's first member's (as ``file`` is that member's float32 one); None: no int8."""
    int8 = entry.get("int8") or {}
    if "file" in int8:
        return int8["file"]
    members = entry.get("members") or []
    return members[0]["int8"]["file"] if members and members[0].get("int8") else None


def member_files(entry: dict, precision: str = "auto", pipeline: str | None = None
                 ) -> tuple[list[tuple[str, str]], str]:
    """An ensemble's (file, sha256) per member and the precision they run at: each member's
    int8 copy where :func:`model_file` would take the entry's int8 (the entry's ``int8``
    says where it held accuracy) and every member has one; float32 otherwise (an ensemble
    is never half quantised)."""
    members = entry["members"]
    if entry.get("int8") and all(m.get("int8") for m in members) and _runs_int8(
            entry["int8"], precision, pipeline):
        return [(m["int8"]["file"], m["int8"]["sha256"]) for m in members], "int8"
    return [(m["file"], m["sha256"]) for m in members], "fp32"


def _verified(path: Path, expected: str) -> Path:
    if not path.exists():
        raise ModelStoreError(f"model file {path} named in the manifest is missing")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelStoreError(f"{path.name}: sha256 {actual} does not match the manifest's "
                              f"{expected}; refusing to serve unknown weights")
    return path


def load_registry(models_dir: Path, provider: str = "auto", memory_arena: bool = True,
                  precision: str = "auto", intra_op_threads: int = 0) -> Registry:
    """``intra_op_threads`` per session (0: onnxruntime's default, every core); a batch
    worker sharing the machine with others takes its share."""
    manifest_path = Path(models_dir) / "manifest.json"
    if not manifest_path.exists():
        raise ModelStoreError(f"no manifest at {manifest_path}; run `python -m training`")
    manifest = json.loads(manifest_path.read_text())
    share_cores_with_onnxruntime()
    providers = choose_providers(provider)
    entries = {entry["name"]: entry for entry in manifest["models"]}
    sessions: dict[str, LoadedModel] = {}
    opened: dict[str, OnnxModel] = {}  # by file: an ENet member serves two pipelines
    lock = threading.RLock()

    def checked(file: str, expected: str) -> OnnxModel:
        if file not in opened:
            path = _verified(Path(models_dir) / file, expected)
            opened.setdefault(file, OnnxModel(
                path, providers, intra_op_threads=intra_op_threads,
                fall_back_to_cpu=provider == "auto", memory_arena=memory_arena))
        return opened[file]

    def load(entry: dict, pipeline: str | None = None) -> LoadedModel:
        # An ensemble (the release's cross-validation folds, ``members``): every member
        # in float32, or every member's int8 copy.
        members = None
        if entry.get("members"):
            members, chosen = member_files(entry, precision, pipeline)
            file = f"{entry['name']} ensemble {chosen}"
        else:
            file, expected, chosen = model_file(entry, precision, pipeline)
        if file in sessions:
            return sessions[file]
        if members:
            model = MeanOfModels([checked(f, digest) for f, digest in members])
            digest = ensemble_digest([digest for _, digest in members])
        else:
            model, digest = checked(file, expected), expected
        output = entry["output"]
        sessions[file] = LoadedModel(
            name=entry["name"], version=entry["version"], sha256=digest,
            network=Network(model, InputSpec.from_dict(entry["input"]["preprocessing"]),
                            tuple(output["classes"]), float(output.get("threshold", 0.5)),
                            complete_ring=bool(output.get("complete_ring", False))),
            execution_provider=model.execution_provider, precision=chosen,
            interval=(IntervalCalibration.from_dict(output["interval"])
                      if output.get("interval") else None))
        return sessions[file]

    def pipeline(name: str) -> Pipeline:
        parts = manifest["pipelines"][name]
        return Pipeline(name, load(entries[parts["myocardium"]], name),
                        load(entries[parts["scar"]], name),
                        load(entries[parts["ring"]], name) if parts.get("ring") else None)

    # Refusing to start beats failing on a later request: every pipeline's models exist,
    # and every file the registry may run is on disk with the manifest's sha256.
    default = None
    for name, parts in manifest["pipelines"].items():
        for role in ("myocardium", "scar", "ring"):
            if role in parts and parts[role] not in entries:
                raise ModelStoreError(f"pipeline {name} names unknown model {parts[role]!r}")
        if parts.get("default"):
            default = name
    if default is None:
        raise ModelStoreError("the manifest names no default pipeline")
    files = sorted(_every_file(entries.values(), manifest["pipelines"], precision))
    for file, digest in files:
        _verified(Path(models_dir) / file, digest)

    def open_all(workers: int) -> None:
        # Distinct files on distinct threads: onnxruntime makes sessions outside the GIL.
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda item: checked(*item), files))

    return Registry(models=LazyMapping(list(entries), lambda n: load(entries[n]), lock),
                    pipelines=LazyMapping(list(manifest["pipelines"]), pipeline, lock),
                    default_pipeline=default, manifest=manifest, _open_all=open_all)


def _every_file(entries, pipelines: dict, precision: str) -> set[tuple[str, str]]:
    """(file, sha256) of every file a model or pipeline of the manifest may run."""
    files = set()
    for entry in entries:
        for pipeline in (None, *pipelines):
            if entry.get("members"):
                files.update(member_files(entry, precision, pipeline)[0])
            else:
                files.add(model_file(entry, precision, pipeline)[:2])
    return files
