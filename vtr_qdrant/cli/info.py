"""``vtr-qdrant info``: describe a model bundle and/or a collection."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_target_args, open_client, print_json

__all__ = ["add"]


def _cmd(args: argparse.Namespace) -> int:
    from ..model.bundle import resolve_bundle
    from ..model.runtime import available_providers

    out: dict[str, Any] = {"onnxruntime_providers": available_providers()}
    if args.bundle:
        b = resolve_bundle(args.bundle)
        out["bundle"] = {"path": str(b.path), **b.manifest.model_dump(mode="json", exclude={"files"})}
    if args.collection:
        from ..collection import VideoCollection

        with open_client(args) as client:
            out["collection"] = VideoCollection(client, args.collection, args.bundle, create=False).info()
    print_json(out)
    return 0


def add(sub: Any) -> None:
    """Register ``vtr-qdrant info``."""
    p = sub.add_parser("info", help="describe a model bundle and/or a collection")
    add_target_args(p, collection_required=False)
    p.set_defaults(func=_cmd)
