"""Ray ingestion job vs its parts vs the in-process path, same videos, same run.

Two phases, each in interleaved rounds (every arm once per round, the order reversed every other
round, so a noisy neighbour or a drift slows every arm alike); ratios are taken per round (each
arm against the same round's decode + encode) and their median is reported:

1. **No Ray running**: ``decode only``, ``encode only``, ``in-process`` (the conditions an
   in-process user has: Ray's idle daemons would take ~3% of this machine's CPU from every arm);
2. **Ray initialised** (after a ``ray cold`` job: ``ray.init`` + the job, measured once):
   ``decode only``, ``encode only``, ``ray warm``. The ray warm ratio is given against this
   phase's bound (the target's) and, stricter, against phase 1's (a machine without Ray).

* ``decode only``  — :func:`vtr_qdrant.video.sample_frames` over every video, 2 threads, nothing else;
* ``encode only``  — the bundle's frame encoder over every decoded frame (its per-device run size);
* ``in-process``   — ``VideoCollection.add_videos`` (threaded decode overlapped with encoding);
* ``ray warm``     — :func:`ray_jobs.pipeline.run_job` with Ray already initialised (includes
  the actor pool start and planning, into an in-memory collection from the driver).

On a CPU-only machine decode and encode share the cores, so the bound is their sum. Targets
(issue #6): ray warm <= 1.15 x (decode + encode), in-process <= 1.0 x.

Besides wall time every arm records CPU seconds: this process and every descendant (ffmpeg /
PyAV workers, and the local Ray cluster's raylet, GCS and workers) from ``/proc``, sampled every
0.5 s by a thread (10 Hz sampling measurably slowed the arms), and the whole machine's busy CPU
from ``/proc/stat``. ``cpu x bound`` compares the work done with the standalone stages' work, and
``others`` is the CPU that other programs used meanwhile (noise).

    python benchmarks/bench_ray.py [--videos 40] [--frames 12] [--rounds 3] [--bundle NAME]

The bundle defaults to a random-weight ViT-B-32 exported once into ``benchmarks/results/bundles/``
(needs the ``export`` extra the first time; the compute is the real one); ``--bundle
synthetic-world/v1`` measures the tiny committed model instead (decode-dominated).
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
from vtr_qdrant.model.bundle import ModelBundle, resolve_bundle  # noqa: E402

log = logging.getLogger("bench_ray")


CLK_TCK = os.sysconf("SC_CLK_TCK")


Ticks = dict[tuple[int, str], tuple[int, int, int, bool]]


def _tree_ticks() -> Ticks:
    """This process and its live descendants: ``(pid, start time) -> (ppid, own ticks, waited-for
    children's ticks, reaps)``. ``reaps`` marks processes whose ``cutime`` is trusted (this one
    and Ray workers, ``ray::...``, which wait for their ffmpeg runs); a raylet's is not used (it
    may not account for the workers it reaps)."""
    info: dict[int, tuple[int, str, str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rfind(")")]
        f = stat[stat.rfind(")") + 2 :].split()  # fields from "state" on
        info[int(entry)] = (int(f[1]), comm, f[19], int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
    children: dict[int, list[int]] = {}
    for pid, (parent, *_rest) in info.items():
        children.setdefault(parent, []).append(pid)
    out: Ticks = {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        if pid in info:
            ppid, comm, start, own, waited = info[pid]
            out[(pid, start)] = (ppid, own, waited, pid == os.getpid() or comm.startswith("ray::"))
    return out


class TreeCpuMeter:
    """CPU seconds used by this process and its descendants (ffmpeg, a local Ray cluster's raylet,
    GCS and workers) between ``start()`` and ``stop()``, from ``/proc`` sampled every ``interval``
    seconds. A process that exits meanwhile counts up to the last value seen (an encode actor of
    the previous job does not take its whole past out of the sum); one reaped by a trusted parent
    is taken out of that parent's ``cutime`` growth so it is not counted twice; children too
    short-lived to be sampled count through their parent's ``cutime``."""

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.base: Ticks = {}
        self.last: Ticks = {}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(_tree_ticks())

    def start(self) -> TreeCpuMeter:
        self.base = _tree_ticks()
        self.last = dict(self.base)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        final = _tree_ticks()
        self.last.update(final)
        total = 0
        for k, (_, own, waited, reaps) in self.last.items():
            b = self.base.get(k, (0, 0, 0, False))
            total += own - b[1] + (waited - b[2] if reaps else 0)
        reapers = {pid for (pid, _), v in final.items() if v[3]}
        for k, (ppid, own, waited, reaps) in self.last.items():
            if k not in final and ppid in reapers:  # its final time moved into the parent's cutime
                total -= own + (waited if reaps else 0)
        return total / CLK_TCK


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (every core; idle and iowait excluded)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def get_bundle(name: str | None) -> ModelBundle:
    if name:
        return resolve_bundle(name)
    out = RESULTS_DIR / "bundles" / "ViT-B-32-random"
    if not (out / "manifest.json").exists():
        import open_clip
        import torch
        from open_clip.tokenizer import default_bpe

        from onnx_export.clip import export_model
        from vtr_qdrant.model.manifest import ModelSource

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
    ap.add_argument("--name", default="ray", help="results file: benchmarks/results/NAME.json")
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

    from vtr_qdrant.video.decode import sample_frames

    def decode_one(u: str) -> Any:
        return sample_frames(u, num_frames=args.frames, size=size, timeout=120)

    def decode_only() -> np.ndarray:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return np.concatenate([s.images for s in pool.map(decode_one, uris)])

    images = decode_only()
    encoder = bundle.frame_encoder()
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

    def run_rounds(fns: dict[str, Any], label: str) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
        times: dict[str, list[float]] = {k: [] for k in fns}
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        others: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(args.rounds):
            order = list(fns) if r % 2 == 0 else list(reversed(fns))  # ABC CBA ...: drift hits all alike
            for name in order:
                meter, b0, t = TreeCpuMeter().start(), machine_busy_seconds(), time.perf_counter()
                fns[name]()
                wall = time.perf_counter() - t
                own = meter.stop()
                times[name].append(wall)
                cpu[name].append(own)
                others[name].append(max(0.0, machine_busy_seconds() - b0 - own))
            bound_r = times["decode only"][-1] + times["encode only"][-1]
            last = list(fns)[-1]
            print(f"{label} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s (cpu {cpu[k][-1]:.1f})" for k, v in times.items())
                  + f"; {last} {times[last][-1] / bound_r:.3f}x", flush=True)
        return times, cpu, others

    # phase 1: no Ray running
    assert not ray.is_initialized()
    times1, cpu1, others1 = run_rounds({"decode only": decode_only, "encode only": encode_only, "in-process": in_process}, "no ray")

    # phase 2: ray.init inside the first (cold) job, then warm jobs
    t = time.perf_counter()
    ray_job()
    cold = time.perf_counter() - t
    cold_init = reports[-1].seconds.get("ray_init", 0.0)
    times2, cpu2, others2 = run_rounds({"decode only": decode_only, "encode only": encode_only, "ray warm": ray_job}, "ray up")
    t = time.perf_counter()
    ray.shutdown()
    shutdown = time.perf_counter() - t

    def per_round(name: str, what: dict[str, list[float]], base: dict[str, list[float]] | None = None) -> list[float]:
        base = base or what
        return [what[name][i] / (base["decode only"][i] + base["encode only"][i]) for i in range(args.rounds)]

    def bound_of(what: dict[str, list[float]]) -> float:
        return statistics.median(what["decode only"]) + statistics.median(what["encode only"])

    med = statistics.median
    ratios = {"in-process": per_round("in-process", times1), "ray warm": per_round("ray warm", times2),
              "ray warm vs no-ray bound": per_round("ray warm", times2, times1)}
    cpu_ratios = {"in-process": per_round("in-process", cpu1), "ray warm": per_round("ray warm", cpu2)}
    bound1, bound2 = bound_of(times1), bound_of(times2)
    n_frames = len(uris) * args.frames
    warm_reports = reports[1:]
    pipeline = med([r.seconds["pipeline"] for r in warm_reports])

    def row(label: str, wall: float, ratio: float, c: float | None = None, cr: float | None = None, oth: list[float] | None = None) -> list[Any]:
        return [label, wall, n_frames / wall, ratio, c if c is not None else "", (c / wall) if c is not None else "",
                cr if cr is not None else "", med(oth) if oth else ""]

    def phase_rows(phase: str, times: dict[str, list[float]], cpu: dict[str, list[float]], others: dict[str, list[float]]) -> list[list[Any]]:
        """The standalone arms of one phase and their sum, the bound of that phase's ratios."""
        bound, bound_cpu = bound_of(times), bound_of(cpu)
        return [*(row(f"{phase}: {name}{' (2 threads)' if name == 'decode only' else ''}", med(times[name]),
                      med(times[name]) / bound, med(cpu[name]), med(cpu[name]) / bound_cpu, others[name])
                  for name in ("decode only", "encode only")),
                row(f"{phase}: decode + encode (bound)", bound, 1.0, bound_cpu, 1.0)]

    rows = [
        *phase_rows("no ray", times1, cpu1, others1),
        row("in-process add_videos", med(times1["in-process"]), med(ratios["in-process"]),
            med(cpu1["in-process"]), med(cpu_ratios["in-process"]), others1["in-process"]),
        *phase_rows("ray up", times2, cpu2, others2),
        row("ray warm run_job", med(times2["ray warm"]), med(ratios["ray warm"]),
            med(cpu2["ray warm"]), med(cpu_ratios["ray warm"]), others2["ray warm"]),
        row("  of which pipeline", pipeline, pipeline / bound2),
        row("  vs the no-ray bound", med(times2["ray warm"]), med(ratios["ray warm vs no-ray bound"])),
        row("ray cold (init + job)", cold, cold / bound2),
    ]
    print()
    print_table(["method", "seconds", "frames/s", "x bound", "cpu s", "cores busy", "cpu x bound", "others cpu s"], rows)
    print("per-round x bound: " + "; ".join(f"{k} " + " ".join(f"{x:.3f}" for x in v) for k, v in ratios.items()))
    print(f"ray.init {cold_init:.2f} s, ray.shutdown {shutdown:.2f} s; targets: ray warm <= 1.15x, in-process <= 1.0x "
          "(x bound: median of per-round ratios, each against its own phase's bound)")
    path = write_json(args.name, {
        "config": vars(args), "bundle": bundle.name, "frames": n_frames,
        "no_ray": {"seconds": times1, "cpu_seconds": cpu1, "others_cpu_seconds": others1, "bound": bound1, "bound_cpu": bound_of(cpu1)},
        "ray_up": {"seconds": times2, "cpu_seconds": cpu2, "others_cpu_seconds": others2, "bound": bound2, "bound_cpu": bound_of(cpu2)},
        "ray_cold": cold, "ray_init": cold_init, "ray_shutdown": shutdown, "ray_pipeline_median": pipeline,
        "per_round_ratios": ratios, "per_round_cpu_ratios": cpu_ratios,
        "ratios": {"ray_warm": med(ratios["ray warm"]), "in_process": med(ratios["in-process"]),
                   "ray_warm_vs_no_ray_bound": med(ratios["ray warm vs no-ray bound"]),
                   "ray_pipeline": pipeline / bound2, "ray_cold": cold / bound2,
                   "ray_warm_cpu": med(cpu_ratios["ray warm"]), "in_process_cpu": med(cpu_ratios["in-process"])},
        "warm_reports": [r.model_dump(exclude={"ingested_ids", "failures"}) for r in warm_reports],
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
