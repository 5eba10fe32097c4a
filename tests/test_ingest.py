"""add_videos: real ffmpeg decode -> ONNX encode -> Qdrant, over good and bad files; the CLI on top."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402

from vtr_qdrant import SamplingConfig, VideoCollection  # noqa: E402
from vtr_qdrant.cli.main import main  # noqa: E402
from vtr_qdrant.ingest import expand_sources  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402

GOOD = {
    "rgbw": ("red", "green", "blue", "white"),
    "yellow": ("yellow", "yellow", "black"),
    "cyan": ("cyan", "magenta"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for name, colors in GOOD.items():
        vf.color_video(d / f"{name}.mp4", colors)
    (d / "empty.mp4").write_bytes(b"")
    vf.random_bytes(d / "noise.mp4")
    vf.audio_only(d / "audio.mp4")
    vf.hls_playlist(d / "sneaky.mp4", "/etc/passwd")
    (d / "notes.txt").write_text("not a video")  # ignored: not a video extension
    return d


def _colour_query(bundle: ModelBundle, colour: str) -> np.ndarray:
    img = np.broadcast_to(np.array(vf.COLORS[colour], np.uint8), (1, 32, 32, 3)).copy()
    return bundle.frame_encoder().encode(img)[0]


@pytest.mark.timeout(180)
def test_mixed_folder_counts_reasons_and_content(tmp_path: Path, corpus: Path, test_bundle: ModelBundle) -> None:
    uris = expand_sources([corpus, corpus / "missing.mp4", corpus])
    assert len(uris) == 8 and uris[-1].endswith("missing.mp4")  # folder listed once, missing path kept
    client = QdrantClient(path=str(tmp_path / "q"))
    vc = VideoCollection(client, "v", test_bundle, sampling=SamplingConfig(num_frames=8))
    ids = [Path(u).stem for u in uris]
    report = vc.add_videos(uris, video_ids=ids, metadata={"source": "test"}, progress=False, timeout=30)
    assert sorted(report.ingested) == sorted(GOOD)
    reasons = {f.video_id: (f.stage, f.reason) for f in report.failed}
    assert set(reasons) == {"empty", "noise", "audio", "sneaky", "missing"}
    assert reasons["missing"] == ("input", "not_found")
    assert all(stage == "decode" for vid, (stage, _) in reasons.items() if vid != "missing")
    assert report.frames == 8 * len(GOOD)
    assert vc.count() == 3
    assert set(report.seconds) >= {"decode", "encode", "upsert", "total"}
    assert "FAILED" in report.summary()

    # the frame encoder sees colour: a "blue" query finds rgbw, at the moment blue is shown (2-3 s)
    hits = vc.search(_colour_query(test_bundle, "blue"), limit=3, aggregation="max")
    assert hits[0].video_id == "rgbw"
    assert 2.0 <= hits[0].moment.peak <= 3.0
    assert hits[0].payload["source"] == "test" and hits[0].payload["uri"].endswith("rgbw.mp4")
    assert hits[0].payload["duration"] == pytest.approx(4.0, abs=0.1)
    hits = vc.search(_colour_query(test_bundle, "yellow"), limit=1, aggregation="softmax")
    assert hits[0].video_id == "yellow" and hits[0].moment.end <= 2.1
    client.close()


@pytest.mark.timeout(180)
def test_rerun_is_idempotent_and_incremental(tmp_path: Path, corpus: Path, test_bundle: ModelBundle) -> None:
    work = tmp_path / "videos"
    work.mkdir()
    for name in GOOD:
        shutil.copy(corpus / f"{name}.mp4", work / f"{name}.mp4")
    uris = expand_sources([work])
    ids = [Path(u).stem for u in uris]
    client = QdrantClient(":memory:")
    vc = VideoCollection(client, "v", test_bundle, sampling=SamplingConfig(num_frames=4))
    first = vc.add_videos(uris, video_ids=ids, progress=False)
    assert len(first.ingested) == 3 and not first.failed
    again = vc.add_videos(uris, video_ids=ids, progress=False)
    assert again.ingested == [] and sorted(again.skipped) == sorted(ids) and again.frames == 0
    # change one file: only it is re-ingested
    vf.color_video(work / "cyan.mp4", ("red", "red"))
    third = vc.add_videos(uris, video_ids=ids, progress=False)
    assert third.ingested == ["cyan"] and len(third.skipped) == 2
    assert vc.count() == 3 and vc.count_points() == 3
    assert vc.search(_colour_query(test_bundle, "red"), limit=1, aggregation="mean")[0].video_id == "cyan"
    forced = vc.add_videos(uris, video_ids=ids, progress=False, force=True)
    assert len(forced.ingested) == 3 and vc.count() == 3


def test_ingest_argument_errors(test_bundle: ModelBundle, corpus: Path) -> None:
    vc = VideoCollection(QdrantClient(":memory:"), "v", test_bundle)
    with pytest.raises(ValueError, match="video_ids for"):
        vc.add_videos([corpus / "rgbw.mp4"], video_ids=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        vc.add_videos([corpus / "rgbw.mp4", corpus / "cyan.mp4"], video_ids=["a", "a"])
    with pytest.raises(ValueError, match="matches no file"):
        expand_sources([str(corpus / "*.nope")])


@pytest.mark.timeout(180)
def test_cli_ingest_search_info(tmp_path: Path, corpus: Path, test_bundle: ModelBundle, capsys: pytest.CaptureFixture[str]) -> None:
    qpath = str(tmp_path / "q")
    bundle = f"local-dir:{test_bundle.path}"
    common = ["--collection", "vids", "--qdrant-path", qpath, "--bundle", bundle]
    rc = main(["ingest", str(corpus / "rgbw.mp4"), str(corpus / "empty.mp4"), *common, "--num-frames", "4",
               "--no-progress", "--report", str(tmp_path / "r.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ingested 1" in out and "failed 1" in out
    assert json.loads((tmp_path / "r.json").read_text())["failed"][0]["stage"] == "decode"
    assert main(["search", "a red circle", *common, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 1 and hits[0]["video_id"] == str((corpus / "rgbw.mp4").resolve())
    assert main(["info", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["collection"]["videos"] == 1 and info["bundle"]["name"] == "test-bundle"
    # a missing collection is a clean error with exit code 2, not a traceback
    assert main(["search", "x", "--collection", "nope", "--qdrant-path", qpath, "--bundle", bundle]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.path.isdir(qpath)


def test_cli_ray_only_flags_need_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["ingest", str(tmp_path), "--collection", "c", "--qdrant-path", str(tmp_path / "q"), "--rebuild"])
    assert rc == 2 and "need --ray" in capsys.readouterr().err
