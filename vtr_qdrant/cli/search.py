"""``vtr-qdrant search``: search a collection by text."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_target_args, open_client, print_json

__all__ = ["add"]


def _cmd(args: argparse.Namespace) -> int:
    from ..collection import VideoCollection

    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle, create=False)
        hits = vc.search(args.text, limit=args.limit, candidates=args.candidates, aggregation=args.aggregation, rescore=args.rescore)
    if args.json:
        print_json([h.model_dump(exclude={"moment": {"timestamps", "weights"}}) for h in hits])
        return 0
    if not hits:
        print("no results")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:3d}. {h.video_id:<28} score {h.score:.4f}   moment {h.moment.start:6.2f}-{h.moment.end:6.2f} s  {h.payload.get('uri') or ''}")
    return 0


def add(sub: Any) -> None:
    """Register ``vtr-qdrant search``."""
    p = sub.add_parser("search", help="search a collection by text")
    p.add_argument("text", help="the query text")
    add_target_args(p)
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--candidates", type=int, default=None, help="stage-1 candidates K (default 100)")
    p.add_argument("--aggregation", default=None, help="mean | max | topk | softmax | xpool (the bundle's trained head) | xpool-identity")
    p.add_argument("--rescore", action="store_true", help="rescore stage 1 with MaxSim over frames")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.set_defaults(func=_cmd)
