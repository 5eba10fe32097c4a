"""``vtr-qdrant`` command line: ``info``, ``search``, ``ingest``, ``demo``.

Each subcommand is a small function over the public API; add a new one by writing
``_add_<name>(subparsers)`` and listing it in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError, VtrError
from .eval import add_eval, add_train_head

__all__ = ["main", "build_parser", "open_client"]

log = logging.getLogger("vtr_qdrant.cli")


@contextmanager
def open_client(args: argparse.Namespace) -> Iterator[Any]:
    """A QdrantClient from ``--qdrant-url`` (API key from $QDRANT_API_KEY) or ``--qdrant-path``, closed on exit.

    An embedded (path) client holds a lock on its folder until closed.
    """
    import warnings

    from qdrant_client import QdrantClient

    if getattr(args, "qdrant_url", None):
        client = QdrantClient(url=args.qdrant_url, api_key=os.environ.get("QDRANT_API_KEY"))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local-mode notices
            client = QdrantClient(path=args.qdrant_path)
    try:
        yield client
    finally:
        client.close()


def _add_target_args(p: argparse.ArgumentParser, *, collection_required: bool = True) -> None:
    g = p.add_argument_group("Qdrant target")
    g.add_argument("--collection", required=collection_required, help="collection name")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--qdrant-path", default="./qdrant_data", help="embedded Qdrant folder (default ./qdrant_data)")
    where.add_argument("--qdrant-url", help="Qdrant server URL, e.g. http://localhost:6333 (API key: $QDRANT_API_KEY)")
    p.add_argument("--bundle", help="model bundle: registry name (synthetic-world/v1) or local-dir:/path")


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---------------------------------------------------------------------------------------- info


def _cmd_info(args: argparse.Namespace) -> int:
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
    _print_json(out)
    return 0


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a model bundle and/or a collection")
    _add_target_args(p, collection_required=False)
    p.set_defaults(func=_cmd_info)


# ---------------------------------------------------------------------------------------- search


def _cmd_search(args: argparse.Namespace) -> int:
    from ..collection import VideoCollection

    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle, create=False)
        hits = vc.search(args.text, limit=args.limit, candidates=args.candidates, aggregation=args.aggregation, rescore=args.rescore)
    if args.json:
        _print_json([h.model_dump(exclude={"moment": {"timestamps", "weights"}}) for h in hits])
        return 0
    if not hits:
        print("no results")
    for rank, h in enumerate(hits, 1):
        print(f"{rank:3d}. {h.video_id:<28} score {h.score:.4f}   moment {h.moment.start:6.2f}-{h.moment.end:6.2f} s  {h.payload.get('uri') or ''}")
    return 0


def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search a collection by text")
    p.add_argument("text", help="the query text")
    _add_target_args(p)
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--candidates", type=int, default=None, help="stage-1 candidates K (default 100)")
    p.add_argument("--aggregation", default=None, help="mean | max | topk | softmax | xpool")
    p.add_argument("--rescore", action="store_true", help="rescore stage 1 with MaxSim over frames")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.set_defaults(func=_cmd_search)


# ---------------------------------------------------------------------------------------- ingest


def _cmd_ingest(args: argparse.Namespace) -> int:
    if args.ray:
        from ray_jobs import cli_ingest

        return int(cli_ingest(args))
    if args.rebuild or args.prune:
        raise ConfigError("--rebuild and --prune need --ray (they are Ray-job features)")
    from ..collection import VideoCollection
    from ..ingest import expand_sources
    from ..video.sampling import SamplingConfig

    uris = expand_sources(args.sources)
    given = {k: v for k, v in dict(num_frames=args.num_frames, fps=args.fps, mode=args.mode, segment_seconds=args.segment_seconds).items() if v is not None}
    # no sampling flags: a new collection gets the defaults, an existing one keeps what it records
    sampling = SamplingConfig(**given) if given else None
    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle or "synthetic-world/v1", sampling=sampling)
        report = vc.add_videos(uris, force=args.force, progress=not args.no_progress, timeout=args.timeout)
    print(report.summary())
    if args.report:
        with open(args.report, "w") as f:
            f.write(report.model_dump_json(indent=2))
    return 0


def _add_ingest(sub: Any) -> None:
    p = sub.add_parser("ingest", help="decode, encode and store video files")
    p.add_argument("sources", nargs="+", help="video files, folders or glob patterns")
    _add_target_args(p)
    p.add_argument("--num-frames", type=int, default=None, help="frames per video (default 12)")
    p.add_argument("--fps", type=float, default=None, help="instead: frames per second (long videos)")
    p.add_argument("--mode", choices=["exact", "fast"], default=None, help="exact (default) or fast")
    p.add_argument("--segment-seconds", type=float, default=None, help="one point per this many seconds")
    p.add_argument("--timeout", type=float, default=120.0, help="per-video decode timeout, seconds")
    p.add_argument("--force", action="store_true", help="re-ingest unchanged files")
    p.add_argument("--report", help="write the ingest report as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ray", action="store_true", help="run as a Ray Data job (python -m ray_jobs)")
    p.add_argument("--job-config", help="with --ray: job config YAML/TOML; flags given here override it")
    p.add_argument("--rebuild", action="store_true", default=None, help="with --ray: new versioned collection, alias swapped at the end")
    p.add_argument("--prune", action="store_true", default=None, help="with --ray: delete stored videos whose source is gone")
    p.set_defaults(func=_cmd_ingest)


# ---------------------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out_dir=args.out, n_videos=args.videos, bundle=args.bundle, progress=not args.no_progress)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="end-to-end demo: generate videos, ingest them into embedded Qdrant, search")
    p.add_argument("--out", default="demo-output", help="working folder (videos, embedded Qdrant)")
    p.add_argument("--videos", type=int, default=40, help="how many synthetic videos")
    p.add_argument("--bundle", default="synthetic-world/v1")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_demo)


_COMMANDS: list[Callable[[Any], None]] = [_add_info, _add_search, _add_ingest, _add_demo, add_eval, add_train_head]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vtr-qdrant`` command."""
    parser = argparse.ArgumentParser(prog="vtr-qdrant", description="Text-to-video retrieval on Qdrant.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vtr-qdrant`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except VtrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
