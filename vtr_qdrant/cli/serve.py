"""``vtr-qdrant serve``: the HTTP search API and its web page (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_target_args

__all__ = ["add"]


def _cmd(args: argparse.Namespace) -> int:
    from ..serve.runner import ServeOptions, Target, serve

    if args.edge_path:
        target = Target(edge_path=args.edge_path)
    elif args.qdrant_url:
        target = Target(url=args.qdrant_url)
    else:
        target = Target(qdrant_path=args.qdrant_path)
    options = ServeOptions(args.collection, target, args.bundle, list(args.media_root), args.api_key)
    return serve(options, host=args.host, port=args.port, workers=args.workers)


def add(sub: Any) -> None:
    """Register ``vtr-qdrant serve``."""
    p = sub.add_parser(
        "serve", help="serve a collection over HTTP: search API, video files, thumbnails, a search page",
        description="Serve a collection over HTTP (FastAPI + uvicorn: pip install 'vtr-qdrant[serve]').",
    )
    add_target_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--media-root", nargs="+", action="extend", default=[], metavar="DIR",
                   help="folders whose stored video files may be served (repeatable); without one, no file is served")
    p.add_argument("--api-key", help="require this key in the 'api-key' header (as Qdrant does)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (more than 1 only with --url)")
    p.set_defaults(func=_cmd)
