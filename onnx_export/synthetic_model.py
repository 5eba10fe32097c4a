"""The synthetic-world CLIP: its architecture presets, training batches and loss (torch, open_clip)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vtr_qdrant import synthetic as syn

__all__ = [
    "MEAN",
    "NUM_FRAMES",
    "STD",
    "ARCH",
    "ARCH_RN",
    "ARCHS",
    "caption_corpus",
    "build_model",
    "build_model_from_recipe",
    "SceneSampler",
    "KeyProbe",
    "to_tensor",
    "encode_text_trimmed",
    "multi_positive_nce",
]

#: Pixel normalisation of the synthetic-world model (recorded in its bundle).
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
#: Frames sampled per video (the X-Pool protocol's 12).
NUM_FRAMES = 12

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


def build_model_from_recipe(architecture: dict[str, Any], **text_overrides: Any) -> Any:
    """The model of a recipe's ``architecture`` record (``embed_dim``, ``vision_cfg``, ``text_cfg`` with
    ``vocab_size``), random init; ``text_overrides`` replace ``text_cfg`` entries."""
    text_cfg = {k: v for k, v in architecture["text_cfg"].items() if k != "vocab_size"} | text_overrides
    arch = {"embed_dim": architecture["embed_dim"], "vision_cfg": architecture["vision_cfg"], "text_cfg": text_cfg}
    return build_model(architecture["text_cfg"]["vocab_size"], arch)


class SceneSampler:
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


class KeyProbe:
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
            img = model.encode_image(to_tensor(self.frames))
            txt = encode_text_trimmed(model, torch.from_numpy(self.ids))
            pred = (img @ txt.T).argmax(dim=1).numpy()
        return float(np.mean(pred == self.labels))


def to_tensor(frames: np.ndarray) -> Any:
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


def multi_positive_nce(a: Any, b: Any, keys: Any, scale: Any) -> Any:
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
