"""The analysis report of the contract, as pydantic models (shown in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str


class SliceResult(BaseModel):
    index: int = Field(description="0 = most basal, by geometry along the slice normal")
    sop_instance_uid: str
    frame_number: int | None = Field(None, description="frame of an Enhanced MR instance")
    myocardium_area_mm2: float
    scar_area_mm2: float
    scar_percent: float
    mvo_area_mm2: float = Field(description="microvascular obstruction, inside the scar")
    mvo_percent: float = Field(description="MVO area over myocardium area, 0-100")


class AhaSegment(BaseModel):
    segment: int = Field(ge=1, le=16)
    name: str
    scar_percent: float
    mvo_percent: float = Field(0.0, description="microvascular obstruction, % of the "
                               "segment's myocardium")
    transmurality_percent: float = Field(
        description="median scar fraction of the wall thickness over the segment's scarred "
        "wedges")
    transmurality_class: str = Field(description="0%, 1-25%, 26-50%, 51-75% or 76-100%")


class BaselineResult(BaseModel):
    scar_percent: float
    scar_volume_ml: float
    scar_mass_g: float
    method: str


class Timings(BaseModel):
    decode: float
    preprocess: float
    inference: float
    quantify: float
    encode: float
    total: float


class StoreBack(BaseModel):
    """The push of this analysis' SEG and SR to the configured DICOMweb destination."""

    destination: str
    status: str = Field(description="pending, retrying or done; a push is never given up")
    attempts: int
    next_attempt_at: float = Field(description="Unix time of the next attempt (not done)")
    last_attempt_at: float | None
    last_error: str | None
    done_at: float | None


class Quality(BaseModel):
    verdict: Literal["ok", "review"] = Field(
        description="review: the result should not be read without a person checking it")
    reasons: list[str] = Field(description="why, in words a reader can act on; empty when ok")


class Report(BaseModel):
    id: str
    status: str = "completed"
    created_at: datetime
    pipeline: str
    models: list[ModelRef]
    execution_provider: str
    study_instance_uid: str
    series_instance_uid: str
    seg_series_instance_uid: str
    seg_sop_instance_uid: str
    sr_sop_instance_uid: str
    series_description: str | None = Field(None, description="the source series' own")
    slices: list[SliceResult]
    slice_spacing_mm: float
    pixel_spacing_mm: tuple[float, float]
    myocardium_volume_ml: float
    scar_volume_ml: float
    myocardium_mass_g: float
    scar_mass_g: float
    scar_to_myocardium_ratio: float = Field(ge=0.0, le=1.0)
    scar_percent: float = Field(ge=0.0, le=100.0)
    mvo_volume_ml: float = Field(ge=0.0, description="microvascular obstruction (no-reflow), "
                                 "inside the scar and counted in it")
    mvo_percent: float = Field(ge=0.0, le=100.0, description="MVO volume over myocardium "
                               "volume, 0-100")
    aha_segments: list[AhaSegment]
    aha_reference: str
    baselines: dict[str, BaselineResult]
    timings_ms: Timings
    warnings: list[str]
    contrast: Literal["dark-blood", "bright-blood"] | None = Field(
        None, description="the LGE contrast the series was read as (absent only in reports "
        "stored before the field existed)")
    contrast_basis: Literal["headers", "image", "default"] | None = Field(
        None, description="what the contrast reading rests on: the protocol name or series "
        "description, the blood pool's signal against the myocardium's, or neither (no ring)")
    lge_evidence: dict[str, float | None] | None = Field(
        None, description="what the image says about the LGE contrast (service.pipeline."
        "acceptance.lge_evidence): myocardium_rank, the share of tissue around the heart "
        "darker than the remote myocardium (low in LGE), myocardium_over_blood, the "
        "remote myocardium over the LV blood pool (at most about 1 in LGE), blood_position, "
        "the blood pool's place in the range of that tissue (near the top in cine and "
        "bright-blood T2), and blood_texture, the blood pool's spread over its signal")
    scar_percent_interval: tuple[float, float] | None = Field(
        None, description="[lower, upper]: 95 % interval of scar_percent, calibrated on "
        "validation series (None only when the scar model has no calibration)")
    quality: Quality | None = Field(None, description="absent only in reports stored before "
                                    "the field existed")
    store_back: StoreBack | None = Field(None, description="only when DICOMWEB_STORE_URL is set")
    disclaimer: str = ("Research use only: the models are trained on synthetic phantoms and 70 "
                       "real scans from one centre, and are "
                       "not validated for clinical use.")
