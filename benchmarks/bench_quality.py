"""Retrieval quality on held-out synthetic worlds: trained X-Pool head vs identity head vs softmax vs mean.

    python benchmarks/bench_quality.py [--bundle synthetic-world/v1] [--train-videos 3000] [--eval-seeds 2]

1. Training data (training seeds only, :func:`vtr_qdrant.synthetic.check_training_seed`): worlds are
   rendered in numpy at the sampled timestamps (no mp4), frames encoded once by the bundle's image
   tower; captions are every paraphrase of every scene (relevance group: the scene key) and the
   whole-video caption (group: the key sequence), embedded once by the text tower.
2. :func:`onnx_export.train_head.train_head` trains the head (early stopping on a validation split
   of the training videos).
3. Evaluation on held-out worlds (``heldout_seed(i)``) through the production path: mp4 files
   (:func:`make_world`) -> :func:`sample_frames` -> image tower; queries are the worlds' scene and
   whole-video captions (:meth:`World.queries`); every aggregation scores every video
   (:func:`vtr_qdrant.eval.evaluation.exhaustive_scores`), metrics from
   :func:`vtr_qdrant.synthetic.evaluate_retrieval`, averaged over worlds weighted by query counts.

Prints the table and writes ``benchmarks/results/quality.json`` (and the trained head next to it
with ``--save-head``). Needs torch (the ``export`` extra) for step 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS_DIR, print_table, write_json  # noqa: E402

from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores  # noqa: E402
from vtr_qdrant.model.bundle import resolve_bundle  # noqa: E402
from vtr_qdrant.search.aggregation import Aggregator, MaxFrame, MeanPooling, SoftmaxPooling  # noqa: E402
from vtr_qdrant.search.resolve import load_head, towers_fingerprint  # noqa: E402
from vtr_qdrant.search.xpool import XPoolHead  # noqa: E402
from vtr_qdrant import synthetic as syn  # noqa: E402

log = logging.getLogger("bench_quality")


def training_data(
    bundle: Any, seeds: list[int], n_videos: int, num_frames: int, world_size: int, video_caption_weight: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any], int]:
    """Frames (V, F, D), caption embeddings (C, D), caption owners (C,), groups (C,), from training worlds."""
    fenc, tenc = bundle.frame_encoder(), bundle.text_encoder()
    size = bundle.manifest.image.image_size
    supersample = max(1, 2 * world_size // size)
    frames, texts, owner = [], [], []
    groups: list[Any] = []
    for seed in seeds:
        world = syn.generate_world(syn.check_training_seed(seed), n_videos, size=world_size)
        for v in world.videos:
            ts = syn.uniform_timestamps(v.duration, num_frames)
            images, _ = syn.render_video_frames(v, size, ts, supersample=supersample)
            frames.append(fenc.encode(images))
            i = len(frames) - 1
            for s in v.scenes:
                for c in syn.caption_variants(s.shape, s.colour, s.background, s.motion):
                    texts.append(c)
                    owner.append(i)
                    groups.append(("scene", s.key))
            for _ in range(video_caption_weight):
                texts.append(v.caption)
                owner.append(i)
                groups.append(("video", v.keys))
    unique = sorted(set(texts))
    emb = tenc.encode(unique)
    index = {t: j for j, t in enumerate(unique)}
    return np.stack(frames), emb[[index[t] for t in texts]], np.asarray(owner), groups, len(unique)


def heldout_eval(
    bundle: Any, aggs: dict[str, Aggregator], seeds: list[int], n_videos: int, num_frames: int, work: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """``{kind: {aggregation: metrics}}`` on held-out worlds through mp4 -> sample_frames -> towers."""
    from vtr_qdrant.video.decode import sample_frames

    fenc, tenc = bundle.frame_encoder(), bundle.text_encoder()
    size = bundle.manifest.image.image_size
    sums: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, float] = {}
    for seed in seeds:
        if not syn.is_heldout_seed(seed):
            raise SystemExit(f"seed {seed} is not held out")
        world = syn.make_world(seed, n_videos, work / f"world-{seed}")
        emb = [
            fenc.encode(sample_frames(str(world.path(v)), num_frames=num_frames, size=size).images)
            for v in world.video_ids
        ]
        widest = max(len(e) for e in emb)
        frames = np.zeros((len(emb), widest, emb[0].shape[1]), np.float32)
        mask = np.zeros(frames.shape[:2], bool)
        for i, e in enumerate(emb):
            frames[i, : len(e)], mask[i, : len(e)] = e, True
        corpus = EvalCorpus.from_arrays(world.video_ids, frames, mask)
        for kind in ("scene", "video"):
            queries = world.queries(kind)
            rel = syn.relevance_indices(queries, world.video_ids)
            text = tenc.encode([q.text for q in queries])
            for name, agg in aggs.items():
                m = syn.evaluate_retrieval(exhaustive_scores(agg, text, corpus), rel)
                acc = sums.setdefault(kind, {}).setdefault(name, {})
                for k, v in m.items():
                    acc[k] = acc.get(k, 0.0) + (v if k == "n" else v * m["n"])
            counts[kind] = counts.get(kind, 0.0) + len(queries)
        log.info("evaluated held-out world %d", seed)
    return {
        kind: {
            name: {k: (v if k == "n" else v / counts[kind]) for k, v in m.items()} for name, m in per.items()
        }
        for kind, per in sums.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="synthetic-world/v1")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[101], help="training world seeds")
    ap.add_argument("--train-videos", type=int, default=3000, help="videos per training world")
    ap.add_argument("--video-caption-weight", type=int, default=3, help="copies of each whole-video caption")
    ap.add_argument("--eval-seeds", type=int, default=2, help="held-out worlds")
    ap.add_argument("--eval-videos", type=int, default=100, help="videos per held-out world")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--world-size", type=int, default=64, help="frame side of the generated videos")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01, help="decay toward the identity init")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--trainable", default="all", choices=["all", "attention", "scale"])
    ap.add_argument("--learn-attention-scale", action="store_true", help="learn a scalar on the logits")
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument(
        "--head", default=None, help="evaluate this head (an .npz or a bundle folder) instead of training one"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-head", action="store_true", help="write the trained head to benchmarks/results/")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("vtr_qdrant").setLevel(logging.WARNING)

    from onnx_export.train_head import HeadTrainConfig, train_head

    bundle = resolve_bundle(args.bundle)
    aggs: dict[str, Aggregator] = {}
    training: dict[str, Any] = {}
    if args.head:
        aggs["xpool (given)"] = load_head(args.head, expected_fingerprint=towers_fingerprint(bundle.manifest))
    else:
        t0 = time.perf_counter()
        frames, text, owner, groups, n_unique = training_data(
            bundle,
            args.train_seeds,
            args.train_videos,
            args.frames,
            args.world_size,
            args.video_caption_weight,
        )
        embed_s = time.perf_counter() - t0
        log.info(
            "training data: %s frames, %d captions (%d unique) in %.0f s",
            frames.shape,
            len(text),
            n_unique,
            embed_s,
        )
        cfg = HeadTrainConfig(
            max_steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            dropout=args.dropout,
            trainable=args.trainable,
            learn_attention_scale=args.learn_attention_scale,
            patience=args.patience,
            seed=args.seed,
            threads=args.threads,
        )
        result = train_head(text, owner, frames, config=cfg, caption_groups=groups)
        log.info("trained in %.0f s, best step %d", result.seconds, result.best_step)
        if args.save_head:
            result.head.save(RESULTS_DIR / "quality_head.npz")
        aggs["xpool (trained)"] = result.head
        training = {
            **result.summary(),
            "embed_s": embed_s,
            "captions": len(text),
            "unique_captions": n_unique,
        }
    if bundle.manifest.xpool is not None:
        aggs["xpool (bundle head)"] = load_head(bundle.path)
    aggs.update(
        {
            "xpool (identity)": XPoolHead.identity(bundle.embed_dim),
            "softmax": SoftmaxPooling(0.01),
            "max": MaxFrame(),
            "mean": MeanPooling(),
        }
    )
    seeds = [syn.heldout_seed(i) for i in range(args.eval_seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        table = heldout_eval(bundle, aggs, seeds, args.eval_videos, args.frames, Path(tmp))

    rows = [
        [kind, name, int(m["n"]), m["R@1"], m["R@5"], m["R@10"], m["MdR"], m["MnR"]]
        for kind, per in table.items()
        for name, m in per.items()
    ]
    print(
        f"\nheld-out seeds {seeds}, {args.eval_videos} videos each, {args.frames} frames; bundle {bundle.name} "
        f"({bundle.fingerprint[:12]}); "
        + (
            f"head {args.head}"
            if args.head
            else f"head trained on seeds {args.train_seeds} x {args.train_videos} videos"
        )
    )
    print_table(["queries", "aggregation", "n", "R@1", "R@5", "R@10", "MdR", "MnR"], rows)
    path = write_json(
        "quality",
        {
            "args": vars(args),
            "bundle": {"name": bundle.name, "fingerprint": bundle.fingerprint},
            "training": training,
            "results": table,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
