"""`vtr-qdrant ingest` over hostile sources, as a separate process with a deadline.

A FIFO named ``x.mp4``, a symlink to ``/dev/zero``, a link loop, a broken link, a folder named like
a video and a valid video whose name is not UTF-8 sit beside good videos. The run must end in
time, ingest the good ones (the non-UTF-8 one too, its name kept losslessly), report every other
entry with its reason, and write its JSON report. A second process on the same local-mode folder
gets a clear error and exit code 2, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402

from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402

NON_UTF8 = b"clip-\xe9\xff.mp4"

CLI = [sys.executable, "-c", "import sys; from vtr_qdrant.cli.main import main; sys.exit(main())"]


def hostile_corpus(root: Path) -> dict[str, str]:
    """Videos and hostile entries; name -> expected outcome ("ingested" or the failure reason)."""
    root.mkdir()
    vf.color_video(root / "good.mp4", ("red", "green"))
    vf.color_video(root / "also-good.mp4", ("blue", "white"))
    os.rename(root / "also-good.mp4", os.path.join(os.fsencode(root), NON_UTF8))
    return {"good.mp4": "ingested", os.fsdecode(NON_UTF8): "ingested", **vf.hostile_entries(root)}


def _run(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p, time.monotonic() - t0


@pytest.mark.timeout(240)
def test_cli_reports_every_hostile_source_and_ends_in_time(tmp_path: Path, test_bundle: ModelBundle) -> None:
    from vtr_qdrant.video.source import default_video_id

    expected = hostile_corpus(tmp_path / "in")
    folder_named_video = tmp_path / "dir.mp4"
    folder_named_video.mkdir()
    common = ["--collection", "c", "--qdrant-path", str(tmp_path / "q"), "--bundle", f"local-dir:{test_bundle.path}"]
    report_file = tmp_path / "report.json"
    p, seconds = _run(
        ["ingest", str(tmp_path / "in"), str(folder_named_video), *common, "--num-frames", "4",
         "--timeout", "5", "--no-progress", "--report", str(report_file)],
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert seconds < 90, seconds  # nothing waited on a FIFO or read /dev/zero
    report = json.loads(report_file.read_text(encoding="utf-8"))
    in_dir = tmp_path / "in"
    want_ids = {default_video_id(os.path.join(str(in_dir), n)): outcome for n, outcome in expected.items()}
    got = {vid: "ingested" for vid in report["ingested"]}
    got.update({f["video_id"]: f["reason"] for f in report["failed"]})
    dir_id = default_video_id(str(folder_named_video))
    assert got == {**want_ids, dir_id: "is_a_directory"}
    assert all(f["stage"] == "input" for f in report["failed"])
    for f in report["failed"]:
        f["uri"].encode("utf-8")  # every reported name is valid UTF-8
    assert "FAILED" in p.stdout

    # the video with a non-UTF-8 name is searchable and keeps its exact name
    from qdrant_client import QdrantClient

    from vtr_qdrant import VideoCollection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(tmp_path / "q"))
    try:
        vc = VideoCollection(client, "c", test_bundle)
        raw = os.path.join(str(in_dir), os.fsdecode(NON_UTF8))
        stored = vc.get(default_video_id(raw))
        assert stored is not None and stored.source == raw
        assert os.fsencode(stored.source).endswith(NON_UTF8)
        assert vc.count() == 2

        # a second process on the same local folder: a clear error, exit code 2
        p2, _ = _run(["search", "red", *common], timeout=120)
        assert p2.returncode == 2, p2.stderr[-2000:]
        assert "in use by another process" in p2.stderr and "Traceback" not in p2.stderr
        assert "--qdrant-url" in p2.stderr and "Edge" in p2.stderr
    finally:
        client.close()

    # a re-run skips the ingested videos and reports the same failures
    p3, _ = _run(["ingest", str(tmp_path / "in"), *common, "--no-progress", "--report", str(report_file)], timeout=120)
    assert p3.returncode == 0, p3.stderr[-3000:]
    again = json.loads(report_file.read_text(encoding="utf-8"))
    assert sorted(again["skipped"]) == sorted(report["ingested"]) and again["ingested"] == []
    assert len(again["failed"]) == 5
