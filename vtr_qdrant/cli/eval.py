"""``vtr-qdrant eval`` and ``vtr-qdrant train-head``: retrieval evaluation and X-Pool head training.

``eval`` is torch-free; ``train-head`` needs the ``export`` extra (torch) and says so when missing.

``vtr_qdrant.cli`` lists :func:`add_eval` and :func:`add_train_head` in its ``_COMMANDS``; its helpers
are imported inside the functions here (so either module may be imported first).
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

__all__ = ["add_eval", "add_train_head"]

log = logging.getLogger("vtr_qdrant.cli")

_EVAL_DEFAULT_AGGREGATIONS = "mean,softmax,xpool-identity"


# ---------------------------------------------------------------------------------------- eval


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..collection import VideoCollection
    from ..errors import ConfigError
    from ..eval.evaluation import (
        evaluate_collection,
        format_report,
        load_head,
        read_queries,
        resolve_aggregations,
    )
    from .main import _print_json, open_client

    queries = read_queries(args.queries)
    names = [n.strip() for n in args.aggregation.split(",") if n.strip()]
    modes = {"exhaustive": ["exhaustive"], "two-stage": ["two_stage"], "both": ["exhaustive", "two_stage"]}[
        args.mode
    ]
    if args.candidates < 1:
        raise ConfigError(f"--candidates must be >= 1, got {args.candidates}")
    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle, create=False)
        head = load_head(args.head, expected_fingerprint=vc.fingerprint) if args.head else None
        if head is not None and "xpool" not in names:
            names.append("xpool")
        aggs = resolve_aggregations(names, vc.dim, head=head, collection=vc)
        report = evaluate_collection(
            vc, queries, aggs, modes=modes, candidates=args.candidates, query_chunk=args.query_chunk
        )
    report["collection"] = args.collection
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if args.json:
        _print_json(report)
    else:
        print(
            f"{report['queries']} queries ({report['queries_skipped']} skipped), {report['videos']} videos, "
            f"two-stage K={report['candidates']}"
        )
        print(format_report(report))
    return 0


def add_eval(sub: Any) -> None:
    """Register ``vtr-qdrant eval``."""
    from .main import _add_target_args

    p = sub.add_parser(
        "eval",
        help="text-to-video retrieval metrics (R@1/5/10, MdR, MnR) of a collection for a query file",
        description='Queries: JSON lines {"query": caption, "video_ids": [...]}. Exhaustive mode scores every '
        "query against every video (chunked, bounded memory); two-stage mode runs the production search with "
        "K candidates and reports the recall of its top-10 relative to exhaustive.",
    )
    _add_target_args(p)
    p.add_argument("--queries", required=True, help="JSON lines file of {query, video_ids}")
    p.add_argument(
        "--aggregation",
        default=_EVAL_DEFAULT_AGGREGATIONS,
        help="comma-separated: mean, max, topk, softmax, xpool (trained head), xpool-identity "
        f"(default {_EVAL_DEFAULT_AGGREGATIONS}, plus xpool when --head is given)",
    )
    p.add_argument("--head", help="X-Pool head: an .npz from XPoolHead.save or a bundle folder with a head")
    p.add_argument("--mode", choices=["exhaustive", "two-stage", "both"], default="both")
    p.add_argument(
        "--candidates", type=int, default=100, help="stage-1 candidates K for two-stage (default 100)"
    )
    p.add_argument("--query-chunk", type=int, default=256, help="queries per exhaustive block")
    p.add_argument("--out", help="also write the report as JSON here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_eval)


# ---------------------------------------------------------------------------------------- train-head

_TRAIN_FLAGS: list[tuple[str, type, str]] = [
    ("num_heads", int, "attention heads (1)"),
    ("dropout", float, "dropout on the residual linear branch (0.3, as in the paper)"),
    ("batch_size", int, "videos per step (64)"),
    ("max_steps", int, "maximum optimisation steps (1500)"),
    ("lr", float, "peak AdamW learning rate (1e-3)"),
    ("weight_decay", float, "decoupled weight decay toward the identity initialisation (0.01)"),
    ("trainable", str, "parameters that learn: all, attention (q/k + LN1) or scale (all)"),
    ("learn_attention_scale", bool, "learn a scalar on the attention logits, folded into q_proj (off)"),
    ("warmup_steps", int, "linear warm-up steps before the cosine decay (50)"),
    ("val_fraction", float, "share of the videos held out for early stopping (0.1)"),
    ("eval_every", int, "steps between validation evaluations (50)"),
    ("patience", int, "evaluations without improvement before stopping (6)"),
    ("seed", int, "random seed (0)"),
    ("threads", int, "torch threads (torch's default)"),
]
_TRAIN_FIELDS = [f for f, _, _ in _TRAIN_FLAGS]


def _cmd_train_head(args: argparse.Namespace) -> int:
    from .._optional import require
    from ..collection import VideoCollection
    from ..errors import ConfigError
    from ..eval.evaluation import read_captions
    from .main import open_client

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


def add_train_head(sub: Any) -> None:
    """Register ``vtr-qdrant train-head``."""
    from .main import _add_target_args

    p = sub.add_parser(
        "train-head",
        help="train an X-Pool head on a collection's frames and captions (needs the export extra: torch)",
        description='Captions: JSON lines {"video_id": ..., "caption": ...}. Writes a new bundle folder: '
        "the collection bundle's towers plus the trained head (xpool.npz) and train_report.json.",
    )
    _add_target_args(p)
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
    p.set_defaults(func=_cmd_train_head)
