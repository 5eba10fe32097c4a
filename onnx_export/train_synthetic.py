"""Train the small ``synthetic-world/v1`` CLIP on the synthetic world and export it as a bundle.

Usage::

    python -m onnx_export.train_synthetic --out vtr_qdrant/models/synthetic-world__v1
    python -m onnx_export.train_synthetic --out vtr_qdrant/models/synthetic-world__v1 --eval-only

Training (CPU, a few minutes on 2 cores, deterministic for ``--seed``):

1. A training world is drawn from a *training* seed (``vtr_qdrant.synthetic`` refuses held-out
   seeds); frames are rendered in numpy (no mp4 decoding), captions come from the world.
2. A small BPE vocabulary is learnt from every caption the world's grammar can produce
   (:func:`vtr_qdrant.model.bpe.train_bpe_merges`), so the token table stays small.
3. A custom open_clip architecture (:data:`ARCH`) is trained with a symmetric multi-positive
   InfoNCE loss on (frame, scene caption) pairs, where captions naming the same (shape, colour,
   background) are all positives, plus the same loss on (mean of a video's 12 frame embeddings,
   whole-video caption) pairs.
4. The model is exported with :func:`onnx_export.clip.export_model`; ``source.recipe`` in the
   manifest records seeds, steps, final losses, the architecture and this script's name.

Evaluation (``--eval-only``, also run after training) goes through the real query path on held-out
worlds: mp4 files written by :func:`vtr_qdrant.synthetic.make_world` -> :func:`vtr_qdrant.video.sample_frames`
-> the bundle's ``visual.onnx`` / ``text.onnx`` in onnxruntime -> each parameter-free aggregation
-> :func:`vtr_qdrant.synthetic.evaluate_retrieval`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vtr_qdrant import synthetic as syn

from .synthetic_eval import evaluate_bundle, format_table
from .synthetic_model import (
    ARCH,
    ARCH_RN,  # noqa: F401 - public here since wave 1
    ARCHS,
    MEAN,
    NUM_FRAMES,
    STD,
    KeyProbe,
    SceneSampler,
    build_model,
    build_model_from_recipe,
    caption_corpus,
    encode_text_trimmed,
    multi_positive_nce,
    to_tensor,
)

log = logging.getLogger("onnx_export.train_synthetic")

NAME = "synthetic-world/v1"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "vtr_qdrant" / "models" / "synthetic-world__v1"

#: Training hyper-parameters (CLI flags override them; all recorded in the manifest).
DEFAULTS: dict[str, Any] = {
    "arch": "vit",
    "seed": 0,
    "world_seed": 0,
    "train_videos": 4000,
    "steps": 1000,
    "batch": 256,
    "video_batch": 16,
    "video_frames": 8,
    "video_loss_weight": 0.5,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "warmup": 50,
    "num_merges": 400,
}


def train(args: argparse.Namespace, work: Path) -> tuple[Any, Path, dict[str, Any]]:
    """Train the model; returns ``(model, merges_file, recipe)``."""
    import torch

    from vtr_qdrant.model.bpe import train_bpe_merges
    from vtr_qdrant.model.tokenizer import ClipTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    syn.check_training_seed(args.world_seed)
    t0 = time.time()
    world = syn.generate_world(args.world_seed, args.train_videos)
    merges = train_bpe_merges(caption_corpus(world), args.num_merges, work / "bpe_merges.txt.gz")
    arch = ARCHS[args.arch]
    ctx = arch["text_cfg"]["context_length"]
    tok = ClipTokenizer(merges, context_length=ctx)
    longest = max(len(tok.encode(v.caption)) for v in world.videos) + 2
    if longest > ctx:
        log.warning(
            "the longest whole-video caption has %d tokens > context length %d (truncated)", longest, ctx
        )
    model = build_model(tok.vocab_size, arch)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "vocab %d, %d parameters, training world: %d videos", tok.vocab_size, n_params, len(world.videos)
    )

    sampler = SceneSampler(world, tok, arch["vision_cfg"]["image_size"], np.random.default_rng([args.seed, 1]))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * p))

    # Validation on another *training-range* seed (held-out seeds stay unseen until evaluation).
    val_seed = syn.check_training_seed(args.world_seed + 1)
    probe = KeyProbe(syn.generate_world(val_seed, 60), tok, sampler.size, sampler.supersample)
    history: list[dict[str, float]] = []
    model.train()
    ema: dict[str, float] = {}
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss, loss_s, loss_v, scale = _step(model, opt, sampler, args)
        for k, v in (("loss", loss.item()), ("scene", loss_s.item()), ("video", loss_v.item())):
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        if step % 50 == 0 or step == args.steps - 1:
            log.info(
                "step %d/%d loss %.3f (scene %.3f, video %.3f) scale %.1f lr %.2e %.0fs",
                step, args.steps, ema["loss"], ema["scene"], ema["video"], scale.item(), lr_at(step), time.time() - t0,
            )  # fmt: skip
            acc = probe.accuracy(model) if step % 100 == 0 or step == args.steps - 1 else float("nan")
            model.train()
            if not math.isnan(acc):
                log.info("step %d validation frame->key accuracy %.3f", step, acc)
            history.append(
                {"step": step, **{k: round(v, 4) for k, v in ema.items()}, "val_acc": round(acc, 4)}
            )
    model.eval()
    extra = {"ema": ema, "history": history, "val_seed": val_seed, "n_params": n_params, "t0": t0}
    return model, merges, _recipe(args, arch, tok.vocab_size, model, extra)


def _step(model: Any, opt: Any, sampler: SceneSampler, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """One step on a batch of scenes and a batch of whole videos: (loss, scene loss, video loss, logit scale)."""
    import torch
    import torch.nn.functional as F

    frames, ids, keys = sampler.scenes(args.batch)
    vframes, vids, vkeys = sampler.videos(args.video_batch, args.video_frames)
    n_v = args.video_batch * args.video_frames
    images = to_tensor(np.concatenate([frames, vframes.reshape(n_v, *frames.shape[1:])]))
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = torch.cat(
        [
            F.normalize(encode_text_trimmed(model, torch.from_numpy(ids)), dim=-1),
            F.normalize(encode_text_trimmed(model, torch.from_numpy(vids)), dim=-1),
        ]
    )
    scale = model.logit_scale.exp().clamp(max=100.0)
    loss_s = multi_positive_nce(img[: args.batch], txt[: args.batch], torch.from_numpy(keys), scale)
    pooled = F.normalize(
        img[args.batch :].reshape(args.video_batch, args.video_frames, -1).mean(1), dim=-1
    )
    loss_v = multi_positive_nce(pooled, txt[args.batch :], torch.from_numpy(vkeys), scale)
    loss = loss_s + args.video_loss_weight * loss_v
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100.0))
    return loss, loss_s, loss_v, scale


def _recipe(args: argparse.Namespace, arch: dict[str, Any], vocab_size: int, model: Any, run: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records about the training run (``source.recipe``)."""
    ema, history, val_seed, n_params, t0 = (run[k] for k in ("ema", "history", "val_seed", "n_params", "t0"))
    return {
        "script": "onnx_export.train_synthetic",
        "seed": args.seed,
        "world": {
            "seed": args.world_seed,
            "n_videos": args.train_videos,
            "generator": "vtr_qdrant.synthetic.generate_world (defaults)",
            "seed_convention": f"training seeds < {syn.HELDOUT_SEED_BASE}; held-out seeds >= it",
        },
        "tokenizer": {"num_merges_requested": args.num_merges, "vocab_size": vocab_size},
        "architecture": {
            "preset": args.arch,
            "builder": "open_clip.CLIP(embed_dim, CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**text_cfg))",
            **arch,
            "text_cfg": {**arch["text_cfg"], "vocab_size": vocab_size},
        },
        "parameters": n_params,
        "training": {
            "steps": args.steps,
            "batch_scenes": args.batch,
            "batch_videos": args.video_batch,
            "frames_per_video": args.video_frames,
            "validation_world_seed": val_seed,
            "validation": "frame -> scene-key top-1 accuracy over all keys (canonical captions)",
            "video_loss_weight": args.video_loss_weight,
            "optimizer": "AdamW",
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup": args.warmup,
            "schedule": "cosine",
            "loss": "symmetric multi-positive InfoNCE (same scene key = positive), learnable logit scale <= 100",
            "torch_threads": args.threads,
            "final": {k: round(v, 4) for k, v in ema.items()},
            "logit_scale": round(float(model.logit_scale.exp().item()), 3),
            "history": history,
            "seconds": round(time.time() - t0, 1),
        },
    }


