"""Run as a script by test_crash_consistency.py: write one version of a small corpus into a
collection (local folder or Qdrant Edge), optionally SIGKILLing this process right after its N-th
write request, or report what the collection holds as JSON.

    python crash_writer.py {local,edge} FOLDER write VERSION [--kill-after N]
    python crash_writer.py {local,edge} FOLDER check

The corpus: ``long`` (300 frames, 100 segments of 3 s) and ``short-a``/``short-b`` (4 frames);
its content depends on VERSION, so version 2 replaces every video of version 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: tests/ for write_counter
from write_counter import CountingWrites  # noqa: E402

DIM = 32
VIDEOS = ("long", "short-a", "short-b")


def corpus(version: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1000 + version)
    out = {}
    for vid, n in zip(VIDEOS, (300, 4, 4)):
        f = rng.normal(size=(n, DIM)).astype(np.float32)
        out[vid] = (f / np.linalg.norm(f, axis=1, keepdims=True), np.arange(n, dtype=np.float64) + 0.5)
    return out


class KillAfter(CountingWrites):
    """Delegates to a back end; SIGKILLs the process once ``n`` write requests have returned."""

    def after_write(self) -> None:
        if self.calls == self.n:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def open_collection(kind: str, folder: str) -> Any:
    from vtr_qdrant.collection import VideoCollection
    from vtr_qdrant.video.sampling import SamplingConfig

    if kind == "edge":
        from vtr_qdrant.store.edge import EdgeBackend

        backend: Any = EdgeBackend(folder)
    else:
        from qdrant_client import QdrantClient

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend = QdrantClient(path=folder)
    return VideoCollection(backend, "crash", dim=DIM, sampling=SamplingConfig(fps=1.0, segment_seconds=3.0), exact=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["local", "edge"])
    ap.add_argument("folder")
    ap.add_argument("action", choices=["write", "check"])
    ap.add_argument("version", nargs="?", type=int, default=1)
    ap.add_argument("--kill-after", type=int, default=0)
    a = ap.parse_args()
    from vtr_qdrant.store import videos as store_videos
    from vtr_qdrant.store.videos import EmbeddedVideo

    store_videos.UPSERT_BATCH_POINTS = 16  # more requests per video: more places to die at
    vc = open_collection(a.kind, a.folder)
    if a.action == "write":
        if a.kill_after:
            vc.store.backend = KillAfter(vc.store.backend, a.kill_after)
        data = corpus(a.version)
        vc.upsert_embeddings_batch(EmbeddedVideo(vid, f, t, content_hash=f"h{a.version}") for vid, (f, t) in data.items())
        print(json.dumps({"calls": getattr(vc.store.backend, "calls", None)}))
        return
    versions = {v: corpus(v) for v in (1, 2)}
    report: dict[str, Any] = {"count": vc.count(), "videos": {}}
    states = vc.store.states(list(VIDEOS))
    unchanged = vc.store.unchanged({vid: "h2" for vid in VIDEOS})
    for vid in VIDEOS:
        got = vc.get(vid)
        same = [v for v, data in versions.items() if got is not None and got.frames.shape == data[vid][0].shape
                and np.allclose(got.frames, data[vid][0], atol=1e-6) and np.allclose(got.timestamps, data[vid][1])]
        # a search for one of its frames finds it once, and scores its frames of one version only
        q = versions[2][vid][0][-1]
        hits = [h.video_id for h in vc.search(q, limit=10, aggregation="max", candidates=400)]
        st = states.get(vid)
        report["videos"][vid] = {
            "matches": same,  # [] = absent or mixed
            "hits": hits.count(vid),
            "whole": bool(st and st.whole),
            "unchanged_v2": vid in unchanged,
            "versions": len(st.versions) if st else 0,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
