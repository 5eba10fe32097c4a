"""Property tests (Hypothesis) at the public boundary, on qdrant-client local mode AND Qdrant Edge.

For any search arguments, metadata or payload filter a user can pass:

- the call either works or raises a :class:`~vtr_qdrant.errors.VtrError` (never a raw pydantic,
  OverflowError, TypeError or Rust-binding error);
- a refused write changes nothing (the same videos, points and payloads as before);
- both back ends give the same outcome: the same error class, or the same result.

Plus one explicit regression test per bad input that used to escape raw (issue 14, item 4).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient, models

from vtr_qdrant import ConfigError, InvalidInputError, VideoCollection, VtrError
from vtr_qdrant.model.bundle import ModelBundle

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("qdrant_edge")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vtr_qdrant.store.edge import EdgeBackend  # noqa: E402

NAME = "props"
N_VIDEOS = 6
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, test_bundle: ModelBundle) -> Iterator[dict[str, VideoCollection]]:
    """The same six videos in local mode and in Qdrant Edge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = QdrantClient(":memory:")
    edge = EdgeBackend(tmp_path_factory.mktemp("edge"))
    out = {}
    for label, client in (("local", local), ("edge", edge)):
        vc = VideoCollection(client, NAME, test_bundle, indexed_fields={"cat": "keyword", "n": "integer"})
        rng = np.random.default_rng(0)
        for i in range(N_VIDEOS):
            meta = {"cat": "odd" if i % 2 else "even", "n": i, "tags": ["a", "b"][: i % 3], "score": i / 2}
            vc.upsert_embeddings(f"v{i}", random_frames(rng, 6), np.arange(6) * 0.5, metadata=meta)
        vc.optimize()
        out[label] = vc
    yield out
    local.close()
    edge.close()


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", VtrError subclass); any other exception fails the test."""
    try:
        return "ok", fn()
    except VtrError as e:
        return "error", type(e)


def _state(vc: VideoCollection) -> tuple[int, int, dict[str, Any]]:
    videos = {f"v{i}": vc.get(f"v{i}", with_frames=False) for i in range(N_VIDEOS)}
    return vc.count(), vc.count_points(), {k: v.payload if v else None for k, v in videos.items()}


def _same(outcomes: dict[str, tuple[str, Any]]) -> None:
    (a_kind, a), (b_kind, b) = outcomes["local"], outcomes["edge"]
    assert a_kind == b_kind, outcomes
    event(f"outcome: {a_kind if a_kind == 'ok' else a.__name__}")  # --hypothesis-show-statistics shows the mix
    if a_kind == "error":
        assert a is b, outcomes
    else:
        assert a == b, outcomes


# ---------------------------------------------------------------- strategies

_plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_hostile = st.one_of(
    st.just(float("nan")),
    st.just("\udcff broken"),
    st.sets(st.integers(0, 3), max_size=2),
    st.binary(max_size=4),
    st.integers(-(2**70), 2**70).map(lambda i: np.int64(i % 2**62)),
    st.floats(width=32, allow_nan=True).map(np.float32),
    st.builds(object),
    st.tuples(st.integers(0, 3)),
)
_value = st.recursive(
    st.one_of(_plain, _hostile),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
_key = st.one_of(st.text(max_size=6), st.sampled_from(["", "video_id", "cat", "x.y"]), st.integers(), st.none())
_metadata = st.one_of(
    st.dictionaries(_key, _value, max_size=4),
    st.sampled_from([None, "not a dict", [("a", 1)], 42]),
)

_count = st.one_of(
    st.integers(min_value=-3, max_value=2**66),
    st.sampled_from([None, True, 1.5, "10", np.int64(3), np.uint64(2**63), float("nan")]),
)
_threshold = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([True, "0.5", np.float32(0.1)]))

_match_value = st.one_of(st.text(max_size=5), st.integers(-(2**65), 2**65), st.booleans(), st.floats(), st.none())
_keys = st.sampled_from(["cat", "n", "score", "tags", "", "missing", "video_id"])


