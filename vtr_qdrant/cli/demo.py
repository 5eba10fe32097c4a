"""The main job on the embedded defaults: ``vtr-qdrant demo`` / ``make demo``.

Generates a small synthetic world of videos (held-out seed, never used in training), ingests it
through the real path (ffmpeg decode -> ONNX frame encoder -> embedded Qdrant on disk) with the
project's own small model, runs text queries and prints ranked videos with the matching moment, and
the R@1 of the run for each aggregation.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from ..model.bundle import DEFAULT_BUNDLE

__all__ = ["run_demo", "add"]

log = logging.getLogger(__name__)


def run_demo(
    out_dir: str | Path = "demo-output",
    *,
    n_videos: int = 40,
    bundle: str = DEFAULT_BUNDLE,
    seed_index: int = 0,
    progress: bool = True,
    show: int = 3,
) -> int:
    """Run the demo; returns the process exit code (0 on success).

    Args:
        out_dir: working folder: ``videos/`` (mp4 + world.json) and ``qdrant/`` (embedded Qdrant).
        n_videos: how many videos to generate.
        bundle: the model bundle to use.
        seed_index: which held-out world to generate.
        progress: show progress bars.
        show: how many example queries to print in full.
    """
    from qdrant_client import QdrantClient

    from ..collection import VideoCollection
    from ..errors import CollectionMismatchError
    from ..eval.evaluation import evaluate_collection
    from ..search.resolve import resolve_aggregation
    from ..synthetic.captions import heldout_seed
    from ..synthetic.render import make_world

    t0 = time.perf_counter()
    out = Path(out_dir)
    print(f"[1/4] generating {n_videos} synthetic videos (held-out seed) into {out / 'videos'}")
    world = make_world(heldout_seed(seed_index), n_videos, out / "videos")
    ids = world.video_ids

    print(f"[2/4] ingesting into embedded Qdrant at {out / 'qdrant'} with bundle {bundle!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # local-mode notices
        client = QdrantClient(path=str(out / "qdrant"))
    try:
        try:
            vc = VideoCollection(client, "demo", bundle, indexed_fields={"n_scenes": "integer"})
        except CollectionMismatchError as e:  # the demo owns its folder: an older run's collection is rebuilt
            print(f"      rebuilding the demo collection, which an earlier run built differently: {e}")
            client.delete_collection("demo")
            vc = VideoCollection(client, "demo", bundle, indexed_fields={"n_scenes": "integer"})
        report = vc.add_videos(
            [world.path(v) for v in ids],
            video_ids=ids,
            metadata=[{"caption": world.video(v).caption, "n_scenes": len(world.video(v).scenes)} for v in ids],
            progress=progress,
        )
        print(report.summary())
        if report.failed:
            return 1

        queries = world.queries("scene")
        print(f"[3/4] example text queries ({len(queries)} scene captions in this world)")
        for q in queries[:show]:
            hits = vc.search(q.text, limit=3)
            print(f'\n  query: "{q.text}"   ({len(q.relevant)} relevant videos)')
            for rank, h in enumerate(hits, 1):
                v = world.video(h.video_id)
                mark = "RELEVANT" if h.video_id in q.relevant else "        "
                peak_scene = v.scene_at(h.moment.peak)
                print(
                    f"   {rank}. {mark} {h.video_id}  score {h.score:.3f}  moment {h.moment.start:5.2f}-{h.moment.end:5.2f} s"
                    f"  (shows: {peak_scene.caption})"
                )

        print(f"\n[4/4] retrieval quality of this run ({len(ids)} videos, two-stage search; the default is the "
              f"bundle's aggregation, {vc.aggregation!r})")
        names = ("softmax", "max", "mean", "xpool-identity")
        aggs = {"default": vc.aggregation, **{n: resolve_aggregation(n, dim=vc.dim) for n in names}}
        quality = evaluate_collection(vc, world.eval_queries(), aggs, modes=("two_stage",))
        for name, per in quality["results"].items():
            m = per["two_stage"]
            kinds = m.get("by_kind", {})
            iou = m.get("moments", {}).get("scene", {}).get("iou", float("nan"))
            print(
                f"   {name:<15} R@1 scene {kinds['scene']['R@1']:.3f}  whole-video {kinds['video']['R@1']:.3f}  "
                f"mixed {kinds['mixed']['R@1']:.3f}   scene moment IoU {iou:.2f}"
            )
        print(f"\ndone in {time.perf_counter() - t0:.1f} s")
        return 0
    finally:
        client.close()


def _cmd(args: argparse.Namespace) -> int:
    return run_demo(out_dir=args.out, n_videos=args.videos, bundle=args.bundle, progress=not args.no_progress)


def add(sub: Any) -> None:
    """Register ``vtr-qdrant demo``."""
    p = sub.add_parser("demo", help="end-to-end demo: generate videos, ingest them into embedded Qdrant, search")
    p.add_argument("--out", default="demo-output", help="working folder (videos, embedded Qdrant)")
    p.add_argument("--videos", type=int, default=40, help="how many synthetic videos")
    p.add_argument("--bundle", default=DEFAULT_BUNDLE)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd)
