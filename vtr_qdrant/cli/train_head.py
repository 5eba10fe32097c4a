"""``vtr-qdrant train-head``: train an X-Pool head on a collection (needs the ``export`` extra: torch, and says so when missing)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_target_args, open_client

__all__ = ["add"]

_TRAIN_FLAGS: list[tuple[str, type, str]] = [
    ("num_heads", int, "attention heads (1)"),
    ("dropout", float, "dropout on the residual linear branch (0.3, as in the paper)"),
    ("batch_size", int, "videos per step (64)"),
    ("max_steps", int, "maximum optimisation steps (1500)"),
    ("lr", float, "peak AdamW learning rate (1e-3)"),
    ("weight_decay", float, "decoupled weight decay toward the identity initialisation (0.01)"),
    ("trainable", str, "parameters that learn: all, attention (q/k + LN1), scale or adaptive (all)"),
    ("learn_attention_scale", bool, "learn a scalar on the attention logits, folded into q_proj (off)"),
    ("adaptive_scale", bool, "learn the query-adaptive attention scale log s(t) = w.t + b (off)"),
    ("warmup_steps", int, "linear warm-up steps before the cosine decay (50)"),
    ("val_fraction", float, "share of the videos held out for early stopping (0.1)"),
    ("eval_every", int, "steps between validation evaluations (50)"),
    ("patience", int, "evaluations without improvement before stopping (6)"),
    ("seed", int, "random seed (0)"),
    ("threads", int, "torch threads (torch's default)"),
]
_TRAIN_FIELDS = [f for f, _, _ in _TRAIN_FLAGS]


def _cmd(args: argparse.Namespace) -> int:
    from .._optional import require
    from ..collection import VideoCollection
    from ..errors import ConfigError
    from ..eval.queries import read_captions

    require("torch", "export", purpose="training the X-Pool head")
    from onnx_export.train_head import HeadTrainConfig, train_from_collection, write_head_bundle

    captions = read_captions(args.captions)
    # one source of defaults: HeadTrainConfig; the CLI passes only what was given
    given = {field: getattr(args, field) for field in _TRAIN_FIELDS if getattr(args, field) is not None}
    cfg = HeadTrainConfig(**given)
    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle, create=False)
        if vc.bundle is None:
            raise ConfigError("train-head needs the collection's model bundle: pass --bundle")
        result = train_from_collection(vc, captions, cfg)
        bundle = write_head_bundle(
            result,
            vc.bundle,
            args.out,
            name=args.name,
            onnx=args.onnx,
            overwrite=args.overwrite,
            recipe={"collection": args.collection, "captions": str(args.captions)},
        )
    v0, v1 = result.val_identity, result.val_best
    print(
        f"trained on {result.train_videos} videos ({result.val_videos} for validation) in {result.seconds:.1f} s; "
        f"best step {result.best_step}\n"
        f"validation R@1/R@5/R@10: identity head {v0['R@1']:.3f}/{v0['R@5']:.3f}/{v0['R@10']:.3f} -> "
        f"trained {v1['R@1']:.3f}/{v1['R@5']:.3f}/{v1['R@10']:.3f}\n"
        f"wrote bundle {bundle.name!r} to {bundle.path} (head: {bundle.manifest.xpool.file if bundle.manifest.xpool else '-'})"
    )
    return 0


def add(sub: Any) -> None:
    """Register ``vtr-qdrant train-head``."""
    p = sub.add_parser(
        "train-head",
        help="train an X-Pool head on a collection's frames and captions (needs the export extra: torch)",
        description='Captions: JSON lines {"video_id": ..., "caption": ...}. Writes a new bundle folder: '
        "the collection bundle's towers plus the trained head (xpool.npz) and train_report.json.",
    )
    add_target_args(p)
    p.add_argument("--captions", required=True, help="JSON lines file of {video_id, caption}")
    p.add_argument("--out", required=True, help="new bundle folder to write (towers copied + head)")
    p.add_argument("--name", help="name of the new bundle (default '<bundle>+xpool')")
    p.add_argument(
        "--onnx", action="store_true", help="also export the head's similarity graph to xpool.onnx"
    )
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    g = p.add_argument_group("training (defaults: onnx_export.train_head.HeadTrainConfig)")
    for field, kind, text in _TRAIN_FLAGS:
        if kind is bool:
            g.add_argument(
                f"--{field.replace('_', '-')}", dest=field, action="store_true", default=None, help=text
            )
        else:
            g.add_argument(f"--{field.replace('_', '-')}", dest=field, type=kind, default=None, help=text)
    p.set_defaults(func=_cmd)
