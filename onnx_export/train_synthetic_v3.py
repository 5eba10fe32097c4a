"""Train ``synthetic-world/v3``: v1's image tower, a fine-tuned text tower and a query-adaptive X-Pool head.

Usage::

    python -m onnx_export.train_synthetic_v3                      # writes vtr_qdrant/models/synthetic-world__v3
    python -m onnx_export.train_synthetic_v3 --out DIR --steps 300 --train-videos 200

Why a v3. ``synthetic-world/v2`` adds a query-adaptive head (``log s(t) = w · t + b`` on the
attention logits, the paper's head otherwise) to v1's frozen towers. It ranks scene captions as well
as the best fixed aggregator, but whole-video captions 0.05 below mean pooling on held-out worlds:
v1's text tower embeds a caption naming two scenes much like a caption naming one, so the head
cannot tell them apart and attends sharply where it should attend flatly. The paper trains the head
*with* the towers; v3 does that for the text tower (the image tower stays v1's, byte for byte, so
frame embeddings are unchanged).

Recipe (:func:`onnx_export.train_joint.train_text_and_head`), deterministic for ``--seed``:

1. v1's text tower is rebuilt in torch from ``text.onnx`` and checked against the graph
   (:func:`onnx_export.text_tower.text_model_from_bundle`).
2. Training worlds (training seeds only) are rendered at the 12 sampled timestamps and encoded by v1's
   image tower; captions are every paraphrase of every scene (positive: the videos with that scene)
   and the whole-video caption, repeated ``--video-caption-weight`` times (positive: the videos with
   that scene sequence).
3. The text tower (lr ``--text-lr``) and the head's query-adaptive scale (lr ``--lr``; the rest of
   the head stays at the paper's identity initialisation) learn together with multi-positive InfoNCE
   through the head; the best validation step (scene R@1 + whole-video R@1 on a split of the
   training videos) is kept.
4. The text tower is exported and checked against torch (cosine >= 0.9999), the head is written as
   ``xpool.npz`` (format 2), and the manifest records this recipe.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from vtr_qdrant.model.bundle import BUILTIN_MODELS_DIR, resolve_bundle
from vtr_qdrant.search.resolve import towers_fingerprint

from .head_config import HeadTrainConfig
from .head_output import write_head_bundle
from .synthetic_model import build_model_from_recipe
from .text_tower import text_model_from_bundle, write_text_bundle
from .train_joint import train_text_and_head
from .train_synthetic_head import synthetic_training_parser, training_captions

__all__ = ["NAME", "DEFAULT_OUT", "TRAIN_SEEDS", "main"]

log = logging.getLogger("onnx_export.train_synthetic_v3")

NAME = "synthetic-world/v3"
DEFAULT_OUT = BUILTIN_MODELS_DIR / "synthetic-world__v3"
TRAIN_SEEDS = (301, 302, 303, 304, 305, 306)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = synthetic_training_parser(__doc__ or "", NAME, DEFAULT_OUT, TRAIN_SEEDS, 0.03)
    ap.add_argument("--text-lr", type=float, default=3e-4, help="the text tower's peak learning rate")
    ap.add_argument("--eval-every", type=int, default=100)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    source = resolve_bundle(args.bundle)
    recipe = dict(source.manifest.source.recipe)
    model = text_model_from_bundle(source, build_model_from_recipe(recipe["architecture"]))
    frames, texts, owner, groups = training_captions(
        source, args.train_seeds, args.train_videos, video_caption_weight=args.video_caption_weight
    )
    tok = source.tokenizer()
    data_s = time.perf_counter() - t0
    log.info("training data: %s frames, %d captions in %.0f s", frames.shape, len(texts), data_s)
    cfg = HeadTrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=0.0, trainable="adaptive",
        adaptive_scale=True, seed=args.seed, threads=args.threads, eval_every=args.eval_every, patience=10_000,
    )
    result, model = train_text_and_head(
        model, tok.tokenize(texts), owner, frames, caption_groups=groups, caption_kinds=[g[0] for g in groups],
        config=cfg, text_lr=args.text_lr,
    )
    command = "python -m onnx_export.train_synthetic_v3 " + " ".join(sys.argv[1:] if argv is None else argv)
    towers_recipe = {
        **{k: v for k, v in recipe.items() if k not in ("export", "parity", "xpool")},
        "text_finetune": {
            "script": "onnx_export.train_synthetic_v3",
            "command": command.strip(),
            "base_bundle": source.name,
            "base_fingerprint": towers_fingerprint(source.manifest),
            "image_tower": "the base bundle's, byte for byte (frozen)",
            "train_seeds": list(args.train_seeds),
            "train_videos_per_world": args.train_videos,
            "video_caption_weight": args.video_caption_weight,
            "text_lr": args.text_lr,
            "best_step": result.best_step,
            "val_start": result.val_identity,
            "val_best": result.val_best,
            "seconds": round(result.seconds, 1),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        towers = write_text_bundle(model, source, Path(tmp) / "towers", name=args.name, recipe=towers_recipe)
        head_recipe = {"script": "onnx_export.train_synthetic_v3", "trained_with_text_tower": True,
                       "train_seeds": list(args.train_seeds), "captions": len(texts), "command": command.strip()}
        out = write_head_bundle(result, towers, args.out, name=args.name, recipe=head_recipe, overwrite=args.overwrite)
    v0, v1 = result.val_identity, result.val_best
    print(
        f"trained in {result.seconds:.0f} s (+{data_s:.0f} s data; best step {result.best_step}); validation "
        f"scene R@1 {v0.get('scene_R@1', 0):.3f} -> {v1.get('scene_R@1', 0):.3f}, whole-video R@1 "
        f"{v0.get('video_R@1', 0):.3f} -> {v1.get('video_R@1', 0):.3f}; wrote {out.name} to {out.path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
