"""Every benchmark script imports against the current library (their full runs are too long for CI)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_benchmark_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{script[:-3]}", BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # runs the imports, not main()
    assert callable(getattr(module, "main", None))


def test_bench_search_writes_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interface a check reads: every method, recall against exhaustive, build and size facts."""
    pytest.importorskip("qdrant_edge")
    import json

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("_bench_search_run", BENCH / "bench_search.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    out = tmp_path / "search.json"
    module.main(["--videos", "400", "--queries", "200", "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--breakdown"])
    data = json.loads(out.read_text())
    assert data["videos"] == 400 and data["build_s"] > 0 and data["rss_mb"] > 0 and data["disk_mb"] > 0
    rows = {r["method"]: r for r in data["rows"]}
    assert {"default", "qdrant-recipe", "pooled-only", "ann-floor", "exhaustive"} <= set(rows)
    assert rows["exhaustive"]["recall_at_10"] == 1.0 and rows["default"]["recall_at_10"] >= 0.95
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in data["rows"])
    assert set(data["breakdown"]) == {"stage1_ann_p50_ms", "frames_fetch_p50_ms", "stage2_and_hits_p50_ms"}
