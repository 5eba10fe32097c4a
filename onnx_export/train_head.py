"""Train an X-Pool head on frozen frame embeddings (torch; the ``export`` extra).

No video is decoded during training: the frames' embeddings come from a collection
(:func:`train_from_collection`, via :class:`vtr_qdrant.eval.corpus.EvalCorpus`) or from arrays
(:func:`train_head`), and the captions' embeddings from the bundle's text tower, each computed once.
Only the head (about 5·D² parameters) and a logit scale are learnt, so a few thousand videos train in
CPU minutes.

Recipe (X-Pool, Gorti et al., CVPR 2022, with the CLIP towers frozen):

- Each step draws B distinct training videos and one of each video's captions. The head pools every
  video once per caption, giving a (B captions, B videos) cosine matrix.
- Loss: symmetric InfoNCE on ``logit_scale * cos``. A caption whose *group* (by default its exact
  text) also belongs to another video of the batch counts that video as a positive too
  (multi-positive InfoNCE: ``-log Σ_pos softmax``), so duplicate captions are not pushed apart.
  The logit scale is learnt in log space from ``logit_scale_init`` and clamped to <= 100 after every
  step, as CLIP does.
- AdamW, linear warm-up then cosine decay; dropout 0.3 on the residual linear branch as in the
  paper; the head starts at the paper's identity initialisation, i.e. at the parameter-free
  text-conditioned pooling. Weight decay pulls toward that initialisation, not toward zero
  (``weight_decay``): Adam moves every weight by about ``lr`` per step whatever the size of its
  gradient, so with frozen towers and a few thousand videos most of the head random-walks away from
  the identity head; on the synthetic world every run without a strong pull (``weight_decay`` of
  order 100 at ``lr`` 1e-3) scored below the identity head on validation after ~50 steps.
- Options measured on the synthetic world (``benchmarks/bench_quality.py``): a learnt scalar on the
  attention logits (``learn_attention_scale``, folded into ``q_proj``), training only part of the
  head (``trainable``), hard-negative batches (``hard_negatives``) and the weight of the
  video-to-text loss term (``v2t_weight``).
- Early stopping on a validation split of the *training* videos (R@1+R@5+R@10 of its captions
  against its videos, scored with the exact numpy head that will be deployed); the best step's
  weights are kept. Test data is never seen.
- Deterministic for a seed (numpy sampling, torch init/dropout, fixed thread count).

The torch module's parameter names are the official checkpoint keys
(``pool_frames.cross_attn.{q,k,v,out}_proj``, ``pool_frames.linear_proj``,
``pool_frames.layer_norm{1,2,3}``), so :meth:`XPoolHead.from_state_dict` reads its state dict as it
reads an official checkpoint.

Outputs (:func:`write_head_bundle`): a NEW bundle folder that copies the source bundle's towers and
tokenizer byte for byte and adds ``xpool.npz`` with an ``xpool`` manifest entry, plus
``train_report.json`` and optionally ``xpool.onnx`` (similarity graph; not referenced by the
manifest). The new bundle's fingerprint differs from the source's (the head is part of the model),
but its towers are unchanged: :func:`vtr_qdrant.search.resolve.towers_fingerprint` of the new bundle
equals the source bundle's fingerprint, which is what a collection built with the source records.

CLI: ``vtr-qdrant train-head --collection C --captions captions.jsonl --out DIR``.

Modules: :mod:`.head_config` (config, result), :mod:`.head_module` (torch head), :mod:`.head_batches`
(split, batches, validation), :mod:`.head_output` (bundle, ONNX); this one runs the training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vtr_qdrant.errors import ConfigError, InvalidInputError
from vtr_qdrant.eval.corpus import EvalCorpus

from .head_batches import hard_batch, nearest_videos, split_videos, validation_metrics
from .head_config import TRAINABLE, HeadTrainConfig, HeadTrainResult
from .head_module import XPoolModule, XPoolTrainModel, multi_positive_nce
from .head_output import HEAD_FILE, ONNX_FILE, REPORT_FILE, export_head_onnx, write_head_bundle

if TYPE_CHECKING:
    from vtr_qdrant.collection import VideoCollection

__all__ = [
    "HeadTrainConfig",
    "HeadTrainResult",
    "XPoolModule",
    "XPoolTrainModel",
    "train_head",
    "train_from_collection",
    "write_head_bundle",
    "export_head_onnx",
    "HEAD_FILE",
    "ONNX_FILE",
    "REPORT_FILE",
]

log = logging.getLogger("onnx_export.train_head")


def train_head(
    text: np.ndarray,
    caption_video: Sequence[int] | np.ndarray,
    frames: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    config: HeadTrainConfig | None = None,
    caption_groups: Sequence[Any] | None = None,
) -> HeadTrainResult:
    """Train an X-Pool head on frozen embeddings.

    Args:
        text: (C, D) float32 caption embeddings (the bundle's text tower, L2-normalised).
        caption_video: (C,) int index of each caption's video in ``frames``.
        frames: (V, F, D) float32 frame embeddings (L2-normalised), zero-padded.
        mask: (V, F) bool, True where a frame exists (None: all).
        config: hyper-parameters (default :class:`HeadTrainConfig`).
        caption_groups: (C,) hashable labels; captions with equal labels are interchangeable (each
            counts the other's videos as positives). Default: the caption index (only the own video
            is positive) — :func:`train_from_collection` passes the caption text.

    Returns:
        :class:`HeadTrainResult` with the best validation step's head.

    Raises:
        InvalidInputError: inconsistent shapes or too few videos.
        ConfigError: a bad configuration.
    """
    cfg = config or HeadTrainConfig()
    cfg.check()
    return _HeadTrainer(text, caption_video, frames, mask, cfg, caption_groups).run()


class _HeadTrainer:
    """One :func:`train_head` run: the checked inputs, the split, the model and its optimiser."""

    def __init__(
        self,
        text: np.ndarray,
        caption_video: Sequence[int] | np.ndarray,
        frames: np.ndarray,
        mask: np.ndarray | None,
        cfg: HeadTrainConfig,
        caption_groups: Sequence[Any] | None,
    ) -> None:
        self.cfg = cfg
        self.text = np.ascontiguousarray(text, dtype=np.float32)
        self.frames = np.ascontiguousarray(frames, dtype=np.float32)
        owner = np.asarray(caption_video, dtype=np.int64)
        if self.frames.ndim != 3 or self.text.ndim != 2 or self.text.shape[1] != self.frames.shape[2]:
            raise InvalidInputError(
                f"need text (C, D) and frames (V, F, D) of one D, got {self.text.shape} and {self.frames.shape}"
            )
        if owner.shape != (self.text.shape[0],) or owner.min(initial=0) < 0 or owner.max(initial=0) >= self.frames.shape[0]:
            raise InvalidInputError("caption_video must give, for each caption, an index into frames")
        self.mask = np.ones(self.frames.shape[:2], bool) if mask is None else np.asarray(mask, dtype=bool)
        if self.mask.shape != self.frames.shape[:2] or not self.mask.any(axis=1).all():
            raise InvalidInputError(f"mask must be (V, F) = {self.frames.shape[:2]} with at least one frame per video")
        labels = list(range(len(owner))) if caption_groups is None else list(caption_groups)
        if len(labels) != len(owner):
            raise InvalidInputError("caption_groups must have one label per caption")
        label_ids: dict[Any, int] = {}
        self.groups = np.array([label_ids.setdefault(g, len(label_ids)) for g in labels], dtype=np.int64)
        n_videos = self.frames.shape[0]
        self.video_caps: list[list[int]] = [[] for _ in range(n_videos)]
        for c, v in enumerate(owner):
            self.video_caps[v].append(c)
        self.video_groups = [{int(self.groups[c]) for c in caps} for caps in self.video_caps]
        captioned = np.array([v for v in range(n_videos) if self.video_caps[v]], dtype=np.int64)
        self.rng = np.random.default_rng(cfg.seed)
        split_train, split_val = split_videos(len(captioned), cfg.val_fraction, self.rng)
        self.train_v, self.val_v = captioned[split_train], captioned[split_val]
        self.val_caps = np.array([c for v in self.val_v for c in self.video_caps[v]], dtype=np.int64)
        self._build_model()

    def _build_model(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = XPoolTrainModel(
            self.frames.shape[2], cfg.num_heads, cfg.dropout, cfg.logit_scale_init, cfg.learn_attention_scale,
            cfg.adaptive_scale,
        )
        allowed = TRAINABLE[cfg.trainable]
        self.head_params: list[tuple[nn.Parameter, torch.Tensor]] = []  # (parameter, its initial value)
        for n, p in self.model.pool_frames.named_parameters():
            if allowed and n not in allowed:
                p.requires_grad_(False)
            else:
                self.head_params.append((p, p.detach().clone()))
        extra = [self.model.logit_scale] + (
            [self.model.attention_log_scale] if self.model.attention_log_scale is not None else []
        )
        groups = [{"params": [p for p, _ in self.head_params] + extra}, *self._extra_param_groups()]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)

    def _extra_param_groups(self) -> list[dict[str, Any]]:
        """More optimiser parameter groups (a subclass that also trains a tower adds it here)."""
        return []

    def _batch_text(self, caps: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings of the batch's captions (fixed here; a tower being trained computes them)."""
        return torch.from_numpy(self.text)[caps]

    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the current weights, scored with the deployed numpy head."""
        return validation_metrics(
            self.model.to_numpy_head(), self.text, self.groups, self.video_groups, self.frames, self.mask,
            self.val_v, self.val_caps,
        )

    def _batches(self) -> Iterator[np.ndarray]:
        """Video batches forever: random, or anchors with their hard negatives."""
        cfg = self.cfg
        batch = min(cfg.batch_size, len(self.train_v))
        order = self.rng.permutation(self.train_v)
        neighbours = nearest_videos(self.frames, self.mask, self.train_v, cfg.hard_negatives) if cfg.hard_negatives > 1 else None
        cursor = 0
        while True:
            if neighbours is not None:
                if cursor >= len(order):
                    order, cursor = self.rng.permutation(self.train_v), 0
                vids, cursor = hard_batch(order, cursor, batch, cfg.hard_negatives, neighbours)
            else:
                if cursor + batch > len(order):
                    order, cursor = self.rng.permutation(self.train_v), 0
                vids = order[cursor : cursor + batch]
                cursor += batch
            yield vids

    def step(self, vids: np.ndarray) -> float:
        """One optimisation step on a batch of videos (one random caption each); returns the loss."""
        cfg, model = self.cfg, self.model
        caps = np.array([self.video_caps[v][int(self.rng.integers(len(self.video_caps[v])))] for v in vids], dtype=np.int64)
        positive = torch.from_numpy(
            np.array([[int(self.groups[c]) in self.video_groups[v] for v in vids] for c in caps], dtype=bool)
        )
        model.train()
        vids_t, caps_t = torch.from_numpy(vids), torch.from_numpy(caps)
        sims = model.similarity(
            self._batch_text(caps_t), torch.from_numpy(self.frames)[vids_t], torch.from_numpy(self.mask)[vids_t]
        )
        loss = multi_positive_nce(model.logit_scale.exp() * sims, positive, cfg.v2t_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        lr_now = float(self.sched.get_last_lr()[0])
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(cfg.max_logit_scale))
            if cfg.weight_decay:
                for p, p0 in self.head_params:  # decoupled decay toward the identity initialisation
                    p.sub_(lr_now * cfg.weight_decay * (p - p0))
        return float(loss.detach())

    def run(self) -> HeadTrainResult:
        """Train with early stopping on validation Rsum; keep the best step's weights."""
        cfg, model = self.cfg, self.model
        t0 = time.perf_counter()
        val_identity = self.evaluate()
        best = (val_identity["Rsum"], 0, _snapshot(model), val_identity)
        history: list[dict[str, Any]] = [
            {"step": 0, "loss": None, "logit_scale": float(model.logit_scale.detach().exp()), "val": val_identity}
        ]
        log.info("identity head: val %s", _fmt(val_identity))
        stale, losses = 0, []
        for step, vids in zip(range(1, cfg.max_steps + 1), self._batches()):
            losses.append(self.step(vids))
            if step % cfg.eval_every and step != cfg.max_steps:
                continue
            model.eval()
            val = self.evaluate()
            entry = {
                "step": step,
                "loss": float(np.mean(losses)),
                "logit_scale": float(model.logit_scale.detach().exp()),
                "attention_scale": _scalar(model.attention_scale()),
                "lr": float(self.sched.get_last_lr()[0]),
                "val": val,
            }
            history.append(entry)
            losses = []
            log.info("step %d loss %.4f scale %.1f val %s", step, entry["loss"], entry["logit_scale"], _fmt(val))
            if val["Rsum"] > best[0] + 1e-9:
                best, stale = (val["Rsum"], step, _snapshot(model), val), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info("early stop at step %d (best step %d)", step, best[1])
                    break
        model.load_state_dict(best[2])
        model.eval()
        return HeadTrainResult(
            head=model.to_numpy_head(),
            config=cfg,
            best_step=best[1],
            val_identity=val_identity,
            val_best=best[3],
            history=history,
            train_videos=len(self.train_v),
            val_videos=len(self.val_v),
            seconds=time.perf_counter() - t0,
            state_dict={**XPoolTrainModel.head_state_dict(best[2]), "logit_scale": best[2]["logit_scale"]},
        )


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _scalar(x: torch.Tensor | None) -> float | None:
    return None if x is None else float(x.detach())


def _fmt(m: dict[str, float]) -> str:
    kinds = "".join(f" {k[:-4]} R@1 {m[k]:.3f}" for k in ("scene_R@1", "video_R@1") if k in m)
    return f"R@1 {m['R@1']:.3f} R@5 {m['R@5']:.3f} R@10 {m['R@10']:.3f} MnR {m['MnR']:.1f}{kinds}"


def train_from_collection(
    collection: VideoCollection,
    captions: Sequence[tuple[str, str]],
    config: HeadTrainConfig | None = None,
) -> HeadTrainResult:
    """Train a head on a collection's stored frames and captions embedded by its bundle.

    Args:
        collection: opened with its bundle (the text tower embeds the captions).
        captions: ``[(video_id, caption), ...]``; captions of videos not in the collection are
            skipped with a warning. Equal caption texts are interchangeable positives.
        config: hyper-parameters.
    """
    if collection.bundle is None:
        raise ConfigError("training a head needs the collection's model bundle (open it with bundle=...)")
    corpus = EvalCorpus.from_collection(collection)
    col = {v: i for i, v in enumerate(corpus.video_ids)}
    kept = [(col[v], c) for v, c in captions if v in col]
    if len(kept) < len(captions):
        log.warning(
            "%d of %d captions name videos not in the collection; skipped",
            len(captions) - len(kept),
            len(captions),
        )
    if not kept:
        raise InvalidInputError("no caption names a video of the collection: check the video ids")
    texts = sorted({c for _, c in kept})
    emb = collection.encode_text(texts)
    index = {t: i for i, t in enumerate(texts)}
    frames, mask = corpus.per_video()
    return train_head(
        emb[[index[c] for _, c in kept]],
        [v for v, _ in kept],
        frames,
        mask,
        config=config,
        caption_groups=[c for _, c in kept],
    )


