"""The Ray job over hostile sources and through a kill -9 mid-write of a long video.

* A folder with a FIFO, a /dev/zero link, a link loop, a broken link and a valid video whose name is
  not UTF-8: the job ends in time, ingests the good videos and reports every other entry.
* The driver (which writes for a local-folder target) is SIGKILLed between the segment upserts of
  a long video that replaces an older version, then at its flip: the old version stays whole until
  the new one is complete, and the re-run leaves exactly the new one, frame for frame equal to a
  clean ingest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

ray = pytest.importorskip("ray")
pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402
from job_configs import job_config  # noqa: E402

from ray_jobs.config import JobConfig  # noqa: E402
from ray_jobs.pipeline import run_job  # noqa: E402
from vtr_qdrant import VideoCollection  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402

pytestmark = pytest.mark.ray

NON_UTF8 = b"ray-\xe9\xff.mp4"
COLOURS = ["red", "green", "blue", "white", "yellow", "magenta", "cyan", "black"]


def _cfg(tmp_path: Path, bundle: ModelBundle, sources: list[str], **over: Any) -> JobConfig:
    return job_config(tmp_path, bundle, **{"sources": sources, "decode": {"timeout": 5}, **over})


def _open(path: Path) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QdrantClient(path=str(path))


@pytest.mark.timeout(240)
def test_job_reports_hostile_sources_and_ends_in_time(ray_session: None, test_bundle: ModelBundle, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    vf.color_video(d / "good.mp4", ("red", "green"), seconds_per_color=0.5, size=(32, 32), fps=10)
    vf.color_video(d / "tmp.mp4", ("blue", "white"), seconds_per_color=0.5, size=(32, 32), fps=10)
    os.rename(d / "tmp.mp4", os.path.join(os.fsencode(d), NON_UTF8))
    vf.hostile_entries(d)
    t0 = time.monotonic()
    report = run_job(_cfg(tmp_path, test_bundle, [str(d)]))
    assert time.monotonic() - t0 < 120
    odd = os.fsdecode(NON_UTF8)[:-4].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    assert sorted(report.ingested_ids) == sorted(["good", odd])
    reasons = {f.video_id: (f.stage, f.reason) for f in report.failures}
    assert reasons == {
        "pipe": ("input", "not_a_regular_file"),
        "zero": ("input", "not_a_regular_file"),
        "loop-a": ("input", "symlink_loop"),
        "loop-b": ("input", "symlink_loop"),
        "broken": ("input", "broken_symlink"),
    }
    assert Path(report.failures_path or "").exists()
    client = _open(tmp_path / "qdrant")
    try:
        stored = VideoCollection(client, "vids", test_bundle).get(odd)
        assert stored is not None and os.fsencode(stored.source or "").endswith(NON_UTF8)
    finally:
        client.close()


# ------------------------------------------------------------------------------ kill -9 mid-write

KILLER = """
import os, signal, sys
from vtr_qdrant.store import qdrant, videos
videos.UPSERT_BATCH_POINTS = 4  # a 16-segment video: 4 upserts, then its flip, then its delete
n, calls = int(sys.argv[1]), [0]
def counted(name):
    orig = getattr(qdrant.QdrantClientBackend, name)
    def call(self, *a, **k):
        out = orig(self, *a, **k)
        calls[0] += 1
        if calls[0] == n:
            sys.stderr.write(f"killing after write request {n} ({name})\\n"); sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(qdrant.QdrantClientBackend, name, call)
for name in ("upsert", "set_payload", "delete"):
    counted(name)
from ray_jobs.cli import main
sys.exit(main(["ingest", "--config", sys.argv[2]]))
"""


def _long_video(path: Path, shift: int) -> None:
    colours = [COLOURS[(i + shift) % len(COLOURS)] for i in range(16)]
    vf.color_video(path, colours, seconds_per_color=1.0, size=(32, 32), fps=5)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_driver_killed_mid_write_then_rerun(ray_session: None, test_bundle: ModelBundle, tmp_path: Path) -> None:
    sampling = {"fps": 1.0, "segment_seconds": 1.0}  # 16 frames, one segment (point) per second

    # the reference: the long video ingested cleanly
    (tmp_path / "clean").mkdir()
    _long_video(tmp_path / "clean" / "long.mp4", shift=3)
    run_job(_cfg(tmp_path / "clean", test_bundle, [str(tmp_path / "clean" / "long.mp4")], sampling=sampling))
    client = _open(tmp_path / "clean" / "qdrant")
    clean = VideoCollection(client, "vids", test_bundle).get("long")
    client.close()
    assert clean is not None and len(clean.point_ids) == 16

    from ray_jobs.cli import main

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    for kill_after in (2, 5):  # between segment upserts; right after the flip (before the delete)
        work = tmp_path / f"kill{kill_after}"
        (work / "in").mkdir(parents=True)
        _long_video(work / "in" / "long.mp4", shift=0)  # version 1
        cfg = _cfg(work, test_bundle, [str(work / "in")], sampling=sampling)
        run_job(cfg)
        client = _open(work / "qdrant")
        old = VideoCollection(client, "vids", test_bundle).get("long")
        client.close()
        assert old is not None

        _long_video(work / "in" / "long.mp4", shift=3)  # version 2: the file changed
        job = work / "job.json"
        job.write_text(cfg.model_dump_json())
        p = subprocess.run([sys.executable, "-c", KILLER, str(kill_after), str(job)], env=env,
                           capture_output=True, text=True, timeout=240)
        assert p.returncode == -9, p.stderr[-3000:]

        client = _open(work / "qdrant")
        vc = VideoCollection(client, "vids", test_bundle)
        mid = vc.get("long")
        assert mid is not None and vc.count() == (2 if kill_after == 5 else 1)
        want = old if kill_after < 5 else clean  # whole old version until the flip, whole new one after
        np.testing.assert_allclose(mid.frames, want.frames, atol=1e-6)
        hits = vc.search("red", limit=5)
        assert [h.video_id for h in hits] == ["long"]
        client.close()

        assert main(["ingest", "--config", str(job), "--verify"]) == 0  # the re-run repairs, then scans
        scan = json.loads((work / "out" / "report.json").read_text())["verify"]
        assert scan["videos"] == 1 and scan["problems"] == [] and scan["remaining"] == 0
        client = _open(work / "qdrant")
        vc = VideoCollection(client, "vids", test_bundle)
        final = vc.get("long")
        assert final is not None and vc.count() == 1 and vc.count_points() == 16
        np.testing.assert_allclose(final.frames, clean.frames, atol=1e-6)
        np.testing.assert_allclose(final.timestamps, clean.timestamps)
        assert vc.store.states(["long"])["long"].whole
        client.close()
        shutil.rmtree(work / "qdrant")
