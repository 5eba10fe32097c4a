"""Search results: a ranked video with the moment the query matched."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Moment", "VideoHit", "moment_from_weights"]


class Moment(BaseModel):
    """Where in the video the query matched, from the aggregation's per-frame weights.

    Attributes:
        start, end: seconds; the contiguous run of frames around the peak whose weight is at
            least half the peak's, widened to midpoints between sampled frames.
        peak: timestamp (seconds) of the highest-weight frame.
        timestamps: (F,) seconds of the candidate's sampled frames.
        weights: (F,) weight of each frame (sums to 1).
    """

    model_config = ConfigDict(extra="forbid")

    start: float
    end: float
    peak: float
    timestamps: list[float]
    weights: list[float]


class VideoHit(BaseModel):
    """One ranked video.

    Attributes:
        video_id: the video's id.
        score: stage-2 score (higher is better; cosine-like for every built-in aggregation).
        payload: the stored payload of the best-matching point (segment).
        moment: the best-matching moment.
        segment_index: which segment of the video matched (0 for unsegmented videos).
        point_id: id of that point.
        stage1_score: the candidate's stage-1 score (pooled cosine or MaxSim).
    """

    model_config = ConfigDict(extra="forbid")

    video_id: str
    score: float
    payload: dict[str, Any] = Field(default_factory=dict)
    moment: Moment
    segment_index: int = 0
    point_id: str
    stage1_score: float


def moment_from_weights(
    weights: np.ndarray, timestamps: np.ndarray, *, seg_start: float | None = None, seg_end: float | None = None
) -> Moment:
    """Build a :class:`Moment` from (F,) weights and (F,) timestamps of one candidate."""
    w = np.asarray(weights, dtype=np.float64)
    t = np.asarray(timestamps, dtype=np.float64)
    p = int(np.argmax(w))
    thresh = 0.5 * w[p]
    a = p
    while a > 0 and w[a - 1] >= thresh:
        a -= 1
    b = p
    while b < len(w) - 1 and w[b + 1] >= thresh:
        b += 1
    start = float((t[a - 1] + t[a]) / 2) if a > 0 else float(seg_start if seg_start is not None else t[0])
    end = float((t[b] + t[b + 1]) / 2) if b < len(t) - 1 else float(seg_end if seg_end is not None else t[-1])
    return Moment(start=start, end=max(end, start), peak=float(t[p]), timestamps=t.tolist(), weights=w.tolist())