def _field_condition() -> st.SearchStrategy[dict[str, Any]]:
    match = st.one_of(
        st.builds(lambda v: {"value": v}, _match_value),
        st.builds(lambda vs: {"any": vs}, st.lists(_match_value, max_size=3)),
        st.builds(lambda vs: {"except": vs}, st.lists(_match_value, max_size=3)),
        st.just({"text": "ev"}),
    )
    bound = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
    rng = st.builds(lambda a, b, c, d: {"gt": a, "gte": b, "lt": c, "lte": d}, bound, bound, bound, bound)
    return st.one_of(
        st.builds(lambda k, m: {"key": k, "match": m}, _keys, match),
        st.builds(lambda k, r: {"key": k, "range": r}, _keys, rng),
        st.builds(lambda k: {"is_empty": {"key": k}}, _keys),
        st.builds(lambda k: {"is_null": {"key": k}}, _keys),
    )


_filter = st.recursive(
    st.builds(lambda cs: {"must": cs}, st.lists(_field_condition(), max_size=2)),
    lambda inner: st.builds(
        lambda a, b, c: {"must": a, "should": b, "must_not": c},
        st.lists(st.one_of(inner, _field_condition()), max_size=2),
        st.lists(st.one_of(inner, _field_condition()), max_size=2),
        st.lists(st.one_of(inner, _field_condition()), max_size=2),
    ),
    max_leaves=5,
)
_any_filter = st.one_of(
    _filter,
    _filter.map(lambda d: _try_model(d)),
    st.sampled_from(["cat == 'odd'", ["cat"], 3, {"must": "cat"}, {"bogus": []}]),
)


def _try_model(d: dict[str, Any]) -> Any:
    try:
        return models.Filter.model_validate(d)
    except Exception:
        return d  # not expressible as a model: passed in its dict form


# ---------------------------------------------------------------- properties


@PROPS
@given(limit=_count, candidates=_count, threshold=_threshold, text=st.booleans())
def test_search_args_work_or_raise_ours_alike(pair: dict[str, VideoCollection], limit: Any, candidates: Any,
                                               threshold: Any, text: bool) -> None:
    query: Any = "a red circle" if text else random_frames(np.random.default_rng(7), 1)[0]

    def run(vc: VideoCollection) -> Any:
        hits = vc.search(query, limit=limit, candidates=candidates, score_threshold=threshold)
        return [(h.video_id, round(h.score, 5)) for h in hits]

    _same({label: _outcome(lambda vc=vc: run(vc)) for label, vc in pair.items()})


@PROPS
@given(flt=_any_filter)
def test_filters_work_or_raise_ours_alike(pair: dict[str, VideoCollection], flt: Any) -> None:
    q = random_frames(np.random.default_rng(3), 1)[0]

    def run(vc: VideoCollection) -> Any:
        hits = vc.search(q, limit=N_VIDEOS, candidates=N_VIDEOS, query_filter=flt)
        return vc.count(flt), sorted(h.video_id for h in hits)

    _same({label: _outcome(lambda vc=vc: run(vc)) for label, vc in pair.items()})


