"""``vtr-qdrant verify [--repair]``: find videos a crash left incomplete or mixed, and repair them.

Prints a JSON report (``--report FILE`` writes it too). Exit code 0 when every video is whole
(after the repair, with ``--repair``), 1 when problems remain, 2 on a usage or storage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from .common import add_target_args, open_client, print_json

__all__ = ["add", "run_verify"]


def run_verify(vc: Any, *, repair: bool, min_age: float, progress: bool = False) -> dict[str, Any]:
    """Audit ``vc`` (a :class:`~vtr_qdrant.collection.VideoCollection`), repair if asked, audit again.

    Returns:
        ``{"found": report, "after": report or None}`` as JSON-ready dicts: what the scan found
        (with the repair's action per video), then a fresh scan after the repair.
    """
    from ..store.audit import audit
    from ..store.audit import repair as repair_store

    before = audit(vc.store, min_age=min_age)
    out: dict[str, Any] = {"found": before.to_dict(), "after": None}
    if not repair or not before.problems:
        return out

    def reingest(items: Sequence[tuple[str, str, dict[str, Any]]]) -> tuple[set[str], dict[str, str]]:
        if vc.bundle is None:
            return set(), {vid: "no model bundle: pass --bundle (the collection's model) to re-ingest" for vid, _, _ in items}
        report = vc.add_videos(
            [src for _, src, _ in items], video_ids=[vid for vid, _, _ in items], metadata=[m for _, _, m in items],
            force=True, progress=progress,
        )
        return set(report.ingested), {f.video_id: f"{f.reason}: {f.message}" for f in report.failed}

    out["found"] = repair_store(vc.store, before, reingest=reingest).to_dict()
    out["after"] = audit(vc.store, min_age=min_age).to_dict()
    return out


def _cmd(args: argparse.Namespace) -> int:
    from ..collection import VideoCollection

    with open_client(args) as client:
        vc = VideoCollection(client, args.collection, args.bundle, create=False)
        if vc.bundle is None and vc.schema.model_name and args.repair:
            try:  # re-ingesting needs the collection's own model: use the bundle it records
                vc = VideoCollection(client, args.collection, vc.schema.model_name, create=False)
            except Exception as e:  # noqa: BLE001 - reported per video below instead
                print(f"note: the collection's bundle {vc.schema.model_name!r} cannot be loaded ({e}); "
                      "videos that need re-ingesting are reported", file=sys.stderr)
        out = run_verify(vc, repair=args.repair, min_age=args.min_age, progress=not args.no_progress)
    print_json(out)
    if args.report:
        import json

        with open(args.report, "w") as f:
            json.dump(out, f, indent=2, default=str)
    final = out["after"] or out["found"]
    return 1 if final["remaining"] else 0


def add(sub: Any) -> None:
    """Register ``vtr-qdrant verify``."""
    p = sub.add_parser(
        "verify",
        help="check a collection for incomplete or mixed-version videos (and repair them with --repair)",
        description="Scan every point (payloads only) for videos a crash left incomplete, with two versions, "
        "missing segments or another model's vectors. --repair deletes leftovers of videos whose current "
        "version is whole and re-ingests the others from their stored source paths. Exit code 1 if problems remain.",
    )
    add_target_args(p)
    p.add_argument("--repair", action="store_true", help="delete leftovers and re-ingest videos that are not whole")
    p.add_argument("--min-age", type=float, default=600.0,
                   help="incomplete versions younger than this many seconds are writes in flight: left alone (default 600)")
    p.add_argument("--report", help="write the JSON report here too")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd)
