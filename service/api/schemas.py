"""The API's answers other than the report (``service.pipeline.report``): models, readiness,
the analyses index, a received series' state. Pydantic, shown in the OpenAPI schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    execution_provider: str
    precision: str = Field("fp32", description="fp32 or int8: which of the model's files runs")


class PipelineInfo(BaseModel):
    name: str
    default: bool
    myocardium_model: ModelInfo
    scar_model: ModelInfo
    ring_model: ModelInfo | None = Field(
        None, description="the network whose redrawn myocardium places and masks the scar "
        "model's crop, where the pipeline runs one between the two")
    description: str


class Readiness(BaseModel):
    status: str
    reason: str | None = Field(None, description="why not ready (e.g. the store is full)")
    models: list[ModelInfo]


class AnalysisSummary(BaseModel):
    id: str
    created_at: datetime
    pipeline: str
    series_instance_uid: str
    scar_percent: float
    verdict: Literal["ok", "review"] | None = Field(None, description="the quality verdict")


class ReceivedSeriesState(BaseModel):
    """A series received by STOW-RS and what became of it."""

    series_instance_uid: str
    study_instance_uid: str
    state: str = Field(description="waiting (for the quiet period), analysing, done or failed")
    instances: int
    first_received_at: float
    last_received_at: float
    analyses: list[str] = Field(description="analysis ids, oldest first; the last is current")
    analysed_instances: int
    error: dict | None = Field(None, description="{code, message} of the last failure")
    note: str | None = Field(None, description="why the newest analysis supersedes the one "
                             "before (more instances, or an instance sent again with another "
                             "image: DUPLICATE_INSTANCES)")
