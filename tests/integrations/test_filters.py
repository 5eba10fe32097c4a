"""Framework filter operators against a reference: each filter keeps exactly the videos whose payload satisfies it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rag_world import N_VIDEOS, world  # noqa: F401 (fixture)

from vtr_qdrant import InvalidInputError, VideoCollection
from vtr_qdrant.integrations.filters import haystack_filter, llama_index_filter

CASES: list[tuple[str, Any, Callable[[dict[str, Any]], bool]]] = [
    ("==", "odd", lambda p: p["category"] == "odd"),
    ("!=", "odd", lambda p: p["category"] != "odd"),
    (">", 6, lambda p: p["n"] > 6),
    (">=", 6, lambda p: p["n"] >= 6),
    ("<", 3, lambda p: p["n"] < 3),
    ("<=", 3, lambda p: p["n"] <= 3),
    ("in", [1, 4, 7], lambda p: p["n"] in (1, 4, 7)),
    ("nin", [1, 4, 7], lambda p: p["n"] not in (1, 4, 7)),
    ("not in", [1, 4, 7], lambda p: p["n"] not in (1, 4, 7)),
]


def _kept(vc: VideoCollection, flt: Any) -> set[str]:
    return {h.video_id for h in vc.search("a red circle", limit=N_VIDEOS, query_filter=flt)}


@pytest.mark.parametrize("op, value, keep", CASES, ids=[c[0] for c in CASES])
def test_operators_match_a_python_reference(world: VideoCollection, op: str, value: Any, keep: Any) -> None:
    everything = world.search("a red circle", limit=N_VIDEOS)
    key = "category" if isinstance(value, str) else "n"
    expected = {h.video_id for h in everything if keep(h.payload)}
    assert 0 < len(expected) < N_VIDEOS  # each case keeps some and drops some
    if op != "not in":  # LlamaIndex spells it nin
        types = pytest.importorskip("llama_index.core.vector_stores.types")
        MetadataFilter, MetadataFilters = types.MetadataFilter, types.MetadataFilters
        assert _kept(world, llama_index_filter(MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)]))) == expected
    if op not in ("nin",):  # Haystack spells it "not in"
        assert _kept(world, haystack_filter({"field": f"meta.{key}", "operator": op, "value": value})) == expected


def test_not_and_bad_inputs(world: VideoCollection) -> None:
    everything = {h.video_id: h.payload for h in world.search("a red circle", limit=N_VIDEOS)}
    flt = haystack_filter({"operator": "NOT", "conditions": [{"field": "meta.n", "operator": "<", "value": 5}]})
    assert _kept(world, flt) == {v for v, p in everything.items() if not p["n"] < 5}
    for bad in ("category == odd", {"field": "n", "operator": ">", "value": "x"}, {"operator": "XOR", "conditions": []},
                {"field": "n", "operator": "in", "value": 3}):
        with pytest.raises(InvalidInputError):
            haystack_filter(bad)
