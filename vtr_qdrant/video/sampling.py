"""User-facing settings shared by ingestion and the collection schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SamplingConfig"]


class SamplingConfig(BaseModel):
    """How frames are sampled from a video; recorded in the collection so every video matches.

    Attributes:
        num_frames: frames per video, X-Pool protocol (middle of N equal parts). Default 12.
        fps: alternatively, one frame every 1/fps seconds (long videos). Exactly one of the two.
        mode: ``exact`` (frame-accurate) or ``fast`` (nearest keyframe, true timestamps).
        segment_seconds: cut long videos into points of this many seconds (None: only the
            multivector size limit splits a video).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)
    mode: Literal["exact", "fast"] = "exact"
    segment_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_rate(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("num_frames") is None and data.get("fps") is None:
            return {**data, "num_frames": 12}
        return data

    @model_validator(mode="after")
    def _one_rate(self) -> SamplingConfig:
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("set exactly one of num_frames (frames per video) and fps (frames per second)")
        return self
