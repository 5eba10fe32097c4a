"""What every command shares: the Qdrant target flags, opening the client, printing JSON."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["open_client", "add_target_args", "print_json"]


@contextmanager
def open_client(args: argparse.Namespace) -> Iterator[Any]:
    """A QdrantClient from ``--qdrant-url`` (API key from $QDRANT_API_KEY) or ``--qdrant-path``, or a
    Qdrant Edge back end from ``--edge-path``; closed on exit.

    An embedded (path) client holds a lock on its folder until closed.
    """
    from qdrant_client import QdrantClient

    from ..store.qdrant import open_local_client

    if getattr(args, "edge_path", None):
        from ..store.edge import EdgeBackend

        edge = EdgeBackend(args.edge_path)
        try:
            yield edge
        finally:
            edge.close()
        return
    if getattr(args, "qdrant_url", None):
        client = QdrantClient(url=args.qdrant_url, api_key=os.environ.get("QDRANT_API_KEY"))
    else:
        client = open_local_client(args.qdrant_path)
    try:
        yield client
    finally:
        client.close()


def add_target_args(p: argparse.ArgumentParser, *, collection_required: bool = True) -> None:
    """Add --collection, --qdrant-path | --qdrant-url | --edge-path and --bundle."""
    g = p.add_argument_group("Qdrant target")
    g.add_argument("--collection", required=collection_required, help="collection name")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--qdrant-path", default="./qdrant_data", help="embedded Qdrant folder (default ./qdrant_data)")
    where.add_argument("--qdrant-url", "--url", help="Qdrant server URL, e.g. http://localhost:6333 (API key: $QDRANT_API_KEY)")
    where.add_argument("--edge-path", help="Qdrant Edge folder (embedded, several collections; needs the edge extra)")
    p.add_argument("--bundle", help="model bundle: registry name (synthetic-world/v3) or local-dir:/path")


def print_json(obj: Any) -> None:
    """Print as indented JSON (non-JSON values as strings)."""
    print(json.dumps(obj, indent=2, default=str))
