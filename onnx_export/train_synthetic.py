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

log = logging.getLogger("onnx_export.train_synthetic")

NAME = "synthetic-world/v1"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "vtr_qdrant" / "models" / "synthetic-world__v1"
NUM_FRAMES = 12
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

#: The architecture (open_clip ``CLIP(embed_dim, vision_cfg, text_cfg)``); vocab_size is filled in
#: from the learnt merges file.
ARCH: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 8,
        "width": 96,
        "layers": 3,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {"context_length": 40, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}
#: Alternative preset: a small ModifiedResNet image tower (open_clip's RN family). Measured here it
#: was ~3x slower per step than the ViT preset on a shared 2-core CPU and no better after 50 steps.
ARCH_RN: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
    "text_cfg": ARCH["text_cfg"],
}
ARCHS = {"vit": ARCH, "rn": ARCH_RN}
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


def _aggregators() -> dict[str, Any]:
    from vtr_qdrant.search.aggregation import MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames

    return {"mean": MeanPooling(), "max": MaxFrame(), "topk": TopKFrames(3), "softmax": SoftmaxPooling(0.01)}


# -------------------------------------------------------------------------------------- vocabulary


def caption_corpus(world: syn.World) -> list[str]:
    """Every scene caption variant of the grammar plus the training world's whole-video captions."""
    corpus: list[str] = []
    for shape in syn.SHAPES:
        for colour in syn.COLOURS:
            for bg in syn.COLOURS:
                if bg == colour:
                    continue
                for motion in syn.MOTIONS:
                    corpus.extend(syn.caption_variants(shape, colour, bg, motion))
    corpus.extend(v.caption for v in world.videos)
    return corpus


# ------------------------------------------------------------------------------------------ model


def build_model(vocab_size: int, arch: dict[str, Any] = ARCH) -> Any:
    """The custom open_clip ``CLIP`` of :data:`ARCH` with ``vocab_size`` tokens (random init)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    vcfg = dict(arch["vision_cfg"])
    if isinstance(vcfg.get("layers"), list):
        vcfg["layers"] = tuple(vcfg["layers"])  # a tuple selects open_clip's ModifiedResNet
    vision = CLIPVisionCfg(**vcfg)
    text = CLIPTextCfg(**arch["text_cfg"], vocab_size=vocab_size)
    return open_clip.CLIP(arch["embed_dim"], vision, text)


class _Sampler:
    """Draws training batches (rendered frames + caption ids) from a training world."""

    def __init__(self, world: syn.World, tokenizer: Any, image_size: int, rng: np.random.Generator) -> None:
        self.world = world
        self.tok = tokenizer
        self.size = image_size
        self.rng = rng
        self.scene_index = [(vi, si) for vi, v in enumerate(world.videos) for si in range(len(v.scenes))]
        keys = sorted({s.key for v in world.videos for s in v.scenes})
        self.key_id = {k: i for i, k in enumerate(keys)}
        seqs = sorted({v.keys for v in world.videos})
        self.seq_id = {k: i for i, k in enumerate(seqs)}
        # Render at the model's size with 2x more supersampling: equal to rendering at the video
        # size (2x the model's) and box-downscaling, which is what the decode path does.
        self.supersample = max(1, round(2 * world.size / image_size))

    def _augment(self, frames: np.ndarray) -> np.ndarray:
        # colour jitter and noise stand in for H.264 / yuv420p / scaler differences at query time
        x = frames.astype(np.float32)
        x += self.rng.normal(0.0, 4.0, size=(len(x), 1, 1, 3)).astype(np.float32)
        x += self.rng.normal(0.0, 3.0, size=x.shape).astype(np.float32)
        return np.clip(x, 0, 255)

    def scenes(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, S, S, 3) float32 frames, (n, L) int64 caption ids, (n,) int64 scene-key ids."""
        picks = self.rng.integers(len(self.scene_index), size=n)
        frames = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        texts, keys = [], np.empty(n, dtype=np.int64)
        for i, p in enumerate(picks):
            vi, si = self.scene_index[int(p)]
            video = self.world.videos[vi]
            scene = video.scenes[si]
            t = self.rng.uniform(scene.start, scene.end)
            frames[i] = syn.render_video_frames(video, self.size, [t], supersample=self.supersample)[0][0]
            variants = syn.caption_variants(scene.shape, scene.colour, scene.background, scene.motion)
            texts.append(variants[int(self.rng.integers(len(variants)))])
            keys[i] = self.key_id[scene.key]
        return self._augment(frames), self.tok.tokenize(texts), keys

    def videos(self, n: int, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, F, S, S, 3) float32 frames, (n, L) int64 caption ids, (n,) int64 scene-sequence ids."""
        picks = self.rng.choice(len(self.world.videos), size=n, replace=False)
        frames = np.empty((n, num_frames, self.size, self.size, 3), dtype=np.uint8)
        texts, keys = [], np.empty(n, dtype=np.int64)
        for i, p in enumerate(picks):
            video = self.world.videos[int(p)]
            seg = video.duration / num_frames
            ts = (
                syn.uniform_timestamps(video.duration, num_frames)
                + self.rng.uniform(-0.4, 0.4, num_frames) * seg
            )
            frames[i] = syn.render_video_frames(video, self.size, ts, supersample=self.supersample)[0]
            texts.append(video.caption)
            keys[i] = self.seq_id[video.keys]
        x = self._augment(frames.reshape(n * num_frames, self.size, self.size, 3))
        return x.reshape(frames.shape), self.tok.tokenize(texts), keys


class _KeyProbe:
    """Top-1 accuracy of naming a scene's (shape, colour, background) from one frame, over all keys."""

    def __init__(self, world: syn.World, tokenizer: Any, size: int, supersample: int) -> None:
        self.keys = [(s, c, b) for s in syn.SHAPES for c in syn.COLOURS for b in syn.COLOURS if c != b]
        self.ids = tokenizer.tokenize([syn.scene_caption(*k, "standing still") for k in self.keys])
        frames, labels = [], []
        for v in world.videos:
            for sc in v.scenes:
                frames.append(syn.render_video_frames(v, size, [sc.midpoint], supersample=supersample)[0][0])
                labels.append(self.keys.index(sc.key))
        self.frames = np.stack(frames).astype(np.float32)
        self.labels = np.asarray(labels)

    def accuracy(self, model: Any) -> float:
        import torch

        model.eval()
        with torch.no_grad():
            img = model.encode_image(_to_tensor(self.frames))
            txt = encode_text_trimmed(model, torch.from_numpy(self.ids))
            pred = (img @ txt.T).argmax(dim=1).numpy()
        return float(np.mean(pred == self.labels))


