"""Frame sampling speed: exact mode vs fast mode vs one full decode, both engines side by side.

Videos (libx264 veryfast, crf 23, yuv420p, B-frames, fixed GOP, moving ``testsrc2`` content) are
generated once into ``benchmarks/results/videos/``. For each video and each sampling
(``num_frames=12`` and ``fps=1``) three methods produce the same kind of output
(``(F, 224, 224, 3)`` uint8):

* ``full``  — probe + ONE forward pass over the whole file, a ``select`` filter keeping the exact
  frames (what exact sampling costs without any seeking);
* ``exact`` — :func:`vtr_qdrant.video.sample_frames` ``mode="exact"`` (forward decoding, seeking
  only past more than ~one GOP);
* ``fast``  — ``mode="fast"`` (keyframe stand-ins, exact fallback where a window has none);
* ``pyav_full`` — PyAV in this process: ONE forward decode of every frame (``thread_type="AUTO"``,
  no skipping), converting only the chosen frames with the engine's filter graph;
* ``pyav_exact`` / ``pyav_fast`` — ``sample_frames(engine="pyav")`` (worker subprocess, warm; its
  CPU is what the worker reports for the call).

The first four (``full``, ``exact``, ``fast``) use ``engine="ffmpeg"`` (the ffmpeg binary). Ratios
``*_x`` are ``full_s / method_s`` (the ffmpeg full pass, the issue's baseline); ``*_x_min`` divide
the faster of the two full decodes instead (the conservative ratio).

Also reported per video: ``decode_null`` = ``ffmpeg -i v -f null -`` (pure decode of every frame, no
scaling), the floor of any full pass. Writes ``benchmarks/results/decode.json`` and prints a table.

    python benchmarks/bench_decode.py [--quick] [--gop 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))

import video_factory as vf  # noqa: E402

from vtr_qdrant.video import ffmpeg as video_ffmpeg  # noqa: E402
from vtr_qdrant.video import pyav_pool as _pyav_pool  # noqa: E402
from vtr_qdrant.video.decode import sample_frames  # noqa: E402
from vtr_qdrant.video.ffmpeg_bin import resolve_ffmpeg  # noqa: E402
from vtr_qdrant.video.frames import SampledFrames  # noqa: E402
from vtr_qdrant.video.sampling import choose_frames, make_info, target_times  # noqa: E402
from vtr_qdrant.video.source import check_source  # noqa: E402

RESULTS = ROOT / "results"
VIDEOS = RESULTS / "videos"
DURATIONS = (10.0, 30.0, 300.0)
HEIGHTS = (360, 720)
SAMPLINGS: dict[str, dict[str, Any]] = {"n12": {"num_frames": 12}, "fps1": {"fps": 1.0}}
METHODS = ("full", "exact", "fast", "pyav_full", "pyav_exact", "pyav_fast")


def ensure_video(duration: float, height: int, gop: float) -> Path:
    VIDEOS.mkdir(parents=True, exist_ok=True)
    path = VIDEOS / f"testsrc2_{int(duration)}s_{height}p_gop{gop:g}s.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        t = time.perf_counter()
        vf.testsrc_video(tmp, duration=duration, height=height, gop_seconds=gop)
        tmp.rename(path)
        print(f"generated {path.name} in {time.perf_counter() - t:.1f} s", flush=True)
    return path


def full_pass(path: Path, size: int, **sampling: Any) -> SampledFrames:
    """Same output as exact mode, but one forward pass over the whole file (no seeking)."""
    text, url, scheme = check_source(path, ("file",), False)
    deadline = time.monotonic() + 3600
    ffbin = resolve_ffmpeg()
    info = video_ffmpeg.probe_checked(text, url, scheme, ffbin, deadline, False)
    targets, window = target_times(info, sampling.get("num_frames"), sampling.get("fps"))
    chosen, _ = choose_frames(info, targets, window, "exact")
    unique = sorted(set(chosen))
    run = video_ffmpeg.DecodeRun(seek=None, end=None, frames=unique)
    images, times = video_ffmpeg.decode_runs(ffbin, url, scheme, text, info, [run], size, deadline, False)
    pos = {f: i for i, f in enumerate(unique)}
    order = np.array([pos[f] for f in chosen])
    return SampledFrames(uri=text, images=images[order], timestamps=times[order], duration=info.duration,
                               fps=info.fps, width=info.width, height=info.height, rotation=info.rotation,
                               padded=len(chosen) - len(unique), mode="full")


def pyav_full_pass(path: Path, size: int, **sampling: Any) -> tuple[SampledFrames, float]:
    """PyAV, in-process: decode every frame once, convert only the chosen ones. Returns (frames, cpu s)."""
    from vtr_qdrant.video import pyav_open
    from vtr_qdrant.video import pyav_worker as _pyav

    cpu0 = time.process_time()
    text, url, _ = check_source(path, ("file",), False)
    deadline = time.monotonic() + 3600
    c = pyav_open.open_container(text, url, deadline)
    try:
        st = pyav_open.video_stream(c, text)
        header = pyav_open.stream_header(c, st)
        ticks, keys, end = pyav_open.index_timeline(c, st, text, deadline)
        tb = float(st.time_base)
        info = make_info(text, header, ticks * tb, keys * tb, None if end is None else end * tb)
        targets, window = target_times(info, sampling.get("num_frames"), sampling.get("fps"))
        chosen, _ = choose_frames(info, targets, window, "exact")
        want = {int(ticks[f]): f for f in set(chosen)}
        convert = _pyav.Converter(size, header.sar, st.time_base)
        st.thread_type = "AUTO"
        c.seek(int(ticks[0]), backward=True, any_frame=False, stream=st)
        got: dict[int, np.ndarray] = {}
        for frame in c.decode(st):
            f = want.get(frame.pts)
            if f is not None and f not in got:
                got[f] = convert(frame)
    finally:
        c.close()
    images = np.stack([got[f] for f in chosen])
    fr = SampledFrames(uri=text, images=images, timestamps=info.frame_times[chosen], duration=info.duration,
                             fps=info.fps, width=info.width, height=info.height, rotation=convert.rotation,
                             padded=len(chosen) - len(set(chosen)), mode="full")
    return fr, time.process_time() - cpu0


def decode_null(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run([resolve_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                    "-map", "0:v:0", "-f", "null", "-"], check=True)
    return time.perf_counter() - t


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def best_of(call: Any, repeat: int) -> tuple[float, float, Any]:
    """Best wall seconds over ``repeat`` calls, that call's CPU seconds, and the result
    (``call`` returns ``(result, cpu seconds)``)."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out, cpu = call()
        wall = time.perf_counter() - t
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, out


def timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """:func:`best_of` with the CPU seconds of the call's ffmpeg children."""
    def call() -> tuple[Any, float]:
        c = _child_cpu()
        out = fn()
        return out, _child_cpu() - c

    return best_of(call, repeat)


def timed_worker(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """:func:`best_of` with the PyAV worker's CPU seconds for the call."""
    return best_of(lambda: (fn(), _pyav_pool.last_cpu_seconds()), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the 5-minute videos")
    ap.add_argument("--gop", type=float, default=2.0, help="GOP length of the generated videos, seconds")
    ap.add_argument("--long-gop", type=float, default=8.0, help="extra 5-min 720p video with this GOP (0: none)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings (short videos)")
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    durations = [d for d in DURATIONS if not (args.quick and d > 60)]
    configs = [(d, h, args.gop) for h in HEIGHTS for d in durations]
    if not args.quick and args.long_gop:
        configs.append((300.0, 720, args.long_gop))  # the long-GOP case: seeking lands far back
    rows: list[dict[str, Any]] = []
    t = time.perf_counter()
    warm = VIDEOS / "warmup.mp4"
    VIDEOS.mkdir(parents=True, exist_ok=True)  # a fresh clone has no results folder yet
    if not warm.exists():
        vf.color_video(warm, ("red", "green"))
    sample_frames(warm, num_frames=2, engine="pyav")  # starts the PyAV worker (not timed below)
    worker_start_s = time.perf_counter() - t
    print(f"PyAV worker start + first call: {worker_start_s:.2f} s", flush=True)
    for duration, height, gop in configs:
        path = ensure_video(duration, height, gop)
        repeat = args.repeat if duration <= 60 else 1
        null_s = decode_null(path)
        for sname, sampling in SAMPLINGS.items():
            row: dict[str, Any] = {"video": path.name, "duration_s": duration, "height": height,
                                   "gop_s": gop, "sampling": sname, "decode_null_s": null_s}
            ref = None
            for method in METHODS:
                if method == "full":
                    sec, cpu, fr = timed(lambda: full_pass(path, args.size, **sampling), repeat)
                    ref = fr
                elif method == "pyav_full":
                    sec, cpu, fr = best_of(lambda: pyav_full_pass(path, args.size, **sampling), repeat)  # returns its own CPU
                elif method.startswith("pyav_"):
                    m = method[len("pyav_"):]
                    sec, cpu, fr = timed_worker(lambda m=m: sample_frames(
                        path, size=args.size, mode=m, timeout=3600, engine="pyav", **sampling), repeat)
                else:
                    sec, cpu, fr = timed(lambda m=method: sample_frames(path, size=args.size, mode=m,
                                                                         timeout=3600, engine="ffmpeg",
                                                                         **sampling), repeat)
                n = fr.images.shape[0]
                distinct = len(set(np.round(fr.timestamps, 6).tolist()))
                row[f"{method}_s"] = sec
                row[f"{method}_cpu_s"] = cpu
                row[f"{method}_frames_per_s"] = n / sec
                row[f"{method}_video_s_per_s"] = fr.duration / sec
                row[f"{method}_distinct"] = distinct
                row["frames"] = n
                if method in ("exact", "pyav_exact", "pyav_full") and ref is not None:
                    row[f"{method}_equals_full"] = bool(np.array_equal(fr.images, ref.images)
                                                        and np.allclose(fr.timestamps, ref.timestamps))
                if method in ("fast", "pyav_fast"):
                    row[f"{method}_keyframe_hits"] = fr.keyframe_hits
                    row[f"{method}_mean_abs_offset_s"] = float(np.mean(np.abs(fr.timestamps - ref.timestamps)))
            best_full, best_full_cpu = min(row["full_s"], row["pyav_full_s"]), min(row["full_cpu_s"], row["pyav_full_cpu_s"])
            for method in METHODS[1:]:
                row[f"{method}_x"] = row["full_s"] / row[f"{method}_s"]
                row[f"{method}_x_cpu"] = row["full_cpu_s"] / max(row[f"{method}_cpu_s"], 1e-9)
                row[f"{method}_x_min"] = best_full / row[f"{method}_s"]
                row[f"{method}_x_cpu_min"] = best_full_cpu / max(row[f"{method}_cpu_s"], 1e-9)
            # names kept from earlier runs of this script
            row["exact_equals_full"] = row.get("exact_equals_full")
            row["exact_speedup"], row["fast_speedup"] = row["exact_x"], row["fast_x"]
            row["exact_cpu_speedup"], row["fast_cpu_speedup"] = row["exact_x_cpu"], row["fast_x_cpu"]
            rows.append(row)
            print(_fmt(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"python": sys.version.split()[0], "platform": platform.platform(), "ffmpeg": resolve_ffmpeg(),
            "cpus": __import__("os").cpu_count(), "size": args.size, "gop_s": args.gop,
            "pyav": __import__("av").__version__, "pyav_worker_start_s": worker_start_s}
    (RESULTS / "decode.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n" + _table(rows))
    print(f"\nwrote {RESULTS / 'decode.json'}")


def _fmt(r: dict[str, Any]) -> str:
    return (f"{r['video']:<34} {r['sampling']:<5} F={r['frames']:<4} full {r['full_s']:6.2f}s "
            f"exact {r['exact_s']:6.2f}s ({r['exact_x']:5.1f}x) fast {r['fast_s']:6.2f}s ({r['fast_x']:5.1f}x) | "
            f"pyav full {r['pyav_full_s']:6.2f}s exact {r['pyav_exact_s']:6.2f}s ({r['pyav_exact_x']:5.1f}x) "
            f"fast {r['pyav_fast_s']:6.2f}s ({r['pyav_fast_x']:5.1f}x, {r['pyav_fast_distinct']} distinct)")


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("| video | sampling | F | null decode s | full s | exact s | fast s | pyav full s | pyav exact s "
            "| pyav fast s | exact x | fast x | pyav exact x | pyav fast x | pyav exact x (vs min full) "
            "| pyav fast x (vs min full) | pyav exact x cpu | pyav exact fr/s | pyav exact vid-s/s "
            "| fast distinct | pyav fast distinct | exact==full | pyav exact==full |")
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {int(r['duration_s'])}s {r['height']}p g{r['gop_s']:g} | {r['sampling']} | {r['frames']} "
            f"| {r['decode_null_s']:.2f} | {r['full_s']:.2f} | {r['exact_s']:.2f} | {r['fast_s']:.2f} "
            f"| {r['pyav_full_s']:.2f} | {r['pyav_exact_s']:.2f} | {r['pyav_fast_s']:.2f} "
            f"| {r['exact_x']:.1f} | {r['fast_x']:.1f} | {r['pyav_exact_x']:.1f} | {r['pyav_fast_x']:.1f} "
            f"| {r['pyav_exact_x_min']:.1f} | {r['pyav_fast_x_min']:.1f} | {r['pyav_exact_x_cpu']:.1f} "
            f"| {r['pyav_exact_frames_per_s']:.1f} | {r['pyav_exact_video_s_per_s']:.1f} "
            f"| {r['fast_distinct']}/{r['frames']} | {r['pyav_fast_distinct']}/{r['frames']} "
            f"| {r.get('exact_equals_full')} | {r.get('pyav_exact_equals_full')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
