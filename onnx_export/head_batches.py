"""Data side of head training: the train/validation split, hard-negative batches, validation metrics."""

from __future__ import annotations

import numpy as np

from vtr_qdrant.errors import InvalidInputError
from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores
from vtr_qdrant.eval.metrics import evaluate_retrieval
from vtr_qdrant.search.xpool import XPoolHead

__all__ = ["split_videos", "nearest_videos", "hard_batch", "validation_metrics"]


def split_videos(n_videos: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n_videos < 4:
        raise InvalidInputError(
            f"training a head needs at least 4 videos (a train and a validation split), got {n_videos}"
        )
    perm = rng.permutation(n_videos)
    n_val = min(n_videos - 2, max(2, round(fraction * n_videos)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def nearest_videos(
    frames: np.ndarray, mask: np.ndarray, videos: np.ndarray, group: int
) -> dict[int, np.ndarray]:
    """Each training video's ``4 * group`` nearest training videos by mean-frame cosine (hard negatives)."""
    m = mask[videos][..., None]
    mean = (frames[videos] * m).sum(axis=1) / m.sum(axis=1)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    k = min(4 * group, len(videos) - 1)
    out: dict[int, np.ndarray] = {}
    for lo in range(0, len(videos), 1024):
        sims = mean[lo : lo + 1024] @ mean.T
        sims[np.arange(len(sims)), lo + np.arange(len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        for i, row in enumerate(top):
            out[int(videos[lo + i])] = videos[row]
    return out


def hard_batch(
    order: np.ndarray, start: int, batch: int, group: int, neighbours: dict[int, np.ndarray]
) -> tuple[np.ndarray, int]:
    """``batch`` distinct videos: anchors taken from ``order[start:]`` (wrapping), each followed by its
    nearest not yet chosen neighbours up to ``group`` videos. Returns (videos, next start)."""
    chosen: dict[int, None] = {}
    i = start
    while len(chosen) < batch:
        anchor = int(order[i % len(order)])
        i += 1
        if anchor in chosen:
            continue
        chosen[anchor] = None
        added = 1
        for nb in neighbours[anchor].tolist():
            if added >= group or len(chosen) >= batch:
                break
            if nb not in chosen:
                chosen[nb] = None
                added += 1
    return np.fromiter(chosen, dtype=np.int64, count=len(chosen)), i


def validation_metrics(
    head: XPoolHead,
    text: np.ndarray,
    groups: np.ndarray,
    video_groups: list[set[int]],
    frames: np.ndarray,
    mask: np.ndarray,
    val: np.ndarray,
    val_captions: np.ndarray,
) -> dict[str, float]:
    """Retrieval of the validation videos by their (group-deduplicated) captions."""
    seen: dict[int, int] = {}
    for c in val_captions:
        seen.setdefault(int(groups[c]), int(c))
    caps = np.array(list(seen.values()), dtype=np.int64)
    rel = [{j for j, v in enumerate(val) if int(groups[c]) in video_groups[v]} for c in caps]
    scores = exhaustive_scores(
        head, text[caps], EvalCorpus.from_arrays([str(v) for v in val], frames[val], mask[val])
    )
    m = evaluate_retrieval(scores, rel)
    m["Rsum"] = m["R@1"] + m["R@5"] + m["R@10"]
    return m
