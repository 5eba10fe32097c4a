"""The Ray ingestion job end to end on a local 2-CPU Ray cluster (one session for the module).

A folder of 20 generated videos, 6 of them bad: every good video stored exactly once, every bad
one in the failures table with its reason; re-runs, changed and deleted files, rebuilds behind an
alias while searching, a server-style target (the distributed sink against an in-process server
actor) with injected transient errors and timeouts, and a job killed with SIGKILL then re-run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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
from job_configs import job_config_dict  # noqa: E402

from ray_jobs.config import JobConfig  # noqa: E402
from ray_jobs.decode import DecodeParams  # noqa: E402
from ray_jobs.pipeline import build_dataset, run_job  # noqa: E402
from ray_jobs.report import read_failures  # noqa: E402
from ray_jobs.retry import WriteError  # noqa: E402
from ray_jobs.rows import Col  # noqa: E402
from ray_jobs.sources import VideoSource  # noqa: E402
from ray_jobs.testing import FlakyClientFactory, RemoteClient, start_fake_server  # noqa: E402
from vtr_qdrant import SamplingConfig, VideoCollection  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402
from vtr_qdrant.store.qdrant import QdrantClientBackend  # noqa: E402

pytestmark = pytest.mark.ray

COLOURS = ["red", "green", "blue", "white", "yellow", "magenta", "cyan"]
GOOD = {f"{c}-{k}": (c, other) for k, other in enumerate(("black", "white")) for c in COLOURS}  # 14 videos
BAD = {  # name -> expected (stage, reason)
    "empty": ("decode", "empty_file"),
    "noise": ("decode", "invalid_data"),
    "audio": ("decode", "no_video_stream"),
    "truncated": ("decode", "truncated"),
    "sneaky": ("decode", "playlist"),
    "image": ("decode", "not_a_video"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    for name, colours in GOOD.items():
        vf.color_video(d / f"{name}.mp4", colours, seconds_per_color=0.5, size=(32, 32), fps=10)
    (d / "empty.mp4").write_bytes(b"")
    vf.random_bytes(d / "noise.mp4")
    vf.audio_only(d / "audio.mp4")
    vf.truncated_mp4(d / "truncated.mp4")
    vf.hls_playlist(d / "sneaky.mp4", "/etc/passwd")
    vf.image_as_mp4(d / "image.mp4")
    return d


def _copy(corpus: Path, dest: Path, names: Any = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in corpus.iterdir():
        if names is None or f.stem in names:
            shutil.copy(f, dest / f.name)
    return dest


def _cfg(tmp_path: Path, bundle: ModelBundle, **over: Any) -> JobConfig:
    base = {**job_config_dict(tmp_path, bundle), "write": {"backoff_base": 0.001, "backoff_max": 0.01}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "qdrant" else v
    return JobConfig.model_validate(base)


def _colour_query(bundle: ModelBundle, colour: str) -> np.ndarray:
    img = np.broadcast_to(np.array(vf.COLORS[colour], np.uint8), (1, 32, 32, 3)).copy()
    return bundle.frame_encoder().encode(img)[0]


def _open(path: Path) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QdrantClient(path=str(path))


def _failure_reasons(report: Any) -> dict[str, tuple[str, str]]:
    return {f.video_id: (f.stage, f.reason) for f in report.failures}


@pytest.mark.timeout(120)
def test_stages_run_unfused_and_carry_failures_as_rows(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, test_bundle, sources=[str(corpus)], decode={"videos_per_task": 2})
    sources = [VideoSource(str(corpus / "red-0.mp4"), "red-0"), VideoSource(str(corpus / "noise.mp4"), "noise")]
    params = DecodeParams(sampling=SamplingConfig(num_frames=4), image_size=32, timeout=30)
    ds = build_dataset(cfg, sources, params, test_bundle.fingerprint).materialize()
    stats = ds.stats()
    assert "Map(decode_row): 1 tasks executed" in stats  # both videos in one block: a bad one fails only its row
    # decode tasks and encode actors are separate operators (fused, they would run serially)
    assert "Map(decode_row)->MapBatches" not in stats and "MapBatches(FrameEncodeActor)" in stats
    rows = {r[Col.VIDEO_ID]: r for r in ds.take_all()}
    assert Col.IMAGES not in rows["red-0"]
    assert rows["red-0"][Col.FRAMES].shape == (4, 32) and rows["red-0"][Col.FRAMES].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows["red-0"][Col.FRAMES], axis=1), 1.0, rtol=1e-5)
    assert list(rows["red-0"][Col.TIMESTAMPS]) == pytest.approx([0.1, 0.3, 0.6, 0.8], abs=0.06)
    assert rows["red-0"][Col.ERROR_STAGE] == ""
    assert rows["noise"][Col.ERROR_STAGE] == "decode" and rows["noise"][Col.ERROR_REASON] == "invalid_data"
    assert rows["noise"][Col.FRAMES].shape == (0, 32)


@pytest.mark.timeout(240)
def test_local_path_target_exactly_once_incremental_and_prune(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    videos = _copy(corpus, tmp_path / "videos")
    cfg = _cfg(tmp_path, test_bundle, sources=[str(videos)], failures_format="parquet")
    first = run_job(cfg)
    assert first.write_mode == "driver" and first.listed == 20
    assert first.ingested_ids == sorted(GOOD) and first.frames == 4 * len(GOOD) and first.points == len(GOOD)
    assert _failure_reasons(first) == BAD
    table = {f.video_id: (f.stage, f.reason) for f in read_failures(first.failures_path)}  # type: ignore[arg-type]
    assert table == BAD and first.failures_path.endswith("failures.parquet")  # type: ignore[union-attr]
    saved = json.loads(Path(first.report_path).read_text())  # type: ignore[arg-type]
    assert saved["ingested"] == 14 and saved["failed"] == 6 and saved["frames_per_s"] > 0
    assert {"list", "plan", "decode", "encode", "write", "pipeline", "total"} <= set(saved["seconds"])
    assert "failures: decode/empty_file x1" in first.summary()

    client = _open(tmp_path / "qdrant")
    vc = VideoCollection(client, "vids", test_bundle)
    assert vc.count() == 14 and vc.count_points() == 14
    assert client.get_aliases().aliases[0].collection_name == first.written_to
    hit = vc.search(_colour_query(test_bundle, "blue"), limit=1, aggregation="max")[0]
    assert hit.video_id.startswith("blue-") and hit.payload["content_hash"]
    client.close()

    again = run_job(cfg)  # nothing changed: nothing encoded, nothing written
    assert again.ingested == 0 and again.skipped == 14 and again.frames == 0 and _failure_reasons(again) == BAD

    vf.color_video(videos / "cyan-1.mp4", ("red", "red"), seconds_per_color=0.5, size=(32, 32), fps=10)
    (videos / "green-0.mp4").unlink()
    third = run_job(cfg.model_copy(update={"prune": True}))
    assert third.ingested_ids == ["cyan-1"] and third.skipped == 12 and third.pruned_ids == ["green-0"]
    client = _open(tmp_path / "qdrant")
    vc = VideoCollection(client, "vids", test_bundle)
    assert vc.count() == 13 and vc.count_points() == 13 and vc.get("green-0") is None
    assert vc.search(_colour_query(test_bundle, "red"), limit=1, aggregation="mean")[0].video_id == "cyan-1"
    client.close()


@pytest.mark.timeout(240)
def test_rebuild_swaps_alias_while_searches_keep_working(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    names = [n for n in GOOD if n.endswith("-0")]
    videos = _copy(corpus, tmp_path / "videos", names)
    client = QdrantClient(":memory:")
    cfg = _cfg(tmp_path, test_bundle, sources=[str(videos)], write={"batch_videos": 2})
    first = run_job(cfg, client=client)
    assert first.ingested == 7
    searcher = VideoCollection(client, "vids", test_bundle)  # searchers use the alias
    query = _colour_query(test_bundle, "yellow")
    seen: list[tuple[int, str]] = []

    def search_during_rebuild(stats: Any) -> None:
        hits = searcher.search(query, limit=3)
        seen.append((searcher.count(), hits[0].video_id))

    rebuilt = run_job(cfg.model_copy(update={"rebuild": True, "sampling": SamplingConfig(num_frames=3)}),
                      client=client, on_batch=search_during_rebuild)
    assert rebuilt.alias_swapped and rebuilt.ingested == 7 and rebuilt.written_to != first.written_to
    assert len(seen) == 4 and all(s == (7, "yellow-0") for s in seen)  # the old version, complete, all along
    assert client.get_aliases().aliases[0].collection_name == rebuilt.written_to
    assert searcher.count() == 7 and searcher.get("yellow-0").frames.shape == (3, 32)  # type: ignore[union-attr]
    assert searcher.search(query, limit=1)[0].video_id == "yellow-0"
    third = run_job(cfg.model_copy(update={"rebuild": True, "sampling": None}), client=client)  # keeps the live sampling
    assert third.ingested == 7
    left = {c.name for c in client.get_collections().collections}
    assert left == {rebuilt.written_to, third.written_to}  # keep_versions=2: the first one dropped
    assert searcher.get("red-0").frames.shape == (3, 32)  # type: ignore[union-attr]

    def crash(stats: Any) -> None:
        raise RuntimeError("driver killed")

    with pytest.raises(RuntimeError, match="driver killed"):  # a failed rebuild changes nothing
        run_job(cfg.model_copy(update={"rebuild": True}), client=client, on_batch=crash)
    assert {c.name for c in client.get_collections().collections} == left
    assert client.get_aliases().aliases[0].collection_name == third.written_to and searcher.count() == 7


@pytest.mark.timeout(240)
def test_server_sink_with_transient_errors_and_timeouts(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    server = start_fake_server()
    manifest = tmp_path / "manifest.csv"
    lines = ["uri,video_id,colour"] + [f"{corpus / f.name},{f.stem},{f.stem.split('-')[0]}" for f in sorted(corpus.iterdir())]
    lines.append(f"{tmp_path / 'gone.mp4'},gone,none")
    manifest.write_text("\n".join(lines) + "\n")
    cfg = _cfg(tmp_path, test_bundle, sources=[], manifest=str(manifest), qdrant={"url": "http://qdrant.invalid:6333"},
               write={"batch_videos": 3, "max_request_bytes": 9000, "max_retries": 30, "concurrency": 2})
    flaky = FlakyClientFactory(server, seed=11, p_before=0.3, p_after=0.15)
    report = run_job(cfg, client=RemoteClient(server), client_factory=flaky, retry_seed=5)
    assert report.write_mode == "sink"
    assert report.ingested_ids == sorted(GOOD) and report.points == 14
    assert _failure_reasons(report) == {**BAD, "gone": ("input", "not_found")}
    assert report.retries > 0  # faults were injected and retried
    remote = RemoteClient(server)
    assert remote.count("vids").count == 14  # nothing lost, nothing duplicated
    sizes = ray.get(server.stats.remote())["upsert_sizes"]
    assert max(sizes) <= 2  # split under the request size limit (~4.4 kB per 4x32 point)
    assert sum(sizes) > 14  # upserts whose response was lost were sent again: ids made them idempotent
    vc = VideoCollection(QdrantClientBackend(RemoteClient(server)), "vids", test_bundle)
    stored = vc.get("magenta-1")
    assert stored is not None and stored.payload["colour"] == "magenta" and stored.frames.shape == (4, 32)

    again = run_job(cfg, client=RemoteClient(server), client_factory=flaky)
    assert again.ingested == 0 and again.skipped == 14

    dead = FlakyClientFactory(server, always_timeout=True)
    down = cfg.model_copy(update={"collection": "down", "write": cfg.write.model_copy(update={"max_retries": 2})})
    with pytest.raises(WriteError, match="after 2 retries"):
        run_job(down, client=RemoteClient(server), client_factory=dead)


@pytest.mark.timeout(240)
def test_killed_job_rerun_ends_with_exact_counts(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    videos = _copy(corpus, tmp_path / "videos")
    job = tmp_path / "job.yaml"
    job.write_text(
        f"sources: [{videos}]\ncollection: vids\nbundle: 'local-dir:{test_bundle.path}'\nvideo_id: stem\n"
        f"sampling: {{num_frames: 4}}\nqdrant: {{path: '{tmp_path / 'qdrant'}'}}\noutput_dir: '{tmp_path / 'out'}'\n"
        "decode: {max_tasks: 1}\nencode: {batch_videos: 1}\nwrite: {batch_videos: 1}\nray: {progress: false}\n"
    )
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "ray_jobs", "ingest", "--config", str(job)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    assert proc.stderr is not None
    for line in proc.stderr:
        if "wrote 2 videos" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    client = _open(tmp_path / "qdrant")
    partial = VideoCollection(client, "vids", test_bundle).count()
    client.close()
    assert 2 <= partial < 14  # killed mid-run

    from ray_jobs.cli import main

    assert main(["ingest", "--config", str(job), "--set", "decode.max_tasks=2"]) == 0  # same job, re-run
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["skipped"] == partial and report["ingested"] == 14 - partial and report["failed"] == 6
    client = _open(tmp_path / "qdrant")
    vc = VideoCollection(client, "vids", test_bundle)
    assert vc.count() == 14 and vc.count_points() == 14
    assert {vc.get(n).payload["video_id"] for n in GOOD} == set(GOOD)  # type: ignore[union-attr]
    client.close()