# ------------------------------------------------------------------------------------------ export


def save_checkpoint(path: Path, model: Any, merges: Path, recipe: dict[str, Any]) -> None:
    """Save weights, merges file and recipe, so an export can be redone without retraining."""
    import torch

    torch.save({"state_dict": model.state_dict(), "merges": merges.read_bytes(), "recipe": recipe}, path)
    log.info("saved checkpoint %s", path)


def load_checkpoint(path: Path, work: Path) -> tuple[Any, Path, dict[str, Any]]:
    """Inverse of :func:`save_checkpoint`: ``(model, merges_file, recipe)``."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    recipe = ckpt["recipe"]
    model = build_model_from_recipe(recipe["architecture"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    merges = work / "bpe_merges.txt.gz"
    merges.write_bytes(ckpt["merges"])
    return model, merges, recipe


def export(model: Any, merges: Path, recipe: dict[str, Any], out: Path) -> Any:
    """Export the trained model into the bundle folder ``out`` with the project's exporter."""
    from onnx_export.clip import export_model
    from vtr_qdrant.model.manifest import ModelSource

    source = ModelSource(
        framework="open_clip", architecture="synthetic-world-v1 (custom CLIP)", pretrained=None, recipe=recipe
    )
    return export_model(
        model,
        out_dir=out,
        name=NAME,
        image_size=ARCH["vision_cfg"]["image_size"],
        mean=MEAN,
        std=STD,
        context_length=ARCH["text_cfg"]["context_length"],
        merges_file=merges,
        source=source,
        overwrite=True,
    )


