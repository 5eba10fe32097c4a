"""``python -m ray_jobs ingest``: the command line of the Ray ingestion job.

Works as is under ``ray job submit --working-dir . -- python -m ray_jobs ingest --config job.yaml``
(Ray sets ``RAY_ADDRESS``; the job joins that cluster). Exit codes: 0 when the job ran to the end
(even if some videos failed: see the failures table), 2 for a configuration or model problem,
1 when the job itself failed (e.g. the Qdrant target kept failing), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from vtr_qdrant.errors import ConfigError, StorageError, VtrError
from vtr_qdrant.model.bundle import DEFAULT_BUNDLE

__all__ = ["main", "build_parser", "overrides_from_args", "cli_ingest"]

log = logging.getLogger("ray_jobs.cli")


def _key_value(text: str) -> tuple[str, Any]:
    from .config import _parse_scalar

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. encode.num_gpus=1), got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), _parse_scalar(v)


def _actors(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX actors, got {text!r}") from None


def add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    """The ``ingest`` flags (each overrides the same field of the job config)."""
    p.add_argument("sources", nargs="*", help="folders, globs, files or URIs (s3://...); added to the config's")
    p.add_argument("--config", help="job config file (.yaml / .toml / .json)")
    p.add_argument("--manifest", help="CSV / JSONL / Parquet table: uri, [video_id], metadata columns")
    p.add_argument("--collection", help="collection (alias) name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--qdrant-url", help="Qdrant server URL (API key: $QDRANT_API_KEY): parallel writes")
    where.add_argument("--qdrant-path", help="embedded Qdrant folder: written by the driver")
    where.add_argument("--qdrant-edge-path", help="Qdrant Edge folder (the edge extra): written by the driver")
    p.add_argument("--bundle", help="model bundle name or local-dir:/path")
    p.add_argument("--num-frames", type=int, help="frames per video")
    p.add_argument("--fps", type=float, help="instead: frames per second")
    p.add_argument("--mode", choices=["exact", "fast"], help="frame sampling mode")
    p.add_argument("--segment-seconds", type=float, help="one point per this many seconds")
    p.add_argument("--timeout", type=float, help="per-video decode timeout, seconds")
    p.add_argument("--num-gpus", type=float, help="GPUs per encode actor (CUDA provider when > 0)")
    p.add_argument("--encode-actors", type=_actors, help="encode actors: N or MIN:MAX")
    p.add_argument("--ray-address", help="Ray cluster address (default: $RAY_ADDRESS or a local cluster)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray cluster")
    p.add_argument("--force", action="store_true", default=None, help="re-ingest unchanged videos")
    p.add_argument("--rebuild", action="store_true", default=None, help="new versioned collection, alias swapped at the end")
    p.add_argument("--prune", action="store_true", default=None, help="delete stored videos whose source is gone")
    p.add_argument("--verify", action="store_true", default=None, help="scan the collection at the end (vtr-qdrant verify)")
    p.add_argument("--output-dir", help="where failures and report.json are written")
    p.add_argument("--failures-format", choices=["jsonl", "parquet"])
    p.add_argument("--set", dest="set_", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set write.batch_videos=32 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no Ray Data progress bars")


_FLAG_FIELDS = {
    "manifest": "manifest",
    "collection": "collection",
    "bundle": "bundle",
    "timeout": "decode.timeout",
    "num_gpus": "encode.num_gpus",
    "ray_address": "ray.address",
    "num_cpus": "ray.num_cpus",
    "force": "force",
    "rebuild": "rebuild",
    "prune": "prune",
    "verify": "verify",
    "output_dir": "output_dir",
    "failures_format": "failures_format",
}


def overrides_from_args(args: argparse.Namespace, base_sources: Sequence[str] = ()) -> dict[str, Any]:
    """Dotted config overrides from parsed flags (only the flags that were given)."""
    out: dict[str, Any] = {}
    for attr, key in _FLAG_FIELDS.items():
        v = getattr(args, attr, None)
        if v is not None:
            out[key] = v
    if getattr(args, "sources", None):
        out["sources"] = [*base_sources, *args.sources]
    if getattr(args, "edge_path", None):  # vtr-qdrant ingest --ray --edge-path (its --qdrant-path has a default)
        out["qdrant"] = {"edge_path": args.edge_path}
    elif getattr(args, "qdrant_url", None):
        out["qdrant"] = {"url": args.qdrant_url}
    elif getattr(args, "qdrant_path", None):
        out["qdrant"] = {"path": args.qdrant_path}
    elif getattr(args, "qdrant_edge_path", None):
        out["qdrant"] = {"edge_path": args.qdrant_edge_path}
    sampling = {k: getattr(args, k, None) for k in ("num_frames", "fps", "mode", "segment_seconds")}
    if any(v is not None for v in sampling.values()):
        out["sampling"] = {k: v for k, v in sampling.items() if v is not None}  # replaces the whole section
    actors = getattr(args, "encode_actors", None)
    if actors is not None:
        out["encode.min_actors"], out["encode.max_actors"] = actors
    if getattr(args, "no_progress", False):
        out["ray.progress"] = False
    for k, v in getattr(args, "set_", None) or []:
        out[k] = v
    return out


def _run(config_path: str | None, overrides: dict[str, Any], report_copy: str | None = None) -> int:
    from .config import load_config
    from .pipeline import run_job

    try:
        cfg = load_config(config_path, overrides)
        report = run_job(cfg)
    except VtrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (ConfigError, ValueError, StorageError)) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("the ingestion job failed")
        return 1
    print(report.summary())
    if report_copy:
        with open(report_copy, "w") as f:
            f.write(report.model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m ray_jobs``."""
    parser = argparse.ArgumentParser(prog="python -m ray_jobs", description="Ray Data jobs of vtr-qdrant.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="decode -> encode -> Qdrant on a Ray cluster, incremental")
    add_ingest_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ray_jobs``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ray_jobs").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    return _run(args.config, overrides_from_args(args))


# Defaults of ``vtr-qdrant ingest``'s parser: with a job config, they are not user choices and
# must not override the config file.
_VTR_CLI_DEFAULTS = {"decode.timeout": 120.0, "force": False, "qdrant": {"path": "./qdrant_data"}}


def cli_ingest(args: argparse.Namespace) -> int:
    """Run ``vtr-qdrant ingest --ray ...``: its flags (sources, --collection, --qdrant-path/url,
    --bundle, sampling flags, --timeout, --force, --no-progress, --report) mapped onto the job
    config, plus ``--job-config``, ``--rebuild`` and ``--prune`` when the parser has them."""
    overrides = overrides_from_args(args)
    job_config = getattr(args, "job_config", None)
    if job_config:
        for k, default in _VTR_CLI_DEFAULTS.items():
            if overrides.get(k) == default:
                del overrides[k]
    elif not getattr(args, "bundle", None):
        overrides["bundle"] = DEFAULT_BUNDLE  # the in-process CLI's default
    logging.getLogger("ray_jobs").setLevel(logging.INFO)
    return _run(job_config, overrides, getattr(args, "report", None))
