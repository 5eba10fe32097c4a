"""Frame sampling speed: exact mode vs fast mode vs one full decode, side by side.

Videos (libx264 veryfast, crf 23, yuv420p, B-frames, fixed GOP, moving ``testsrc2`` content) are
generated once into ``benchmarks/results/videos/``. For each video and each sampling
(``num_frames=12`` and ``fps=1``) three methods produce the same kind of output
(``(F, 224, 224, 3)`` uint8):

* ``full``  — probe + ONE forward pass over the whole file, a ``select`` filter keeping the exact
  frames (what exact sampling costs without any seeking);
* ``exact`` — :func:`vtr_qdrant.video.sample_frames` ``mode="exact"`` (forward decoding, seeking
  only past more than ~one GOP);
* ``fast``  — ``mode="fast"`` (keyframe stand-ins, exact fallback where a window has none).

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

from vtr_qdrant import video  # noqa: E402
from vtr_qdrant.ffmpeg_bin import resolve_ffmpeg  # noqa: E402

RESULTS = ROOT / "results"
VIDEOS = RESULTS / "videos"
DURATIONS = (10.0, 30.0, 300.0)
HEIGHTS = (360, 720)
SAMPLINGS: dict[str, dict[str, Any]] = {"n12": {"num_frames": 12}, "fps1": {"fps": 1.0}}


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


def full_pass(path: Path, size: int, **sampling: Any) -> video.SampledFrames:
    """Same output as exact mode, but one forward pass over the whole file (no seeking)."""
    text, url, scheme = video._source(path, ("file",), False)
    deadline = time.monotonic() + 3600
    ffbin = resolve_ffmpeg()
    info = video._probe(text, url, scheme, ffbin, deadline, False)
    targets, window = video._target_times(info, sampling.get("num_frames"), sampling.get("fps"))
    chosen, _ = video._choose_frames(info, targets, window, "exact")
    unique = sorted(set(chosen))
    run = video._Run(seek=None, end=None, frames=unique)
    images, times = video._decode(ffbin, url, scheme, text, info, [run], size, deadline, False)
    pos = {f: i for i, f in enumerate(unique)}
    order = np.array([pos[f] for f in chosen])
    return video.SampledFrames(uri=text, images=images[order], timestamps=times[order], duration=info.duration,
                               fps=info.fps, width=info.width, height=info.height, rotation=info.rotation,
                               padded=len(chosen) - len(unique), mode="full")


def decode_null(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run([resolve_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                    "-map", "0:v:0", "-f", "null", "-"], check=True)
    return time.perf_counter() - t


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn: Any, repeat: int) -> tuple[float, float, Any]:
    """Best wall seconds, CPU seconds of ffmpeg children for that call, and the result."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        c, t = _child_cpu(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t, _child_cpu() - c
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, out


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
    for duration, height, gop in configs:
        path = ensure_video(duration, height, gop)
        repeat = args.repeat if duration <= 60 else 1
        null_s = decode_null(path)
        for sname, sampling in SAMPLINGS.items():
            row: dict[str, Any] = {"video": path.name, "duration_s": duration, "height": height,
                                   "gop_s": gop, "sampling": sname, "decode_null_s": null_s}
            ref = None
            for method in ("full", "exact", "fast"):
                if method == "full":
                    sec, cpu, fr = timed(lambda: full_pass(path, args.size, **sampling), repeat)
                    ref = fr
                else:
                    sec, cpu, fr = timed(lambda m=method: video.sample_frames(path, size=args.size, mode=m,
                                                                         timeout=3600, **sampling), repeat)
                n = fr.images.shape[0]
                distinct = len(set(np.round(fr.timestamps, 6).tolist()))
                row[f"{method}_s"] = sec
                row[f"{method}_cpu_s"] = cpu
                row[f"{method}_frames_per_s"] = n / sec
                row[f"{method}_video_s_per_s"] = fr.duration / sec
                row[f"{method}_distinct"] = distinct
                row["frames"] = n
                if method == "exact" and ref is not None:
                    row["exact_equals_full"] = bool(np.array_equal(fr.images, ref.images)
                                                    and np.allclose(fr.timestamps, ref.timestamps))
                if method == "fast":
                    row["fast_keyframe_hits"] = fr.keyframe_hits
                    row["fast_mean_abs_offset_s"] = float(np.mean(np.abs(fr.timestamps - ref.timestamps)))
            row["exact_cpu_speedup"] = row["full_cpu_s"] / row["exact_cpu_s"]
            row["fast_cpu_speedup"] = row["full_cpu_s"] / row["fast_cpu_s"]
            row["exact_speedup"] = row["full_s"] / row["exact_s"]
            row["fast_speedup"] = row["full_s"] / row["fast_s"]
            rows.append(row)
            print(_fmt(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"python": sys.version.split()[0], "platform": platform.platform(), "ffmpeg": resolve_ffmpeg(),
            "cpus": __import__("os").cpu_count(), "size": args.size, "gop_s": args.gop}
    (RESULTS / "decode.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n" + _table(rows))
    print(f"\nwrote {RESULTS / 'decode.json'}")


def _fmt(r: dict[str, Any]) -> str:
    return (f"{r['video']:<34} {r['sampling']:<5} F={r['frames']:<4} full {r['full_s']:6.2f}s "
            f"exact {r['exact_s']:6.2f}s ({r['exact_speedup']:5.1f}x) fast {r['fast_s']:6.2f}s "
            f"({r['fast_speedup']:5.1f}x, {r['fast_distinct']} distinct)")


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("| video | sampling | F | null decode s | full s | exact s | fast s | exact x | fast x "
            "| exact x cpu | fast x cpu | exact fr/s | fast fr/s | exact vid-s/s | fast vid-s/s "
            "| fast distinct | exact==full |")
    sep = "|" + "---|" * (head.count("|") - 1)
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {int(r['duration_s'])}s {r['height']}p g{r['gop_s']:g} | {r['sampling']} | {r['frames']} | {r['decode_null_s']:.2f} "
            f"| {r['full_s']:.2f} | {r['exact_s']:.2f} | {r['fast_s']:.2f} | {r['exact_speedup']:.1f} "
            f"| {r['fast_speedup']:.1f} | {r['exact_cpu_speedup']:.1f} | {r['fast_cpu_speedup']:.1f} "
            f"| {r['exact_frames_per_s']:.1f} | {r['fast_frames_per_s']:.1f} "
            f"| {r['exact_video_s_per_s']:.1f} | {r['fast_video_s_per_s']:.1f} | {r['fast_distinct']}/{r['frames']} "
            f"| {r.get('exact_equals_full')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