# ------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m onnx_export.train_synthetic", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder to write (or evaluate)")
    p.add_argument("--eval-only", action="store_true", help="evaluate the bundle at --out, do not train")
    p.add_argument("--eval-seeds", type=int, default=2, help="held-out worlds to evaluate on")
    p.add_argument("--eval-videos", type=int, default=100, help="videos per held-out world")
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    p.add_argument("--save-checkpoint", type=Path, help="also save the trained weights here (a .pt file)")
    p.add_argument(
        "--from-checkpoint", type=Path, help="export a checkpoint saved earlier instead of training"
    )
    for k, v in DEFAULTS.items():
        choices = sorted(ARCHS) if k == "arch" else None
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v, choices=choices)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    logging.getLogger("onnxscript").setLevel(logging.WARNING)
    args = parse_args(argv)
    if not args.eval_only:
        with tempfile.TemporaryDirectory() as tmp:
            if args.from_checkpoint:
                model, merges, recipe = load_checkpoint(args.from_checkpoint, Path(tmp))
            else:
                model, merges, recipe = train(args, Path(tmp))
                if args.save_checkpoint:
                    save_checkpoint(args.save_checkpoint, model, merges, recipe)
            report = export(model, merges, recipe, args.out)
            log.info("exported:\n%s", report.format())
    seeds = [syn.heldout_seed(i) for i in range(args.eval_seeds)]
    results = evaluate_bundle(
        f"local-dir:{args.out}", seeds=seeds, n_videos=args.eval_videos, threads=args.threads
    )
    print(f"held-out seeds {seeds}, {args.eval_videos} videos each, {NUM_FRAMES} frames per video")
    print(format_table(results))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