def _to_tensor(frames: np.ndarray) -> Any:
    import torch

    mean = np.asarray(MEAN, np.float32) * 255.0
    std = np.asarray(STD, np.float32) * 255.0
    x = (frames - mean) / std
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, -3)))


def encode_text_trimmed(model: Any, ids: Any) -> Any:
    """``model.encode_text(ids)`` computed on the ids up to the longest end-of-text token.

    The text transformer is causal and pools at the end-of-text token, so positions after it never
    influence the result: dropping the trailing padding gives the same embedding (up to float
    rounding) for a fraction of the cost when captions are much shorter than the context.
    """
    from open_clip.transformer import text_global_pool

    length = int(ids.argmax(dim=-1).max().item()) + 1
    ids = ids[:, :length]
    x = model.token_embedding(ids) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, ids, model.text_pool_type)
    return x @ model.text_projection


def _multi_positive_nce(a: Any, b: Any, keys: Any, scale: Any) -> Any:
    """Symmetric InfoNCE where every pair with the same key is a positive (duplicates are not negatives)."""
    import torch

    logits = scale * a @ b.T
    pos = keys[:, None] == keys[None, :]
    neg_inf = torch.finfo(logits.dtype).min
    lse_all_r = torch.logsumexp(logits, dim=1)
    lse_pos_r = torch.logsumexp(logits.masked_fill(~pos, neg_inf), dim=1)
    lse_all_c = torch.logsumexp(logits, dim=0)
    lse_pos_c = torch.logsumexp(logits.masked_fill(~pos, neg_inf), dim=0)
    return 0.5 * ((lse_all_r - lse_pos_r).mean() + (lse_all_c - lse_pos_c).mean())


def train(args: argparse.Namespace, work: Path) -> tuple[Any, Path, dict[str, Any]]:
    """Train the model; returns ``(model, merges_file, recipe)``."""
    import torch
    import torch.nn.functional as F

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

    sampler = _Sampler(world, tok, arch["vision_cfg"]["image_size"], np.random.default_rng([args.seed, 1]))
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
    probe = _KeyProbe(syn.generate_world(val_seed, 60), tok, sampler.size, sampler.supersample)
    history: list[dict[str, float]] = []
    model.train()
    ema: dict[str, float] = {}
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        frames, ids, keys = sampler.scenes(args.batch)
        vframes, vids, vkeys = sampler.videos(args.video_batch, args.video_frames)
        n_v = args.video_batch * args.video_frames
        images = _to_tensor(np.concatenate([frames, vframes.reshape(n_v, *frames.shape[1:])]))
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = torch.cat(
            [
                F.normalize(encode_text_trimmed(model, torch.from_numpy(ids)), dim=-1),
                F.normalize(encode_text_trimmed(model, torch.from_numpy(vids)), dim=-1),
            ]
        )
        scale = model.logit_scale.exp().clamp(max=100.0)
        loss_s = _multi_positive_nce(img[: args.batch], txt[: args.batch], torch.from_numpy(keys), scale)
        pooled = F.normalize(
            img[args.batch :].reshape(args.video_batch, args.video_frames, -1).mean(1), dim=-1
        )
        loss_v = _multi_positive_nce(pooled, txt[args.batch :], torch.from_numpy(vkeys), scale)
        loss = loss_s + args.video_loss_weight * loss_v
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100.0))
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
    recipe = {
        "script": "onnx_export.train_synthetic",
        "seed": args.seed,
        "world": {
            "seed": args.world_seed,
            "n_videos": args.train_videos,
            "generator": "vtr_qdrant.synthetic.generate_world (defaults)",
            "seed_convention": f"training seeds < {syn.HELDOUT_SEED_BASE}; held-out seeds >= it",
        },
        "tokenizer": {"num_merges_requested": args.num_merges, "vocab_size": tok.vocab_size},
        "architecture": {
            "preset": args.arch,
            "builder": "open_clip.CLIP(embed_dim, CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**text_cfg))",
            **arch,
            "text_cfg": {**arch["text_cfg"], "vocab_size": tok.vocab_size},
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
    return model, merges, recipe


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
    arch = {k: recipe["architecture"][k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    text_cfg = {k: v for k, v in arch["text_cfg"].items() if k != "vocab_size"}
    model = build_model(arch["text_cfg"]["vocab_size"], {**arch, "text_cfg": text_cfg})
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


# -------------------------------------------------------------------------------------- evaluation


def evaluate_bundle(
    bundle: Any,
    *,
    seeds: Sequence[int] = (syn.heldout_seed(0),),
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
