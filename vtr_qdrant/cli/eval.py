"""``vtr-qdrant eval``: text-to-video retrieval metrics of a collection for a query file (torch-free)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import add_target_args, open_client, print_json

__all__ = ["add"]

_EVAL_DEFAULT_AGGREGATIONS = "mean,softmax,xpool-identity"


def _cmd(args: argparse.Namespace) -> int:
    from ..collection import VideoCollection
    from ..errors import ConfigError
    from ..eval.evaluation import evaluate_collection, format_report
    from ..eval.queries import read_queries
    from ..search.resolve import load_head, resolve_aggregations

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
        aggs = resolve_aggregations(names, vc.dim, head=head, bundle=vc.bundle)
        report = evaluate_collection(
            vc, queries, aggs, modes=modes, candidates=args.candidates, query_chunk=args.query_chunk
        )
    report["collection"] = args.collection
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    if args.json:
        print_json(report)
    else:
        print(
            f"{report['queries']} queries ({report['queries_skipped']} skipped), {report['videos']} videos, "
            f"two-stage K={report['candidates']}"
        )
        print(format_report(report))
    return 0


def add(sub: Any) -> None:
    """Register ``vtr-qdrant eval``."""
    p = sub.add_parser(
        "eval",
        help="text-to-video retrieval metrics (R@1/5/10, MdR, MnR) of a collection for a query file",
        description='Queries: JSON lines {"query": caption, "video_ids": [...]}. Exhaustive mode scores every '
        "query against every video (chunked, bounded memory); two-stage mode runs the production search with "
        "K candidates and reports the recall of its top-10 relative to exhaustive.",
    )
    add_target_args(p)
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
    p.set_defaults(func=_cmd)
