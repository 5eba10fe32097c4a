"""Stage 2: stage-1 candidates -> ranked hits with the moment each matched.

:class:`StageTwo` owns the two per-process caches of the search path and the ranking rule:

- a frames LRU: candidates' (F, D) frame matrices keyed by (point id, frames digest), so stage 1
  returns ids and payloads only and repeated candidates cost nothing to move (reading frame lists
  back from Qdrant is the largest cost of stage 2: DESIGN.md);
- a per-candidate precompute LRU for aggregations that have text-independent state
  (:meth:`Aggregator.precompute_candidates <vtr_qdrant.search.aggregation.Aggregator.precompute_candidates>`:
  the X-Pool head's factorised tensors);
- scoring all candidates at once, keeping each video's best segment, and the moment from its weights.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..store.backend import Candidate, StorageBackend
from ..store.frame_store import FrameStore, frames_version
from ..store.points import Key
from .aggregation import Aggregator
from .hits import Moment, VideoHit, extend_across_segments, moment_from_weights

__all__ = ["StageTwo", "padded_frames", "candidate_version"]


def candidate_version(c: Candidate) -> str:
    """What changes when a point's frames change: the stored digest (ingestion time for older points)."""
    return frames_version(c.payload)


def padded_frames(frames: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame matrices as (V, F_max, D) float32 zero-padded, and the (V, F_max) bool mask of real frames."""
    lengths = np.array([len(f) for f in frames])
    out = np.zeros((len(frames), int(lengths.max()), dim), dtype=np.float32)
    for i, f in enumerate(frames):
        out[i, : lengths[i]] = f
    return out, np.arange(out.shape[1])[None, :] < lengths[:, None]


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return value


class StageTwo:
    """Candidates -> hits, with the frames and precompute LRUs (thread-safe).

    Args:
        dim: embedding dimension D.
        frames_cache_size: candidates' frame matrices kept (0: frames come with stage 1).
        precompute_cache_size: candidates' precomputed aggregation state kept (0: none).
        frame_store: the on-disk frames (:class:`~vtr_qdrant.store.frame_store.FrameStore`)
            read before Qdrant on an LRU miss, and filled with what is read from Qdrant.
    """

    def __init__(self, dim: int, *, frames_cache_size: int, precompute_cache_size: int,
                 frame_store: FrameStore | None = None) -> None:
        self.dim = dim
        self.frame_store = frame_store
        self.frames_cache_size = _check_size("frames_cache_size", frames_cache_size)
        self.precompute_cache_size = _check_size("xpool_cache_size", precompute_cache_size)
        self._frames: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._states: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Empty both caches (benchmarks measure cold queries this way)."""
        with self._lock:
            self._frames.clear()
            self._states.clear()

    @property
    def frames_with_stage_one(self) -> bool:
        """Stage 1 must return the frames (no frames cache)."""
        return self.frames_cache_size == 0

    def attach_frames(self, backend: StorageBackend, collection_name: str, cands: list[Candidate]) -> None:
        """Give every candidate its frames: from the LRU when its version is cached, else from the
        frame store, else read from Qdrant in one call (and written to the frame store).

        Candidates whose point vanished between the two calls keep ``frames=None`` (ranking drops them).
        """
        keys = [(c.id, candidate_version(c)) for c in cands]
        with self._lock:
            missing = sorted({k for k in keys if k not in self._frames})
        fetched = self.frame_store.get_many(missing) if self.frame_store is not None and missing else {}
        rest = sorted({pid for pid, _ in missing if pid not in fetched})
        if rest:
            read = backend.fetch_frames(collection_name, rest)
            if self.frame_store is not None and read:
                version = dict(missing)
                self.frame_store.put_many([(pid, version[pid], f) for pid, f in read.items()])
            fetched.update(read)
        with self._lock:
            store = self._frames
            for c, k in zip(cands, keys):
                f = store.get(k)
                if f is None:
                    f = fetched.get(c.id)
                    if f is None:
                        continue
                    f.setflags(write=False)  # shared by the cache and every hit that uses it
                    store[k] = f
                else:
                    store.move_to_end(k)
                c.frames = f
            while len(store) > self.frames_cache_size:
                store.popitem(last=False)

    def _precomputed(self, agg: Aggregator, cands: list[Candidate], frames: list[np.ndarray]) -> list[Any]:
        """Per-candidate state from the LRU, computing the missing ones in one batch."""
        keys = [(agg.state_key, c.id, candidate_version(c)) for c in cands]
        with self._lock:
            found = {k: self._states[k] for k in keys if k in self._states}
            for k in found:
                self._states.move_to_end(k)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            fresh = agg.precompute_candidates(*padded_frames([frames[i] for i in missing], self.dim))
            new = {keys[i]: fresh[j] for j, i in enumerate(missing)}
            found.update(new)
            with self._lock:
                self._states.update(new)
                while len(self._states) > self.precompute_cache_size:
                    self._states.popitem(last=False)
        return [found[k] for k in keys]

    def rank(
        self,
        vector: np.ndarray,
        cands: list[Candidate],
        agg: Aggregator,
        *,
        limit: int,
        score_threshold: float | None = None,
        with_payload: bool = True,
    ) -> list[VideoHit]:
        """Score candidates and return the best ``limit`` videos, each with its best segment's moment.

        Args:
            vector: (D,) float32 L2-normalised query embedding.
            cands: stage-1 candidates with frames attached (those without frames are dropped).
            agg: the aggregation.
            limit: how many videos.
            score_threshold: stop at the first hit scoring below this.
            with_payload: include the payload in each hit.

        Returns:
            Hits best first, one per video.
        """
        kept = [(c, f) for c in cands if (f := c.frames) is not None and len(f)]
        if not kept:
            return []
        cands, frames = [c for c, _ in kept], [f for _, f in kept]
        if agg.precomputes and self.precompute_cache_size > 0:  # cached candidates need no padded copy
            res = agg.aggregate_precomputed(vector[None, :], self._precomputed(agg, cands, frames))
        else:
            res = agg.aggregate(vector[None, :], *padded_frames(frames, self.dim))
        scores, weights = res.scores[0], res.weights[0]
        best: dict[str, int] = {}
        segments: dict[str, dict[int, int]] = {}  # video -> segment index -> candidate row
        for i, c in enumerate(cands):
            vid = str(c.payload.get(Key.VIDEO_ID, c.id))
            segments.setdefault(vid, {})[int(c.payload.get(Key.SEGMENT_INDEX, 0))] = i
            j = best.get(vid)
            if j is None or scores[i] > scores[j]:
                best[vid] = i
        hits: list[VideoHit] = []
        for vid, i in sorted(best.items(), key=lambda kv: -float(scores[kv[1]])):
            s = float(scores[i])
            if score_threshold is not None and s < score_threshold:
                break
            c = cands[i]

            def moment_of(row: int) -> tuple[Moment, float, float]:
                cand, n = cands[row], len(frames[row])
                ts = np.asarray(cand.payload.get(Key.TIMESTAMPS) or np.arange(n, dtype=np.float64))[:n]
                lo, hi = cand.payload.get(Key.SEGMENT_START), cand.payload.get(Key.SEGMENT_END)
                lo = float(ts[0]) if lo is None else float(lo)
                hi = float(ts[-1]) if hi is None else float(hi)
                return moment_from_weights(weights[row, :n], ts, seg_start=lo, seg_end=hi), lo, hi

            hits.append(
                VideoHit(
                    video_id=vid,
                    score=s,
                    payload=c.payload if with_payload else {},
                    moment=extend_across_segments(moment_of, segments[vid], int(c.payload.get(Key.SEGMENT_INDEX, 0))),
                    segment_index=int(c.payload.get(Key.SEGMENT_INDEX, 0)),
                    point_id=c.id,
                    stage1_score=c.score,
                )
            )
            if len(hits) == limit:
                break
        return hits
