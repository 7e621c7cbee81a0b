"""onnxruntime sessions: one per model, created once, run on a series in batches of slices.

CUDA is used when onnxruntime offers it (and the setting allows), else the CPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

from service.errors import StartupError

log = logging.getLogger("service")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Slices per network run. A whole series in one run made the activation memory grow with
# the series' length; now it is bounded (BENCHMARKS.md, "Peak RSS at the limits"), and a
# clinical short-axis stack (8-20 slices) is still one or two runs.
BATCH_SLICES = 16


def share_cores_with_onnxruntime() -> None:
    """numpy's BLAS on one thread, for the whole process.

    onnxruntime's pool already uses every core. BLAS threads left spinning after a
    resampling product took the cores from it and made the networks 1.7x slower
    (BENCHMARKS.md, "Profile of one analysis"); the products are small enough to
    gain nothing from threads.
    """
    threadpool_limits(limits=1, user_api="blas")


_ARENA_LOCK = threading.Lock()
_arena_registered = False
# One network run at a time in the process. Each run already takes every core (intra-op
# threads), so two at once only share them, slower than one after the other (two myocardium
# U-Nets at once: 132 ms, against 58 ms for one, BENCHMARKS.md "onnxruntime options"); and
# each concurrent run leaves its buffers in the shared arena's high-water mark. The analyses
# still overlap: one's pre- and post-processing runs while the other's networks do.
_RUN_LOCK = threading.Lock()


def _register_shared_cpu_arena() -> None:
    """One CPU arena for every session of the process, registered once.

    Each session's own arena kept its own high-water mark; four models and two analyses
    at once held 764 MiB where one shared arena holds 667 (BENCHMARKS.md, "Service
    process"), at the same speed.
    """
    global _arena_registered
    with _ARENA_LOCK:
        if not _arena_registered:
            ort.create_and_register_allocator(
                ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                  ort.OrtMemType.DEFAULT), None)
            _arena_registered = True


class Predictor(Protocol):
    """Class probabilities for a batch: (N, H, W, channels) float32 in, (N, H, W, C) out."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def choose_providers(preference: str = "auto") -> list[str]:
    """Providers for ``auto``, ``cuda`` or ``cpu``.

    ``cuda`` without CUDA is an error, not a silent fallback.
    """
    available = ort.get_available_providers()
    if preference == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if preference == "cuda":
        raise StartupError(f"EXECUTION_PROVIDER=cuda but onnxruntime offers only {available}",
                           code="execution_provider_unavailable")
    return [CPU]


class OnnxModel:
    """An ONNX segmentation network behind the :class:`Predictor` interface."""

    def __init__(self, path: Path, providers: Sequence[str] = (CPU,),
                 intra_op_threads: int = 0, fall_back_to_cpu: bool = False,
                 memory_arena: bool = True) -> None:
        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        # The CPU arena keeps activation buffers between runs: ~40 ms faster per analysis
        # here, but each concurrent run leaves its high-water mark (BENCHMARKS.md).
        options.enable_cpu_mem_arena = memory_arena
        if memory_arena:
            _register_shared_cpu_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options,
                                                providers=list(providers))
        except Exception as exc:
            # onnxruntime-gpu lists CUDA even where no GPU or driver is present; with
            # EXECUTION_PROVIDER=auto the container must still serve, on the CPU.
            if not (fall_back_to_cpu and CUDA in providers):
                raise
            log.warning("%s: CUDA session failed (%s); using the CPU", Path(path).name, exc)
            self.session = ort.InferenceSession(str(path), sess_options=options,
                                                providers=[CPU])
        self.input_name = self.session.get_inputs()[0].name
        self.execution_provider = self.session.get_providers()[0]
        # One run now: allocations and kernel choices happen at start-up, not on the
        # first patient, and a model that cannot run fails here.
        _, *shape = self.session.get_inputs()[0].shape
        if all(isinstance(d, int) for d in shape):
            self(np.zeros((1, *shape), dtype=np.float32))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[..., None]
        with _RUN_LOCK:
            if len(batch) <= BATCH_SLICES:
                return self.session.run(None, {self.input_name: batch})[0]
            return np.concatenate([
                self.session.run(None, {self.input_name: batch[k:k + BATCH_SLICES]})[0]
                for k in range(0, len(batch), BATCH_SLICES)])
