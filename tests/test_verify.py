"""``vtr-qdrant verify [--repair]`` and :mod:`vtr_qdrant.store.audit` on local mode and Qdrant Edge.

The bad states are the ones a crash leaves (the writer stops after its N-th write request, exactly
where a SIGKILL would stop it; tests/store/test_crash_consistency.py kills real processes), plus
a segment gap and another model's points written behind the library's back.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient, models

pytest.importorskip("imageio_ffmpeg")
import video_factory as vf  # noqa: E402
from write_counter import CountingWrites  # noqa: E402

from vtr_qdrant import SamplingConfig, VideoCollection  # noqa: E402
from vtr_qdrant.cli.main import main  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle  # noqa: E402
from vtr_qdrant.store.audit import audit, repair  # noqa: E402
from vtr_qdrant.store.points import Key  # noqa: E402
from vtr_qdrant.store.videos import EmbeddedVideo, VideoStore  # noqa: E402

NAME = "checked"


class Crash(BaseException):
    """Like a kill: no ``except Exception`` in the library catches it."""


class StopAfter(CountingWrites):
    """The real back end, but the writer stops (raises) after ``n`` write requests, like a kill."""

    def before_write(self) -> None:
        if self.calls == self.n:
            raise Crash(f"stopped before write request {self.n + 1}")


def _crashing(vc: VideoCollection, n: int, fn: Any) -> None:
    real = vc.store.backend
    vc.store.backend = StopAfter(real, n)  # type: ignore[assignment]
    try:
        with pytest.raises(Crash):
            fn()
    finally:
        vc.store.backend = real


def _collection(kind: str, folder: Path, bundle: ModelBundle) -> tuple[VideoCollection, Any]:
    if kind == "edge":
        pytest.importorskip("qdrant_edge")
        from vtr_qdrant.store.edge import EdgeBackend

        client: Any = EdgeBackend(folder / "edge")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = QdrantClient(path=str(folder / "local"))
    return VideoCollection(client, NAME, bundle, sampling=SamplingConfig(num_frames=8), exact=True), client


def _damage(vc: VideoCollection, d: Path) -> None:
    """Seven videos: one whole, six in every bad state."""
    vc.add_videos([vf.color_video(d / "whole.mp4", ("red", "green"))], video_ids=["whole"], progress=False)
    # a changed file whose re-ingest stopped after its upsert: old version complete, new one incomplete
    vc.add_videos([vf.color_video(d / "changed.mp4", ("blue", "white"))], video_ids=["changed"], progress=False)
    vf.color_video(d / "changed.mp4", ("yellow", "black"))
    _crashing(vc, 1, lambda: vc.store.upsert([_embedded(vc, "changed", d / "changed.mp4", seed=5)]))
    # a first ingest that stopped after its upsert: no complete version at all, the source exists
    src = vf.color_video(d / "first.mp4", ("magenta", "cyan"))
    _crashing(vc, 1, lambda: vc.add_videos([src], video_ids=["first"], progress=False))
    # stopped after the flip, before the delete: two complete versions
    vc.upsert_embeddings("twice", random_frames(np.random.default_rng(1), 6), np.arange(6.0))
    _crashing(vc, 2, lambda: vc.upsert_embeddings("twice", random_frames(np.random.default_rng(2), 6), np.arange(6.0)))
    # a version that claims 3 segments but has 1; another model's points: nothing to re-ingest from
    vc.upsert_embeddings("gap", random_frames(np.random.default_rng(3), 6), np.arange(6.0))
    ids = [p.id for p in vc.store.points_by_video(["gap"], with_frames=False)["gap"]]
    vc.backend.set_payload(NAME, {Key.SEGMENT_COUNT: 3}, ids)
    other = VideoStore(vc.backend, NAME, dim=vc.dim, fingerprint="another-model")
    other.upsert([EmbeddedVideo("foreign", random_frames(np.random.default_rng(4), 6), np.arange(6.0))])
    # an incomplete first write of an embeddings-only video: no source, nothing to re-ingest from
    _crashing(vc, 1, lambda: vc.upsert_embeddings("lost", random_frames(np.random.default_rng(6), 6), np.arange(6.0)))


def _embedded(vc: VideoCollection, vid: str, path: Path, seed: int) -> EmbeddedVideo:
    return EmbeddedVideo(vid, random_frames(np.random.default_rng(seed), 8), np.arange(8.0) * 0.25, uri=str(path))


@pytest.fixture(params=["local", "edge"])
def damaged(request: pytest.FixtureRequest, tmp_path: Path, test_bundle: ModelBundle) -> Iterator[tuple[str, Path]]:
    kind = str(request.param)
    vc, client = _collection(kind, tmp_path, test_bundle)
    _damage(vc, tmp_path)
    client.close()
    yield kind, tmp_path


def test_audit_finds_each_problem_and_repair_fixes_what_it_can(damaged: tuple[str, Path], test_bundle: ModelBundle) -> None:
    kind, folder = damaged
    vc, client = _collection(kind, folder, test_bundle)
    try:
        found = {p.video_id: p.problems for p in audit(vc.store, min_age=0).problems}
        assert found == {
            "changed": ["incomplete_version", "mixed_versions"],
            "first": ["incomplete_version", "no_complete_version"],
            "twice": ["mixed_versions"],
            "gap": ["missing_segments"],
            "foreign": ["foreign_model"],
            "lost": ["incomplete_version", "no_complete_version"],
        }
        # young incomplete versions may be writes in flight: reported, never repaired
        young = audit(vc.store)
        assert {p.video_id: p.problems for p in young.problems}["first"] == ["in_flight", "no_complete_version"]
        assert vc.count() == 6  # "first" and "lost" are invisible; "twice" counted twice until repaired

        calls: list[Any] = []

        def reingest(items: Any) -> tuple[set[str], dict[str, str]]:
            calls.append(list(items))
            rep = vc.add_videos([s for _, s, _ in items], video_ids=[v for v, _, _ in items], force=True, progress=False)
            return set(rep.ingested), {f.video_id: f.message for f in rep.failed}

        fixed = repair(vc.store, audit(vc.store, min_age=0), reingest=reingest)
        assert [v for v, _, _ in calls[0]] == ["first"]  # the only one with a whole source and no whole version
        assert {p.video_id for p in fixed.remaining} == {"gap", "foreign", "lost"}
        after = audit(vc.store, min_age=0)
        assert {p.video_id for p in after.problems} == {"gap", "foreign", "lost"}
        assert vc.count() == 6 and vc.get("first") is not None and len(vc.get("first").frames) == 8  # type: ignore[union-attr]
        assert vc.store.states(["changed"])["changed"].whole and vc.store.states(["twice"])["twice"].whole
        assert vc.search("red", limit=7, candidates=7)  # search still works on the repaired collection
    finally:
        client.close()


def test_cli_verify_then_repair_exit_codes(damaged: tuple[str, Path], capsys: pytest.CaptureFixture[str],
                                           test_bundle: ModelBundle) -> None:
    kind, folder = damaged
    target = ["--edge-path", str(folder / "edge")] if kind == "edge" else ["--qdrant-path", str(folder / "local")]
    base = ["verify", "--collection", NAME, *target, "--min-age", "0", "--no-progress"]
    assert main(base) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["after"] is None and report["found"]["remaining"] == 6 and report["found"]["videos"] == 7
    repair_args = [*base, "--repair", "--bundle", f"local-dir:{test_bundle.path}", "--report", str(folder / "verify.json")]
    assert main(repair_args) == 1  # gap, foreign, lost remain
    out = json.loads((folder / "verify.json").read_text())
    actions = {p["video_id"]: p["action"] for p in out["found"]["problems"]}
    assert actions["first"].startswith("re-ingested") and actions["twice"].startswith("deleted 1 leftover")
    assert "needs re-ingesting" not in actions["first"] and out["after"]["remaining"] == 3
    capsys.readouterr()
    # the operator deletes what cannot be repaired; verify is then clean
    _delete(kind, folder, ["gap", "foreign", "lost"])
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["found"]["problems"] == []


def _delete(kind: str, folder: Path, ids: list[str]) -> None:
    if kind == "edge":
        from vtr_qdrant.store.edge import EdgeBackend

        client: Any = EdgeBackend(folder / "edge")
    else:
        client = QdrantClient(path=str(folder / "local"))
    flt = models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchAny(any=ids))])
    try:
        if kind == "edge":
            client.delete(NAME, flt)
        else:
            client.delete(NAME, points_selector=models.FilterSelector(filter=flt), wait=True)
    finally:
        client.close()


def test_ray_job_end_scan(damaged: tuple[str, Path], test_bundle: ModelBundle) -> None:
    pytest.importorskip("ray")
    from ray_jobs.incremental import verify

    kind, folder = damaged
    vc, client = _collection(kind, folder, test_bundle)
    try:
        fresh = verify(vc)  # everything was just written: incomplete versions may be in flight
        assert {p["video_id"]: p["problems"] for p in fresh["problems"]}["changed"] == ["in_flight"]
        assert {p["video_id"]: p["action"] for p in fresh["problems"]}["twice"].startswith("deleted 1")  # two complete versions
        scan = verify(vc, min_age=0)
        actions = {p["video_id"]: p["action"] for p in scan["problems"]}
        assert "twice" not in actions and actions["changed"].startswith("deleted 1")
        assert "needs re-ingesting" in actions["first"]  # the next run re-ingests it (never "unchanged")
        assert scan["remaining"] == 4 and not vc.store.unchanged({"first": "anything"})
    finally:
        client.close()
