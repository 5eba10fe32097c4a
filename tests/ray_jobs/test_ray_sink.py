"""Units of the Ray job that need no Ray cluster: config, sources, retries, request splitting, writer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

pytest.importorskip("ray")

from ray_jobs.config import JobConfig, load_config  # noqa: E402
from ray_jobs.incremental import drop_old_versions, resolve_target, swap_alias, versioned_name  # noqa: E402
from ray_jobs.retry import RetryingBackend, RetryPolicy, WriteError, is_transient, split_by_size  # noqa: E402
from ray_jobs.rows import Col  # noqa: E402
from ray_jobs.sink import VideoWriter, open_writer_collection  # noqa: E402
from ray_jobs.sources import list_sources, read_manifest, staged  # noqa: E402
from ray_jobs.testing import FlakyClient  # noqa: E402
from vtr_qdrant import VideoCollection  # noqa: E402
from vtr_qdrant.errors import ConfigError, InvalidInputError  # noqa: E402
from vtr_qdrant.store.points import make_points  # noqa: E402
from vtr_qdrant.store.qdrant import QdrantClientBackend  # noqa: E402

BASE = {"sources": ["/videos"], "collection": "vids", "qdrant": {"path": "/tmp/q"}}


# ------------------------------------------------------------------------------------------ config


def test_config_file_env_and_flag_precedence(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text("sources: [/videos]\ncollection: vids\nqdrant: {url: 'http://q:6333'}\nencode: {batch_videos: 4, num_gpus: 1}\n")
    env = {"VTR_JOB__ENCODE__BATCH_VIDEOS": "6", "VTR_JOB__WRITE__MAX_RETRIES": "3", "OTHER": "x"}
    cfg = load_config(f, {"encode.batch_videos": 8}, environ=env)
    assert cfg.encode.batch_videos == 8  # flag > env > file
    assert cfg.write.max_retries == 3 and cfg.encode.num_gpus == 1.0
    assert cfg.encode.resolved_device == "cuda" and not cfg.write_from_driver
    toml = tmp_path / "job.toml"
    toml.write_text('sources = ["/v"]\ncollection = "c"\n[qdrant]\npath = "/tmp/q"\n[sampling]\nnum_frames = 4\n')
    cfg = load_config(toml, environ={})
    assert cfg.sampling is not None and cfg.sampling.num_frames == 4 and cfg.write_from_driver


def test_config_errors_are_loud(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="encode.batch_vidoes"):  # typo: extra="forbid"
        load_config(None, {**BASE, "encode": {"batch_vidoes": 4}}, environ={})
    with pytest.raises(ConfigError, match="exactly one of qdrant.url"):
        load_config(None, {**BASE, "qdrant": {"url": "http://x", "path": "/q"}}, environ={})
    with pytest.raises(ConfigError, match="fuse decoding into the encode actor"):
        load_config(None, {**BASE, "encode": {"num_cpus": 1.0}}, environ={})
    load_config(None, {**BASE, "encode": {"num_cpus": 1.0, "num_gpus": 0.5}}, environ={})  # a GPU actor is distinct
    with pytest.raises(ConfigError, match="sources"):
        load_config(None, {"collection": "c", "qdrant": {"path": "/q"}}, environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="server"):
        _ = JobConfig.model_validate({**BASE, "write": {"mode": "sink"}}).write_from_driver


# ------------------------------------------------------------------------------------------ sources


def test_sources_ids_hashes_and_manifests(tmp_path: Path) -> None:
    (tmp_path / "v" / "sub").mkdir(parents=True)
    (tmp_path / "v" / "a.mp4").write_bytes(b"aaa")
    (tmp_path / "v" / "sub" / "b.mkv").write_bytes(b"bbb")
    (tmp_path / "v" / "notes.txt").write_text("x")
    cfg = JobConfig.model_validate({**BASE, "sources": [str(tmp_path / "v")], "video_id": "relative", "metadata": {"src": "t"}})
    got = {s.video_id: s for s in list_sources(cfg)}
    assert set(got) == {"a.mp4", "sub/b.mkv"}
    assert got["a.mp4"].content_hash and got["a.mp4"].content_hash != got["sub/b.mkv"].content_hash
    assert got["a.mp4"].metadata == {"src": "t"}

    rows = [{"uri": "v/a.mp4", "video_id": "A", "category": "cats", "year": 2020}, {"uri": "missing.mp4", "category": None, "year": 2021}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "m.csv").write_text("uri,video_id,category,year\nv/a.mp4,A,cats,2020\nmissing.mp4,,,2021\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    for name in ("m.jsonl", "m.csv", "m.parquet"):
        srcs = read_manifest(str(tmp_path / name), video_id="stem")
        assert [s.video_id for s in srcs] == ["A", "missing"], name
        assert srcs[0].uri == str(tmp_path / "v" / "a.mp4") and srcs[0].metadata == {"category": "cats", "year": 2020}
        assert srcs[1].metadata == {"year": 2021}  # null cells left out
    cfg = JobConfig.model_validate({**BASE, "sources": [], "manifest": str(tmp_path / "m.csv"), "metadata": {"src": "t"}})
    srcs = list_sources(cfg)
    assert srcs[0].metadata == {"src": "t", "category": "cats", "year": 2020} and srcs[1].content_hash is None
    (tmp_path / "bad.csv").write_text("path,video_id\nx,y\n")
    with pytest.raises(ConfigError, match="needs a 'uri' column"):
        read_manifest(str(tmp_path / "bad.csv"))
    (tmp_path / "reserved.csv").write_text("uri,duration\nx.mp4,3\n")
    with pytest.raises(ConfigError, match="reserved"):
        read_manifest(str(tmp_path / "reserved.csv"))
    cfg = JobConfig.model_validate({**BASE, "sources": [str(tmp_path / "v"), str(tmp_path / "v" / "sub")], "video_id": "stem"})
    list_sources(cfg)  # same file twice: fine
    (tmp_path / "v" / "sub" / "a.mp4").write_bytes(b"other")
    with pytest.raises(InvalidInputError, match="given to two sources"):
        list_sources(cfg)


def test_remote_sources_are_staged_and_cleaned_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyarrow import fs as pafs

    import ray_jobs.sources as sources

    store = tmp_path / "bucket"
    store.mkdir()
    (store / "clip.mp4").write_bytes(b"video bytes")
    monkeypatch.setattr(sources, "_filesystem", lambda uri: (pafs.LocalFileSystem(), str(store / uri.split("/")[-1])))
    stage = tmp_path / "stage"
    stage.mkdir()
    with staged("s3://bucket/clip.mp4", staging_dir=str(stage)) as local:
        assert local.endswith(".mp4") and Path(local).read_bytes() == b"video bytes"
    assert list(stage.iterdir()) == []
    with pytest.raises(RuntimeError), staged("s3://bucket/clip.mp4", staging_dir=str(stage)):
        raise RuntimeError("decode crashed")
    assert list(stage.iterdir()) == []  # cleaned up whatever happens
    with pytest.raises(Exception, match="does not exist") as e, staged("s3://bucket/gone.mp4", staging_dir=str(stage)):
        pass
    assert getattr(e.value, "reason", None) == "not_found" and list(stage.iterdir()) == []
    assert sources.content_hash("s3://bucket/clip.mp4").startswith("stat-")


def test_remote_folders_and_globs_are_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyarrow import fs as pafs

    import ray_jobs.sources as sources

    store = tmp_path / "bucket"
    (store / "day1").mkdir(parents=True)
    for name in ("day1/a.mp4", "day1/b.MOV", "day1/notes.txt", "c.mp4"):
        (store / name).write_bytes(name.encode())
    monkeypatch.setattr(sources, "_filesystem", lambda uri: (pafs.LocalFileSystem(), str(store) + uri[len("s3://bucket"):]))
    cfg = JobConfig.model_validate({**BASE, "sources": ["s3://bucket/", "s3://bucket/day1/*.mp4", "s3://bucket/gone.mp4"],
                                    "video_id": "path"})
    got = {s.video_id: s.content_hash for s in list_sources(cfg)}
    assert set(got) == {"s3://bucket/c.mp4", "s3://bucket/day1/a.mp4", "s3://bucket/day1/b.MOV", "s3://bucket/gone.mp4"}
    assert got["s3://bucket/gone.mp4"] is None and got["s3://bucket/c.mp4"].startswith("stat-")  # type: ignore[union-attr]
    with pytest.raises(InvalidInputError, match="matches no file"):
        list_sources(cfg.model_copy(update={"sources": ["s3://bucket/*.mkv"]}))


# ------------------------------------------------------------------------------------------ retries


def test_transient_error_classification() -> None:
    h = httpx.Headers()
    assert is_transient(UnexpectedResponse(503, "", b"", h)) and is_transient(UnexpectedResponse(429, "", b"", h))
    assert is_transient(UnexpectedResponse(408, "", b"", h))
    assert not is_transient(UnexpectedResponse(400, "Bad Request", b"", h))
    assert not is_transient(UnexpectedResponse(404, "", b"", h))
    assert is_transient(ResponseHandlingException(httpx.ReadTimeout("t"))) and is_transient(TimeoutError())
    assert is_transient(httpx.ConnectError("refused")) and not is_transient(ValueError("bad"))
    assert not is_transient(WriteError("gave up"))

    class FakeCode:
        def __init__(self, name: str) -> None:
            self.name = name

    def rpc(name: str) -> Exception:
        cls = type("_InactiveRpcError", (Exception,), {"code": lambda self: FakeCode(name), "__module__": "grpc._channel"})
        return cls()  # type: ignore[no-any-return]

    assert is_transient(rpc("UNAVAILABLE")) and is_transient(rpc("RESOURCE_EXHAUSTED"))
    assert not is_transient(rpc("INVALID_ARGUMENT"))


def test_retry_policy_backoff_is_exponential_jittered_and_bounded() -> None:
    sleeps: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] <= 4:
            raise TimeoutError("t")
        return "ok"

    policy = RetryPolicy(max_retries=5, base=1.0, max_delay=3.0, seed=0, sleep=sleeps.append)
    assert policy.call("op", flaky) == "ok" and policy.retries == 4
    caps = [1.0, 2.0, 3.0, 3.0]
    assert all(0 <= s <= c for s, c in zip(sleeps, caps)) and len(set(sleeps)) == 4
    policy = RetryPolicy(max_retries=2, base=0.0, sleep=sleeps.append)
    with pytest.raises(WriteError, match="after 2 retries"):
        policy.call("upsert", lambda: (_ for _ in ()).throw(TimeoutError("down")))
    with pytest.raises(ValueError):  # not transient: no retry
        RetryPolicy(sleep=sleeps.append).call("op", lambda: (_ for _ in ()).throw(ValueError("bad request")))


def _points(n: int, frames: int = 4, dim: int = 32) -> list:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = rng.standard_normal((frames, dim)).astype(np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        out += make_points(f"v{i}", f, np.arange(frames, dtype=np.float64), model_fingerprint="x")
    return out


def test_split_by_size_keeps_order_and_limit() -> None:
    pts = _points(10)
    from ray_jobs.retry import estimate_request_bytes

    one = estimate_request_bytes(pts[0])
    chunks = split_by_size(pts, 3 * one + 10)
    assert [p.id for c in chunks for p in c] == [p.id for p in pts]
    assert all(sum(estimate_request_bytes(p) for p in c) <= 3 * one + 10 for c in chunks) and len(chunks) == 4
    assert split_by_size(pts[:2], 10) == [[pts[0]], [pts[1]]]  # an oversized point still goes, alone
    # the estimate is an upper bound of the real JSON body
    from qdrant_client import models

    body = json.dumps(models.PointStruct(id=pts[0].id, vector={"frames": pts[0].frames.tolist(), "pooled": pts[0].pooled.tolist()},
                                         payload=pts[0].payload).model_dump(mode="json"))
    assert len(body) <= one


def _rows(n: int, dim: int = 32, bad: tuple[int, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        f = rng.standard_normal((3, dim)).astype(np.float32)
        row = {Col.URI: f"/v/{i}.mp4", Col.VIDEO_ID: f"v{i}", Col.METADATA: json.dumps({"i": i}), Col.CONTENT_HASH: f"h{i}",
               Col.FRAMES: f, Col.TIMESTAMPS: np.arange(3.0), Col.DURATION: 3.0, Col.DECODE_S: 0.1, Col.ENCODE_S: 0.05,
               Col.ERROR_STAGE: "", Col.ERROR_TYPE: "", Col.ERROR_REASON: "", Col.ERROR_MESSAGE: ""}
        if i in bad:
            row[Col.METADATA] = json.dumps({"video_id": "clash"})  # reserved key: rejected, alone
        rows.append(row)
    return rows


def test_writer_with_flaky_client_loses_and_duplicates_nothing(test_bundle) -> None:  # type: ignore[no-untyped-def]
    client = QdrantClient(":memory:")
    VideoCollection(client, "c", test_bundle)
    cfg = JobConfig.model_validate({**BASE, "write": {"batch_videos": 3, "backoff_base": 0.0, "max_retries": 12}}).write
    flaky = FlakyClient(client, seed=3, p_before=0.4, p_after=0.2)
    policy = RetryPolicy.from_config(cfg, seed=0)
    policy.sleep = lambda s: None
    vc = open_writer_collection(flaky, "c", cfg, policy=policy)
    failed = _rows(1)[0] | {Col.VIDEO_ID: "broken", Col.ERROR_STAGE: "decode", Col.ERROR_TYPE: "VideoDecodeError",
                             Col.ERROR_REASON: "invalid_data", Col.ERROR_MESSAGE: "nope", Col.FRAMES: np.zeros((0, 32), np.float32)}
    stats = VideoWriter(vc, batch_videos=cfg.batch_videos).write_rows([*_rows(10, bad=(4,)), failed])
    assert sorted(stats["ingested"]) == sorted(f"v{i}" for i in range(10) if i != 4)
    assert {(f["video_id"], f["stage"]) for f in stats["failed"]} == {("v4", "upsert"), ("broken", "decode")}
    assert flaky.injected > 5 and policy.retries == flaky.injected
    assert client.count("c").count == 9 and stats["points"] == 9 and stats["frames"] == 27
    assert isinstance(vc.backend, RetryingBackend)


def test_alias_versions_swap_and_cleanup() -> None:
    client = QdrantClient(":memory:")
    t = resolve_target(client, "vids", rebuild=False)
    assert t.live is None and t.swap and t.write_to.startswith("vids__v")
    names = [versioned_name("vids", now=1_700_000_000.0 + i) for i in range(4)]
    assert names == sorted(names)
    for n in names:
        VideoCollection(QdrantClientBackend(client), n, dim=4)
    swap_alias(client, "vids", names[0])
    assert resolve_target(client, "vids", rebuild=False).write_to == names[0]
    r = resolve_target(client, "vids", rebuild=True)
    assert r.live == names[0] and r.swap and r.write_to not in names
    swap_alias(client, "vids", names[2])
    assert client.get_aliases().aliases[0].collection_name == names[2]
    assert drop_old_versions(client, "vids", keep=2) == [names[1], names[0]]  # live + newest other kept
    assert {c.name for c in client.get_collections().collections} == {names[2], names[3]}
    VideoCollection(QdrantClientBackend(client), "plain", dim=4)
    assert resolve_target(client, "plain", rebuild=False).write_to == "plain"
    with pytest.raises(ConfigError, match="plain collection, not an alias"):
        resolve_target(client, "plain", rebuild=True)


# ------------------------------------------------------------------------------------------ CLI


def test_example_job_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[2] / "examples" / "ray_job.yaml", environ={})
    assert cfg.collection == "videos" and cfg.write_from_driver and cfg.encode.resolved_device == "cpu"


def test_cli_flags_map_onto_the_job_config(tmp_path: Path) -> None:
    from ray_jobs.cli import build_parser, overrides_from_args

    job = tmp_path / "job.yaml"
    job.write_text("sources: [/a]\ncollection: c\nqdrant: {path: /q}\nsampling: {num_frames: 12}\n")
    args = build_parser().parse_args(["ingest", "--config", str(job), "/b", "--qdrant-url", "http://q:6333", "--fps", "2",
                                      "--num-gpus", "1", "--encode-actors", "1:4", "--rebuild", "--set", "write.batch_videos=32",
                                      "--no-progress"])
    cfg = load_config(args.config, overrides_from_args(args), environ={})
    assert cfg.sources == ["/b"] and cfg.qdrant.url == "http://q:6333" and cfg.qdrant.path is None
    assert cfg.sampling is not None and cfg.sampling.fps == 2 and cfg.sampling.num_frames is None  # section replaced
    assert (cfg.encode.num_gpus, cfg.encode.min_actors, cfg.encode.max_actors) == (1, 1, 4)
    assert cfg.rebuild and not cfg.prune and cfg.write.batch_videos == 32 and not cfg.ray.progress


def test_vtr_qdrant_ingest_args_map_onto_the_job_config() -> None:
    """``vtr-qdrant ingest --ray`` hands its parsed namespace to ``ray_jobs.cli_ingest``."""
    from ray_jobs.cli import overrides_from_args
    from vtr_qdrant.cli.main import build_parser

    args = build_parser().parse_args(["ingest", "/videos", "--collection", "vids", "--num-frames", "8", "--no-progress"])
    over = overrides_from_args(args)
    over.setdefault("qdrant", {"path": args.qdrant_path})
    cfg = load_config(None, over, environ={})
    assert cfg.sources == ["/videos"] and cfg.qdrant.path == "./qdrant_data" and cfg.sampling.num_frames == 8  # type: ignore[union-attr]
    assert cfg.decode.timeout == 120.0 and not cfg.force and not cfg.ray.progress


def test_cli_ingest_keeps_job_config_over_parser_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray_jobs.cli as rcli
    from vtr_qdrant.cli.main import build_parser

    job = tmp_path / "job.yaml"
    job.write_text("sources: [/a]\ncollection: c\nqdrant: {url: 'http://q:6333'}\nforce: true\ndecode: {timeout: 30}\n")
    seen: dict = {}
    monkeypatch.setattr(rcli, "_run", lambda path, over, report=None: seen.update(cfg=load_config(path, over, environ={})) or 0)
    args = build_parser().parse_args(["ingest", "/b", "--collection", "c2"])
    args.job_config = str(job)
    assert rcli.cli_ingest(args) == 0
    cfg = seen["cfg"]
    assert cfg.qdrant.url == "http://q:6333" and cfg.force and cfg.decode.timeout == 30  # the file wins over defaults
    assert cfg.sources == ["/b"] and cfg.collection == "c2"  # given flags win over the file


def test_encode_actor_rehashes_a_bundle_unless_the_driver_verified_these_files(test_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from ray_jobs.encode import FrameEncodeActor, bundle_stamp
    from vtr_qdrant.errors import ArtifactError

    copy = tmp_path / "bundle"
    shutil.copytree(test_bundle.path, copy)
    stamp = bundle_stamp(copy, "node-a")
    assert stamp == bundle_stamp(copy, "node-a") and set(stamp["files"]) >= {"manifest.json", "visual.onnx"}
    FrameEncodeActor(f"local-dir:{copy}", verified=stamp)  # outside Ray: verified, and fine
    data = bytearray((copy / "visual.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (copy / "visual.onnx").write_bytes(bytes(data))
    assert bundle_stamp(copy, "node-a") != stamp  # a rewritten file changes the stamp (mtime, maybe inode)
    with pytest.raises(ArtifactError, match="visual.onnx.*corrupt"):
        FrameEncodeActor(f"local-dir:{copy}", verified=bundle_stamp(copy, "node-a"))  # not the driver's node: hashed


def test_videos_per_task_auto_and_explicit() -> None:
    from ray_jobs.pipeline import videos_per_task
    from vtr_qdrant import SamplingConfig

    cfg = JobConfig.model_validate({"sources": ["/a"], "collection": "c", "qdrant": {"path": "/q"}})
    twelve = SamplingConfig(num_frames=12)

    def auto(n: int, cpus: float = 2, sampling: SamplingConfig = twelve, size: int = 224, c: JobConfig = cfg) -> int:
        return videos_per_task(c, n, sampling=sampling, image_size=size, cluster_cpus=cpus)

    assert auto(30) == 4  # 2 decode slots x 4 tasks each: ceil(30 / 8)
    assert auto(60) == 8 and auto(10_000) == 8  # capped
    assert auto(5) == 1 and auto(1) == 1 and auto(0) == 1
    assert auto(10_000, cpus=2000) == 2  # a big cluster keeps every slot busy: ceil(10000 / 8000)
    assert auto(10_000, size=512) == 7  # 64 MiB // (12 * 512 * 512 * 3 bytes) = 7 videos per block
    assert auto(10_000, size=1024) == 1  # one video's frames are 36 MiB already
    assert auto(10_000, sampling=SamplingConfig(fps=1.0)) == 1  # block size unknown before decoding
    slow = JobConfig.model_validate({"sources": ["/a"], "collection": "c", "qdrant": {"path": "/q"}, "decode": {"num_cpus": 2}})
    assert auto(30, c=slow) == 8 and auto(30, cpus=16, c=slow) == 1  # 1 slot vs 8 slots
    fixed = JobConfig.model_validate({"sources": ["/a"], "collection": "c", "qdrant": {"path": "/q"}, "decode": {"videos_per_task": 3}})
    assert auto(1000, c=fixed) == 3 and auto(1000, sampling=SamplingConfig(fps=1.0), c=fixed) == 3