@PROPS
@given(meta=_metadata, duration=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_metadata_works_or_changes_nothing(pair: dict[str, VideoCollection], meta: Any, duration: Any) -> None:
    frames = random_frames(np.random.default_rng(11), 4)
    outcomes = {}
    for label, vc in pair.items():
        before = _state(vc)
        got = _outcome(lambda vc=vc: vc.upsert_embeddings("probe", frames, np.arange(4.0), metadata=meta, duration=duration))
        if got[0] == "error":
            assert vc.get("probe") is None and _state(vc) == before  # a refused write changes nothing
            outcomes[label] = got
        else:
            stored = vc.get("probe", with_frames=False)
            assert stored is not None and vc.count() == before[0] + 1
            user = {k: v for k, v in stored.payload.items() if isinstance(meta, dict) and k in meta}
            vc.delete("probe")
            assert _state(vc) == before
            outcomes[label] = ("ok", user)
    _same(outcomes)
    if outcomes["local"][0] == "ok" and isinstance(meta, dict):
        assert set(outcomes["local"][1]) == set(meta)  # every field stored, under its own key


# ---------------------------------------------------------------- the nine probes that escaped raw


@pytest.mark.parametrize("label", ["local", "edge"])
@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda vc: vc.search("red", query_filter="cat == 'odd'"), InvalidInputError, "must be a qdrant_client.models.Filter"),
        (lambda vc: vc.count("cat"), InvalidInputError, "must be a qdrant_client.models.Filter"),
        (lambda vc: vc.search("red", candidates=2**64), InvalidInputError, "candidates must be an int from 1"),
        (lambda vc: vc.search("red", score_threshold=float("nan")), InvalidInputError, "score_threshold must be a finite"),
        (lambda vc: _probe(vc, metadata={"x": np.float64("nan")}), InvalidInputError, "NaN"),
        (lambda vc: _probe(vc, metadata={"x": {1, 2}}), InvalidInputError, "set"),
        (lambda vc: _probe(vc, metadata={1: "a"}), InvalidInputError, "must be a non-empty str"),
        (lambda vc: _probe(vc, duration=float("nan")), InvalidInputError, "duration"),
    ],
    ids=["filter-str", "count-filter-str", "candidates-2**64", "threshold-nan", "meta-nan", "meta-set", "meta-int-key",
         "duration-nan"],
)
def test_probe_is_refused_with_our_error(pair: dict[str, VideoCollection], label: str, call: Callable[[VideoCollection], Any],
                                         error: type[Exception], match: str) -> None:
    vc = pair[label]
    before = _state(vc)
    with pytest.raises(error, match=match):
        call(vc)
    assert _state(vc) == before


def _probe(vc: VideoCollection, **kw: Any) -> Any:
    return vc.upsert_embeddings("probe", random_frames(np.random.default_rng(1), 3), np.arange(3.0), **kw)


@pytest.mark.parametrize("label", ["local", "edge"])
def test_numpy_scalars_are_stored_as_json(pair: dict[str, VideoCollection], label: str) -> None:
    vc = pair[label]
    _probe(vc, metadata={"i": np.int64(7), "f": np.float32(0.5), "a": np.arange(3)})
    stored = vc.get("probe", with_frames=False)
    assert stored is not None
    got = {k: stored.payload[k] for k in ("i", "f", "a")}
    vc.delete("probe")
    assert got == {"i": 7, "f": 0.5, "a": [0, 1, 2]} and type(got["i"]) is int


@pytest.mark.parametrize("name", ["a/b", "../up", "", ".hidden", "x" * 300, 42])
def test_collection_name_refused_on_every_backend(tmp_path: Path, test_bundle: ModelBundle, name: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = QdrantClient(":memory:")
    edge = EdgeBackend(tmp_path / "edge")
    try:
        for client in (local, edge):
            with pytest.raises(ConfigError, match="cannot be used as a folder name"):
                VideoCollection(client, name, test_bundle)
        assert local.get_collections().collections == [] and not any((tmp_path / "edge").iterdir())
    finally:
        local.close()
        edge.close()


def test_bool_match_is_refused_not_silently_empty(pair: dict[str, VideoCollection]) -> None:
    flt = models.Filter(must=[models.FieldCondition(key="flag", match=models.MatchValue(value=True))])
    for vc in pair.values():
        with pytest.raises(InvalidInputError, match="matches a boolean"):
            vc.search("red", query_filter=flt)


@pytest.mark.parametrize("label", ["local", "edge"])
@pytest.mark.parametrize(
    "metadata, match",
    [({"x": {1, 2}}, r"metadata for '.*a\.mp4'.*set"), ([{"ok": 1}, {"n": float("inf")}], "infinite|NaN"),
     ("cat=odd", "one dict for every video or a list")],
)
def test_add_videos_refuses_bad_metadata_before_decoding(pair: dict[str, VideoCollection], tmp_path: Path, label: str,
                                                         metadata: Any, match: str) -> None:
    vc = pair[label]
    before = _state(vc)
    files = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for f in files:
        f.write_bytes(b"not decoded: the metadata is refused first")
    with pytest.raises(InvalidInputError, match=match):
        vc.add_videos(files[: 1 if isinstance(metadata, dict) else 2], metadata=metadata)
    assert _state(vc) == before
