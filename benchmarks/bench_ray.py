"""Ray ingestion job vs its parts vs the in-process path, same videos, same run.

Measured in interleaved rounds (so a noisy neighbour slows every method alike), median reported:

* ``decode only``  — :func:`vtr_qdrant.video.sample_frames` over every video, 2 threads (ffmpeg
  subprocesses), nothing else;
* ``encode only``  — the bundle's frame encoder over every decoded frame (batches of 64);
* ``in-process``   — ``VideoCollection.add_videos`` (threaded decode overlapped with encoding);
* ``ray warm``     — :func:`ray_jobs.pipeline.run_job` with Ray already initialised (includes
  the actor pool start and planning, into an in-memory collection from the driver);
* ``ray cold``     — ``ray.init`` + the same job (measured once, first; ``ray.shutdown`` reported apart).

On a CPU-only machine decode and encode share the cores, so the bound is their sum. Targets
(issue #6): ray warm <= 1.15 x (decode + encode), in-process <= 1.0 x.

    python benchmarks/bench_ray.py [--videos 40] [--frames 12] [--rounds 3] [--bundle NAME]

The bundle defaults to ``synthetic-world/v1`` when installed, else a random-weight ViT-B-32 exported
once into ``benchmarks/results/bundles/`` (needs the ``export`` extra; the compute is the real one).
Writes ``benchmarks/results/ray.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT.parent / "tests"))
sys.path.insert(0, str(ROOT))

import video_factory as vf  # noqa: E402
from _common import RESULTS_DIR, print_table, write_json  # noqa: E402

from vtr_qdrant import SamplingConfig, VideoCollection  # noqa: E402
from vtr_qdrant.bundle import ModelBundle, resolve_bundle  # noqa: E402
from vtr_qdrant.errors import ModelNotFoundError  # noqa: E402

log = logging.getLogger("bench_ray")


def get_bundle(name: str | None) -> ModelBundle:
    if name:
        return resolve_bundle(name)
    try:
        return resolve_bundle("synthetic-world/v1")
    except ModelNotFoundError:
        pass
    out = RESULTS_DIR / "bundles" / "ViT-B-32-random"
    if not (out / "manifest.json").exists():
        import open_clip
        import torch
        from open_clip.tokenizer import default_bpe

        from onnx_export.clip import export_model
        from vtr_qdrant.manifest import ModelSource

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32").eval()
        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp["size"][0] if isinstance(pp["size"], (tuple, list)) else pp["size"]
        ctx = open_clip.get_model_tokenize_cfg(model)["context_length"]
        print("exporting a random-weight ViT-B-32 bundle (once)...", flush=True)
        export_model(model, out_dir=out, name="ViT-B-32/random", image_size=size, mean=pp["mean"], std=pp["std"],
                     context_length=ctx, merges_file=default_bpe(),
                     source=ModelSource(architecture="ViT-B-32", recipe={"weights": "random (benchmark)"}))
    return resolve_bundle(f"local-dir:{out}")


def make_videos(n: int, seconds: float, height: int) -> list[str]:
    d = RESULTS_DIR / "videos" / f"ray_{n}x{seconds:g}s_{height}p"
    d.mkdir(parents=True, exist_ok=True)
    sources = ("testsrc2", "testsrc", "rgbtestsrc", "smptehdbars")
    paths = []
    for i in range(n):
        p = d / f"clip{i:03d}.mp4"
        if not p.exists():
            tmp = p.with_suffix(".part.mp4")
            vf.testsrc_video(tmp, duration=seconds + 0.25 * (i % 5), height=height, fps=25, source=sources[i % len(sources)])
            tmp.rename(p)
        paths.append(str(p))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=4.0, help="video length")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--frames", type=int, default=12, help="frames sampled per video")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--decode-cpus", type=float, default=1.0, help="decode.num_cpus")
    ap.add_argument("--encode-cpus", type=float, default=0.5, help="encode.num_cpus")
    ap.add_argument("--encode-batch", type=int, default=8, help="encode.batch_videos")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from ray_jobs.config import JobConfig
    from ray_jobs.pipeline import run_job

    bundle = get_bundle(args.bundle)
    uris = make_videos(args.videos, args.seconds, args.height)
    sampling = SamplingConfig(num_frames=args.frames)
    size = bundle.manifest.image.image_size
    print(f"bundle {bundle.name} (image {size}, dim {bundle.embed_dim}); {len(uris)} videos, {args.frames} frames each; "
          f"{os.cpu_count()} CPUs", flush=True)

    from vtr_qdrant.video import sample_frames

    def decode_one(u: str) -> Any:
        return sample_frames(u, num_frames=args.frames, size=size, timeout=120)

    def decode_only() -> np.ndarray:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return np.concatenate([s.images for s in pool.map(decode_one, uris)])

    images = decode_only()
    encoder = bundle.frame_encoder(batch_size=64)
    encoder.encode(images[:2])

    def encode_only() -> None:
        encoder.encode(images)

    def in_process() -> None:
        from qdrant_client import QdrantClient

        vc = VideoCollection(QdrantClient(":memory:"), "bench", bundle, sampling=sampling)
        rep = vc.add_videos(uris, progress=False, decode_workers=2)
        assert len(rep.ingested) == len(uris), rep.summary()

    out_dir = RESULTS_DIR / "ray_job_output"
    cfg = JobConfig.model_validate({
        "sources": uris, "collection": "bench", "bundle": f"local-dir:{bundle.path}", "sampling": sampling.model_dump(),
        "qdrant": {"path": ":memory:"}, "output_dir": str(out_dir), "force": True,
        "decode": {"num_cpus": args.decode_cpus}, "encode": {"num_cpus": args.encode_cpus, "batch_videos": args.encode_batch},
        "ray": {"progress": False, "shutdown": False, "num_cpus": args.cpus},
    })
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ray_client = QdrantClient(":memory:")
    reports: list[Any] = []

    def ray_job() -> None:
        rep = run_job(cfg, client=ray_client)
        assert rep.ingested == len(uris), rep.summary()
        reports.append(rep)

    # cold: ray.init inside the job, first thing
    t = time.perf_counter()
    ray_job()
    cold = time.perf_counter() - t
    cold_init = reports[-1].seconds.get("ray_init", 0.0)

    fns = {"decode only": decode_only, "encode only": encode_only, "in-process": in_process, "ray warm": ray_job}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(args.rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    t = time.perf_counter()
    ray.shutdown()
    shutdown = time.perf_counter() - t

    med = {k: statistics.median(v) for k, v in times.items()}
    bound = med["decode only"] + med["encode only"]
    n_frames = len(uris) * args.frames
    warm_reports = reports[1:]
    pipeline = statistics.median(r.seconds["pipeline"] for r in warm_reports)
    rows = [
        ["decode only (2 threads)", med["decode only"], n_frames / med["decode only"], med["decode only"] / bound],
        ["encode only", med["encode only"], n_frames / med["encode only"], med["encode only"] / bound],
        ["decode + encode (bound)", bound, n_frames / bound, 1.0],
        ["in-process add_videos", med["in-process"], n_frames / med["in-process"], med["in-process"] / bound],
        ["ray warm run_job", med["ray warm"], n_frames / med["ray warm"], med["ray warm"] / bound],
        ["  of which pipeline", pipeline, n_frames / pipeline, pipeline / bound],
        ["ray cold (init + job)", cold, n_frames / cold, cold / bound],
    ]
    print()
    print_table(["method", "seconds", "frames/s", "x bound"], rows)
    print(f"ray.init {cold_init:.2f} s, ray.shutdown {shutdown:.2f} s; targets: ray warm <= 1.15x, in-process <= 1.0x")
    path = write_json("ray", {
        "config": vars(args), "bundle": bundle.name, "frames": n_frames,
        "seconds": {k: v for k, v in times.items()}, "median": med, "bound": bound,
        "ray_cold": cold, "ray_init": cold_init, "ray_shutdown": shutdown, "ray_pipeline_median": pipeline,
        "ratios": {"ray_warm": med["ray warm"] / bound, "ray_pipeline": pipeline / bound,
                   "in_process": med["in-process"] / bound, "ray_cold": cold / bound},
        "warm_reports": [r.model_dump(exclude={"ingested_ids", "failures"}) for r in warm_reports],
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
