"""The Ray ingestion job against Qdrant Edge (``qdrant.edge_path``), and Edge aliases.

Edge admits one handle per collection, so the job writes from the driver. Aliases are symbolic
links swapped by ``rename(2)``; a searcher in another process follows a swap on its next call and
releases the version the alias left. Covered: the target config (exactly one of url / path /
edge_path, env and CLI overrides), alias semantics, and a job on a folder of generated videos
(exact counts, failures table, no-op re-run, changed + pruned files, ``--rebuild`` while a
searcher in another process keeps searching, a failed rebuild changing nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

import video_factory as vf  # noqa: E402
from job_configs import job_config  # noqa: E402

from ray_jobs.cli import build_parser, overrides_from_args  # noqa: E402
from ray_jobs.config import JobConfig, load_config  # noqa: E402
from vtr_qdrant import VideoCollection  # noqa: E402
from vtr_qdrant.errors import ConfigError, StorageError  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402
from vtr_qdrant.store.edge import EdgeBackend  # noqa: E402

pytestmark = [pytest.mark.edge]

REPO = Path(__file__).resolve().parents[2]
GOOD = {f"{c}-0": (c, "black") for c in ("red", "green", "blue", "yellow", "magenta", "cyan")}
BAD = {"noise": ("decode", "invalid_data"), "audio": ("decode", "no_video_stream")}


# ------------------------------------------------------------------------------------ config


def test_target_is_exactly_one_of_url_path_edge_path(tmp_path: Path) -> None:
    base = {"collection": "v", "sources": ["/videos"]}
    cfg = JobConfig.model_validate({**base, "qdrant": {"edge_path": "/data/edge"}})
    assert cfg.qdrant.kind == "edge" and cfg.qdrant.embedded and cfg.write_from_driver
    for bad in ({}, {"url": "http://q:6333", "edge_path": "/e"}, {"path": "/p", "edge_path": "/e"}):
        with pytest.raises(ValueError, match="exactly one of qdrant.url"):
            JobConfig.model_validate({**base, "qdrant": bad})
    with pytest.raises(ConfigError, match="write.mode='sink' needs a Qdrant server.*edge target"):
        _ = JobConfig.model_validate({**base, "qdrant": {"edge_path": "/e"}, "write": {"mode": "sink"}}).write_from_driver

    job = tmp_path / "job.toml"
    job.write_text('collection = "v"\nsources = ["/videos"]\n[qdrant]\npath = "/p"\napi_key_env = "K"\n')
    assert load_config(job).qdrant.kind == "local"
    env = {"VTR_JOB__QDRANT__EDGE_PATH": "/from/env"}  # a higher layer's target replaces the file's
    cfg = load_config(job, environ=env)
    assert (cfg.qdrant.kind, cfg.qdrant.edge_path, cfg.qdrant.path, cfg.qdrant.api_key_env) == ("edge", "/from/env", None, "K")
    args = build_parser().parse_args(["ingest", "--config", str(job), "--qdrant-edge-path", "/from/cli"])
    cfg = load_config(job, overrides_from_args(args), environ={"VTR_JOB__QDRANT__URL": "http://q:6333"})
    assert cfg.qdrant.kind == "edge" and cfg.qdrant.edge_path == "/from/cli"
    cfg = load_config(job, {"qdrant.edge_path": "/set"}, environ={})
    assert cfg.qdrant.edge_path == "/set" and cfg.qdrant.path is None
    with pytest.raises(ConfigError, match="exactly one"):  # two targets in one layer stay an error
        load_config(job, {"qdrant.edge_path": "/a", "qdrant.url": "http://q"}, environ={})


# ------------------------------------------------------------------------------------ aliases


def _fill(edge: EdgeBackend, name: str, n: int, seed: int) -> None:
    vc = VideoCollection(edge, name, dim=8, create=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        f = rng.standard_normal((3, 8)).astype(np.float32)
        vc.upsert_embeddings(f"{name}-{i}", f / np.linalg.norm(f, axis=1, keepdims=True), np.arange(3.0))


SEARCHER = textwrap.dedent(
    """
    import sys
    from vtr_qdrant.store.edge import EdgeBackend
    b = EdgeBackend(sys.argv[1])
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        try:
            print(b.count("live"), flush=True)
        except Exception as e:
            print("ERR", type(e).__name__, e, flush=True)
    """
)


def test_edge_aliases_swap_atomically_and_searchers_in_other_processes_follow(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    edge = EdgeBackend(root)
    _fill(edge, "v1", 3, 0)
    _fill(edge, "v2", 5, 1)
    edge.set_alias("live", "v1")
    assert edge.aliases() == {"live": "v1"} and edge.list_collections() == ["v1", "v2"]
    assert os.readlink(root / "live") == "v1"  # relative: the folder can be moved
    assert edge.collection_exists("live") and VideoCollection(edge, "live", create=False).count() == 3
    edge.close()

    proc = subprocess.Popen([sys.executable, "-c", SEARCHER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def ask() -> str:
        proc.stdin.write("count\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        return proc.stdout.readline().strip()  # type: ignore[union-attr]

    try:
        assert ask() == "3"  # the searcher holds v1 now
        with pytest.raises(StorageError, match="already open"):
            edge.count("v1")
        edge.set_alias("live", "v2")  # v2 is not held by this process (closed above)
        assert ask() == "5"  # followed the swap on its next call
        assert edge.count("v1") == 3  # ... and released v1: this process can open it again
        assert edge.delete_collection("v1") and edge.list_collections() == ["v2"]
        with pytest.raises(StorageError, match="already open"):
            edge.count("v2")  # held by the searcher
    finally:
        proc.communicate("quit\n", timeout=30)
    assert proc.returncode == 0

    with pytest.raises(ConfigError, match="is an alias of collection 'v2'"):
        edge.delete_collection("live")
    with pytest.raises(ConfigError, match="is an alias"):
        edge.create_collection("live", dim=8, metadata={})
    with pytest.raises(ConfigError, match="is a collection, not an alias"):
        edge.set_alias("v2", "v2")
    with pytest.raises(ConfigError, match="no collection of that name"):
        edge.set_alias("other", "v9")
    with pytest.raises(ConfigError, match="no collection of that name"):
        edge.set_alias("other", "live")  # no alias of an alias
    assert edge.delete_collection("v2")  # a collection's aliases go with it (like Qdrant)
    assert edge.aliases() == {} and not (root / "live").is_symlink() and not edge.delete_alias("live")
    edge.close()


HOLDER = textwrap.dedent(
    """
    import sys
    from vtr_qdrant.store.edge import EdgeBackend
    b = EdgeBackend(sys.argv[1])
    print(b.count(sys.argv[2]), flush=True)
    sys.stdin.readline()
    """
)


def test_dropping_old_edge_versions_skips_one_another_process_holds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ray_jobs.incremental import drop_old_versions

    root = tmp_path / "edge"
    edge = EdgeBackend(root)
    names = [f"live__v2025010{d}T000000000000" for d in (1, 2, 3)]
    for i, n in enumerate(names):
        _fill(edge, n, 1, i)
    _fill(edge, "live_other", 1, 9)  # not a version of the alias: never touched
    edge.set_alias("live", names[2])
    edge.close()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), names[0]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "1"
        assert drop_old_versions(edge, "live", keep=1) == [names[1]]
        assert "kept old version live__v20250101" in caplog.text
    finally:
        proc.communicate("\n", timeout=30)
    assert drop_old_versions(edge, "live", keep=1) == [names[0]]  # released: dropped by the next run
    assert edge.list_collections() == [names[2], "live_other"] and edge.aliases() == {"live": names[2]}
    edge.close()


# ------------------------------------------------------------------------------------ the job

ray = pytest.importorskip("ray")
pytest.importorskip("imageio_ffmpeg")

from ray_jobs.pipeline import run_job  # noqa: E402
from ray_jobs.report import read_failures  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("edge-corpus")
    for name, colours in GOOD.items():
        vf.color_video(d / f"{name}.mp4", colours, seconds_per_color=0.5, size=(32, 32), fps=10)
    vf.random_bytes(d / "noise.mp4")
    vf.audio_only(d / "audio.mp4")
    return d


def _cfg(tmp_path: Path, bundle: ModelBundle, videos: Path, **over: Any) -> JobConfig:
    return job_config(tmp_path, bundle, **{"sources": [str(videos)], "qdrant": {"edge_path": str(tmp_path / "edge")}, **over})


def _colour_query(bundle: ModelBundle, colour: str) -> np.ndarray:
    img = np.broadcast_to(np.array(vf.COLORS[colour], np.uint8), (1, 32, 32, 3)).copy()
    return bundle.frame_encoder().encode(img)[0]


def _copy(corpus: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in corpus.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


@pytest.mark.ray
@pytest.mark.timeout(240)
def test_edge_target_exactly_once_incremental_prune_and_search(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    videos = _copy(corpus, tmp_path / "videos")
    cfg = _cfg(tmp_path, test_bundle, videos)
    first = run_job(cfg)
    assert (first.target, first.write_mode, first.listed) == ("edge", "driver", 8)
    assert first.ingested_ids == sorted(GOOD) and first.frames == 4 * len(GOOD) and first.points == len(GOOD)
    assert {f.video_id: (f.stage, f.reason) for f in read_failures(first.failures_path)} == BAD  # type: ignore[arg-type]
    saved = json.loads(Path(first.report_path).read_text())  # type: ignore[arg-type]
    assert saved["target"] == "edge" and saved["ingested"] == 6 and saved["failed"] == 2
    assert "edge target, writes from the driver" in first.summary()

    with EdgeBackend(tmp_path / "edge") as edge:
        assert edge.aliases() == {"vids": first.written_to}  # versioned collection behind an alias
        vc = VideoCollection(edge, "vids", test_bundle)
        assert vc.count() == 6 and vc.count_points() == 6
        for colour in ("blue", "magenta"):
            hit = vc.search(_colour_query(test_bundle, colour), limit=1, aggregation="max")[0]
            assert hit.video_id == f"{colour}-0" and hit.payload["content_hash"]

    again = run_job(cfg)  # unchanged: nothing re-encoded or written (only the bad files are retried)
    assert (again.ingested, again.skipped, again.frames, again.failed) == (0, 6, 0, 2)

    vf.color_video(videos / "cyan-0.mp4", ("red", "red"), seconds_per_color=0.5, size=(32, 32), fps=10)
    (videos / "green-0.mp4").unlink()
    third = run_job(cfg.model_copy(update={"prune": True}))
    assert third.ingested_ids == ["cyan-0"] and third.skipped == 4 and third.pruned_ids == ["green-0"]
    with EdgeBackend(tmp_path / "edge") as edge:
        vc = VideoCollection(edge, "vids", test_bundle)
        assert vc.count() == 5 and vc.count_points() == 5 and vc.get("green-0") is None
        assert vc.search(_colour_query(test_bundle, "red"), limit=2, aggregation="mean")[0].video_id == "cyan-0"


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_edge_rebuild_swaps_while_another_process_searches(ray_session: None, corpus: Path, test_bundle: ModelBundle, tmp_path: Path) -> None:
    videos = _copy(corpus, tmp_path / "videos")
    first = run_job(_cfg(tmp_path, test_bundle, videos))
    assert first.ingested == 6
    job = tmp_path / "job.yaml"
    job.write_text(
        f"sources: ['{videos}']\ncollection: vids\nbundle: 'local-dir:{test_bundle.path}'\nvideo_id: stem\n"
        f"sampling: {{num_frames: 3}}\nqdrant: {{edge_path: '{tmp_path / 'edge'}'}}\noutput_dir: '{tmp_path / 'out'}'\n"
        "ray: {progress: false}\nrebuild: true\n"
    )
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    # this process is the searcher: it holds the live version open for the whole rebuild
    searcher = VideoCollection(EdgeBackend(tmp_path / "edge"), "vids", test_bundle)
    query = _colour_query(test_bundle, "yellow")
    proc = subprocess.Popen([sys.executable, "-m", "ray_jobs", "ingest", "--config", str(job)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = set()
    deadline = time.monotonic() + 200
    while proc.poll() is None and time.monotonic() < deadline:
        hits = searcher.search(query, limit=3)  # never fails, never sees a half-built collection
        seen.add((searcher.backend.count("vids"), hits[0].video_id))
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert seen == {(6, "yellow-0")}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["alias_swapped"] and report["ingested"] == 6 and report["written_to"] != first.written_to
    # the searcher follows the swap on its next call
    assert searcher.backend.count("vids") == 6
    stored = searcher.get("yellow-0")
    assert stored is not None and stored.frames.shape == (3, 32)
    edge: EdgeBackend = searcher.backend  # type: ignore[assignment]
    assert edge.aliases() == {"vids": report["written_to"]}
    assert edge.list_collections() == sorted([first.written_to, report["written_to"]])
    edge.close()

    # a rebuild that dies changes nothing; the next successful one drops the stale version (keep 1)
    def crash(stats: Any) -> None:
        raise RuntimeError("driver killed")

    cfg = _cfg(tmp_path, test_bundle, videos, rebuild=True, keep_versions=1)
    with EdgeBackend(tmp_path / "edge") as edge:
        with pytest.raises(RuntimeError, match="driver killed"):
            run_job(cfg, client=edge, on_batch=crash)
        assert edge.aliases() == {"vids": report["written_to"]}
        assert edge.list_collections() == sorted([first.written_to, report["written_to"]])
        last = run_job(cfg.model_copy(update={"sampling": None}), client=edge)  # keeps the live sampling
        assert last.alias_swapped and edge.list_collections() == [last.written_to]
        assert VideoCollection(edge, "vids", test_bundle).get("red-0").frames.shape == (3, 32)  # type: ignore[union-attr]
