"""``vtr-qdrant demo`` (what ``make demo`` runs): end to end, and again over a folder an older version filled."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtr_qdrant.cli.demo import run_demo

pytest.importorskip("ffmpeg")


def test_demo_runs_and_rebuilds_a_collection_of_another_model(tmp_path: Path, capsys) -> None:
    # an earlier version's demo (another bundle) left its collection in the folder
    assert run_demo(tmp_path, n_videos=6, bundle="synthetic-world/v1", progress=False, show=1) == 0
    assert run_demo(tmp_path, n_videos=6, progress=False, show=1) == 0
    out = capsys.readouterr().out
    assert "rebuilding the demo collection" in out and "synthetic-world/v1" in out
    assert "bundle's aggregation, XPoolHead(dim=64, num_heads=1, adaptive)" in out
    assert out.count("done in") == 2
    # a third run over its own collection keeps it (nothing to rebuild)
    assert run_demo(tmp_path, n_videos=6, progress=False, show=1) == 0
    assert "rebuilding" not in capsys.readouterr().out
