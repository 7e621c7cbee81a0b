"""Settings, read once from the environment (pydantic-settings); fail fast on bad values."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = REPO_ROOT / "var" / "results"
    models_dir: Path = REPO_ROOT / "models"
    execution_provider: Literal["auto", "cuda", "cpu"] = "auto"
    # auto: each model's int8 file where the release measured it to hold accuracy (and
    # faster), else its float32 file; int8: every int8 file there is; fp32: none.
    model_precision: Literal["auto", "fp32", "int8"] = "auto"
    # Every model is loaded before ready; which pipelines also run once on a synthetic
    # series first (default: the default pipeline's; another's first analysis is then
    # about half a second slower, BENCHMARKS.md).
    warm_pipelines: Literal["default", "all"] = "default"
    api_key: str | None = None
    # Listening beyond loopback without an API key serves patient data to the network: the
    # service refuses to start so unless this says it is meant (a trusted, closed network).
    allow_unauthenticated: bool = False
    session_hours: float = Field(8.0, gt=0, description="how long a browser sign-in lasts")
    dicomweb_store_url: str | None = None
    max_concurrent_analyses: int = Field(2, ge=1)
    onnx_memory_arena: bool = Field(True, description="faster; off: lower peak memory when "
                                    "many analyses run at once")
    max_request_bytes: int = Field(512 * 2**20, ge=1, description="upload size cap")
    max_files: int = Field(1000, ge=2, description="DICOM files per analysis")
    max_unzipped_bytes: int = Field(1024 * 2**20, ge=1, description="zip expansion cap")
    # What bounds an analysis' memory: 32 Mi is 128 slices of 512x512, several times a
    # clinical short-axis stack (2-D: 8-20 slices; 3-D: about 120 of 256x256).
    max_series_pixels: int = Field(32 * 2**20, ge=1, description="rows x columns x slices "
                                   "one analysis reads")
    analysis_timeout_s: float = Field(120.0, gt=0, description="longest wait for one analysis")
    encoding_wait_s: float = Field(30.0, ge=0, description="longest a GET of a SEG or SR waits "
                                   "for its encoding (after the 201) before 503")
    # Answered analyses waiting for their SEG and SR: past it, POST is 503 overloaded (a GET
    # of a SEG would otherwise wait behind an unbounded backlog); nothing accepted is dropped.
    # 16 at 0.5-0.9 s an encoding (6 slices, 2 loaded cores) is under ENCODING_WAIT_S.
    encoding_queue_max: int = Field(16, ge=1, description="analyses waiting for their SEG "
                                    "and SR before new ones are refused (503)")
    # An encoding that fails on a bug: tried this many times, FIRST_RETRY_S apart, doubling.
    encoding_max_attempts: int = Field(3, ge=1)
    encoding_first_retry_s: float = Field(2.0, gt=0)
    # Free space DATA_DIR keeps: below it new series are refused (507 insufficient_storage)
    # and /readyz is 503; what is already accepted (SEG, SR, the index) may use it.
    min_free_bytes: int = Field(64 * 2**20, ge=0)
    # A series is refused before anything is written unless MIN_FREE_BYTES plus this many
    # times its upload size is free (what it leaves stored: arrays in float32, masks, SEG).
    series_storage_factor: float = Field(6.0, gt=0)
    request_read_timeout_s: float = Field(60.0, gt=0, description="longest wait for a body")
    # SIGTERM: new work is refused (503 shutting_down) while what is in flight finishes for
    # at most this long; queued SEG/SR encodings left then are done at the next start.
    # Compose's stop_grace_period must be longer (docker-compose.yml; docs/api.md).
    shutdown_grace_s: float = Field(30.0, ge=0, description="longest a stop waits for "
                                    "analyses and encodings in flight")
    # A second, different image of one SOP instance (CONTRACT.md, "Errors"): refuse the
    # series, or keep the copy that arrived first or last (service/dicom/instances.py).
    duplicate_instances: Literal["reject", "keep-first", "keep-last"] = "reject"
    # STOW-RS: a received series is analysed once no instance of it has arrived
    # for this long (PACS send a series in one or several requests).
    stow_quiet_period_s: float = Field(10.0, ge=0)
    # Store-back (DICOMweb STOW-RS of SEG and SR) to DICOMWEB_STORE_URL.
    dicomweb_store_username: str | None = None
    dicomweb_store_password: str | None = None
    dicomweb_store_token: str | None = Field(None, description="sent as 'Bearer TOKEN'")
    store_back_timeout_s: float = Field(30.0, gt=0)
    store_back_first_retry_s: float = Field(5.0, gt=0)
    store_back_max_retry_s: float = Field(600.0, gt=0, description="back-off cap; never gives up")
    background_poll_s: float = Field(0.5, gt=0, description="how often queued work is checked")
    retention_days: float | None = Field(None, gt=0, description="analyses and received "
                                         "series older than this are deleted; unset: kept")

    @property
    def spool_dir(self) -> Path:
        """Request bodies on their way in (removed when their request's work ends)."""
        return self.data_dir / "spool"

    @model_validator(mode="after")
    def _no_open_door(self) -> Settings:
        if not self.api_key and not self.allow_unauthenticated and not _loopback(self.host):
            raise ValueError(
                f"HOST={self.host} listens beyond this machine without API_KEY: set API_KEY, "
                "or ALLOW_UNAUTHENTICATED=true on a trusted closed network")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
