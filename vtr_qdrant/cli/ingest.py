"""``vtr-qdrant ingest``: decode, encode and store video files (in-process, or as a Ray job with ``--ray``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ..model.bundle import DEFAULT_BUNDLE
from ..video.ffmpeg import DEFAULT_DECODE_TIMEOUT
from .common import add_target_args, open_client

__all__ = ["add"]


def _cmd(args: argparse.Namespace) -> int:
    if args.ray:
        from ray_jobs import cli_ingest

        return int(cli_ingest(args))
    if args.rebuild or args.prune or args.verify:
        raise ConfigError("--rebuild, --prune and --verify need --ray (they are Ray-job features; "
                          "in-process, run `vtr-qdrant verify` after the ingest)")
    from ..collection import VideoCollection
    from ..ingest import expand_sources
    from ..video.sampling import SamplingConfig

    uris = expand_sources(args.sources)
    given = {k: v for k, v in dict(num_frames=args.num_frames, fps=args.fps, mode=args.mode, segment_seconds=args.segment_seconds).items() if v is not None}
    # no sampling flags: a new collection gets the defaults, an existing one keeps what it records
    sampling = SamplingConfig(**given) if given else None
    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle or DEFAULT_BUNDLE, sampling=sampling)
        options = {"force": args.force, "progress": not args.no_progress}
        if args.timeout is not None:  # else IngestOptions' default
            options["timeout"] = args.timeout
        report = vc.add_videos(uris, **options)
    print(report.summary())
    if args.report:
        with open(args.report, "w") as f:
            f.write(report.model_dump_json(indent=2))
    return 0


def add(sub: Any) -> None:
    """Register ``vtr-qdrant ingest``."""
    p = sub.add_parser("ingest", help="decode, encode and store video files")
    p.add_argument("sources", nargs="+", help="video files, folders or glob patterns")
    add_target_args(p)
    p.add_argument("--num-frames", type=int, default=None, help="frames per video (default 12)")
    p.add_argument("--fps", type=float, default=None, help="instead: frames per second (long videos)")
    p.add_argument("--mode", choices=["exact", "fast"], default=None, help="exact (default) or fast")
    p.add_argument("--segment-seconds", type=float, default=None, help="one point per this many seconds")
    p.add_argument("--timeout", type=float, default=None, help=f"per-video decode timeout, seconds (default {DEFAULT_DECODE_TIMEOUT:g})")
    p.add_argument("--force", action="store_true", help="re-ingest unchanged files")
    p.add_argument("--report", help="write the ingest report as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ray", action="store_true", help="run as a Ray Data job (python -m ray_jobs)")
    p.add_argument("--job-config", help="with --ray: job config YAML/TOML; flags given here override it")
    p.add_argument("--rebuild", action="store_true", default=None, help="with --ray: new versioned collection, alias swapped at the end")
    p.add_argument("--prune", action="store_true", default=None, help="with --ray: delete stored videos whose source is gone")
    p.add_argument("--verify", action="store_true", default=None, help="with --ray: scan the collection at the end (vtr-qdrant verify)")
    p.set_defaults(func=_cmd)
