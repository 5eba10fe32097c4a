"""Held-out evaluation of a synthetic-world bundle through the real query path (mp4 -> decoder -> ONNX -> aggregation)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vtr_qdrant import synthetic as syn

from .synthetic_model import NUM_FRAMES

__all__ = ["evaluate_bundle", "format_table"]

log = logging.getLogger("onnx_export.train_synthetic")

#: held-out world(s) evaluated unless the caller names others
DEFAULT_EVAL_SEEDS: tuple[int, ...] = (syn.heldout_seed(0),)


def _aggregators() -> dict[str, Any]:
    from vtr_qdrant.search.aggregation import MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames

    return {"mean": MeanPooling(), "max": MaxFrame(), "topk": TopKFrames(3), "softmax": SoftmaxPooling(0.01)}


def evaluate_bundle(
    bundle: Any,
    *,
    seeds: Sequence[int] = DEFAULT_EVAL_SEEDS,
    n_videos: int = 100,
    work_dir: str | Path | None = None,
    num_frames: int = NUM_FRAMES,
    threads: int = 2,
) -> dict[str, dict[str, dict[str, float]]]:
    """Retrieval quality of a bundle on held-out worlds through the real path.

    mp4 (``make_world``) -> ``sample_frames`` -> ``visual.onnx`` -> aggregation, and ``text.onnx``
    for the queries. Metrics are averaged over worlds weighted by their query counts.

    Returns:
        ``{kind: {aggregation: metrics}}`` with kind ``scene`` or ``video`` and metrics from
        :func:`vtr_qdrant.synthetic.evaluate_retrieval`.
    """
    from vtr_qdrant.model.bundle import resolve_bundle
    from vtr_qdrant.video.decode import sample_frames

    b = resolve_bundle(bundle)
    fenc = b.frame_encoder(intra_op_threads=threads)
    tenc = b.text_encoder(intra_op_threads=threads)
    size = b.manifest.image.image_size
    aggs = _aggregators()
    totals: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for seed in seeds:
            if not syn.is_heldout_seed(seed):
                log.warning("evaluating on seed %d, which is a training seed", seed)
            world = syn.make_world(seed, n_videos, Path(tmp) / f"world-{seed}")
            frames = []
            for vid in world.video_ids:
                sampled = sample_frames(str(world.path(vid)), num_frames=num_frames, size=size)
                frames.append(fenc.encode(sampled.images))
            widest = max(len(f) for f in frames)
            dim = frames[0].shape[1]
            emb = np.zeros((len(frames), widest, dim), np.float32)
            mask = np.zeros((len(frames), widest), bool)
            for i, f in enumerate(frames):
                emb[i, : len(f)] = f
                mask[i, : len(f)] = True
            for kind in ("scene", "video"):
                queries = world.queries(kind)
                rel = syn.relevance_indices(queries, world.video_ids)
                text = tenc.encode([q.text for q in queries])
                for name, agg in aggs.items():
                    m = syn.evaluate_retrieval(agg.aggregate(text, emb, mask).scores, rel)
                    acc = totals.setdefault(kind, {}).setdefault(name, {})
                    for k, v in m.items():
                        acc[k] = acc.get(k, 0.0) + (v * m["n"] if k != "n" else v)
                counts[kind] = counts.get(kind, 0.0) + len(queries)
    return {
        kind: {
            name: {k: (v if k == "n" else v / counts[kind]) for k, v in m.items()} for name, m in per.items()
        }
        for kind, per in totals.items()
    }


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table of :func:`evaluate_bundle` results."""
    lines = [
        f"{'queries':<8} {'aggregation':<11} {'n':>5} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>5} {'MnR':>6}"
    ]
    for kind, per in results.items():
        for name, m in per.items():
            lines.append(
                f"{kind:<8} {name:<11} {int(m['n']):>5} {m['R@1']:>6.3f} {m['R@5']:>6.3f} {m['R@10']:>6.3f} "
                f"{m['MdR']:>5.1f} {m['MnR']:>6.2f}"
            )
    return "\n".join(lines)


