"""Metrics per query kind (and on a balanced mix of kinds), and how well hits' moments cover the truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import evaluate_retrieval
from .queries import EvalQuery

__all__ = ["MIXED", "kind_indices", "metrics_by_kind", "temporal_iou", "moment_metrics"]

#: name of the balanced mix of every kind in per-kind reports
MIXED = "mixed"


def kind_indices(kinds: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Query indices of each kind, plus :data:`MIXED`: the same number of queries of each kind.

    The mix takes, from every kind, as many queries as the rarest kind has, evenly spaced over that
    kind's queries in their order (deterministic). Queries without a kind are left out of the breakdown.
    """
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(kinds):
        if k is not None:
            groups.setdefault(k, []).append(i)
    out = {k: np.asarray(v, dtype=np.int64) for k, v in sorted(groups.items())}
    if len(out) >= 2:
        n = min(len(v) for v in out.values())
        picks = [v[np.round(np.linspace(0, len(v) - 1, n)).astype(np.int64)] for v in out.values()]
        out[MIXED] = np.sort(np.concatenate(picks))
    return out


def metrics_by_kind(
    scores: np.ndarray, relevant: Sequence[set[int]], kinds: Sequence[str | None]
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_retrieval` on each kind's rows of a (Q, V) score matrix (and on the mix)."""
    return {k: evaluate_retrieval(scores[idx], [relevant[i] for i in idx]) for k, idx in kind_indices(kinds).items()}


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time intervals (0 when disjoint)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def moment_metrics(
    queries: Sequence[EvalQuery], top: Sequence[tuple[str, float, float] | None]
) -> dict[str, float]:
    """How the top hit's moment covers the query's span in that video.

    Args:
        queries: the queries (with ``spans``).
        top: per query, the top hit as ``(video_id, moment start, moment end)``, or None.

    Returns:
        Over queries whose top hit is relevant and has spans: ``n``, mean best ``iou`` with a span,
        ``midpoint_in_span`` (share of moments whose midpoint lies in a span) and mean ``length``
        (seconds); ``nan`` when no query qualifies.
    """
    ious, mids, lengths = [], [], []
    for q, hit in zip(queries, top):
        if hit is None or hit[0] not in q.video_ids:
            continue
        spans = q.spans_of(hit[0])
        if not spans:
            continue
        moment = (hit[1], hit[2])
        ious.append(max(temporal_iou(moment, s) for s in spans))
        mid = (hit[1] + hit[2]) / 2
        mids.append(any(a <= mid <= b for a, b in spans))
        lengths.append(hit[2] - hit[1])
    if not ious:
        return {"n": 0.0, "iou": float("nan"), "midpoint_in_span": float("nan"), "length": float("nan")}
    return {
        "n": float(len(ious)),
        "iou": float(np.mean(ious)),
        "midpoint_in_span": float(np.mean(mids)),
        "length": float(np.mean(lengths)),
    }
