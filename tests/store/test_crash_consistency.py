"""kill -9 at every stage of a write, then re-run: every video is one whole version.

A corpus of a 100-segment video and two short ones is written as version 1, then a writer that
SIGKILLs itself after its N-th write request (upsert / set_payload / delete) writes version 2.
Right after the crash each video must be exactly version 1 or exactly version 2 to reads and
search (never a mix, never twice), and the skip check must not call a half-written video done;
a re-run then leaves every video whole, at version 2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WRITER = Path(__file__).with_name("crash_writer.py")

# version 2 writes 102 points in 7 upserts of <=16, then per video a set_payload and a delete:
# "long" flips at call 8 and loses version 1 at 9; short-a at 10/11; short-b at 12/13
KILL_POINTS = [1, 4, 7, 8, 9, 10]


def _run(*args: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, str(WRITER), *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return {"returncode": p.returncode, "stderr": p.stderr[-2000:]}
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module", params=["local", "edge"])
def version1(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    kind = str(request.param)
    if kind == "edge":
        pytest.importorskip("qdrant_edge")
    folder = tmp_path_factory.mktemp(f"v1-{kind}") / "store"
    out = _run(kind, str(folder), "write", "1")
    assert out == {"calls": None}, out
    return kind, folder


def test_the_writer_makes_thirteen_requests(version1: tuple[str, Path], tmp_path: Path) -> None:
    kind, template = version1
    folder = tmp_path / "store"
    shutil.copytree(template, folder)
    assert _run(kind, str(folder), "write", "2", "--kill-after", "99") == {"calls": 13}


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_kill_then_rerun_leaves_one_whole_version(version1: tuple[str, Path], tmp_path: Path, kill_after: int) -> None:
    kind, template = version1
    folder = tmp_path / "store"
    shutil.copytree(template, folder)
    crashed = _run(kind, str(folder), "write", "2", "--kill-after", str(kill_after))
    assert crashed.get("returncode") == -9, crashed  # it really died mid-write

    after = _run(kind, str(folder), "check")
    # count() sees both versions of the one video caught between its flip and its delete
    assert after["count"] == (4 if kill_after in (8, 10) else 3), after
    for vid, v in after["videos"].items():
        assert v["matches"] in ([1], [2]), (vid, v)  # exactly one version, never a mix
        assert v["hits"] == 1, (vid, v)  # found once by search
        if not v["whole"]:
            assert not v["unchanged_v2"], (vid, v)  # a half-written video is never "done"
    long = after["videos"]["long"]
    # nothing of version 2 is visible before its set_payload (call 8 flips "long")
    assert long["matches"] == ([1] if kill_after < 8 else [2]), long
    assert long["whole"] == (kill_after >= 9), long

    assert _run(kind, str(folder), "write", "2") == {"calls": None}
    final = _run(kind, str(folder), "check")
    assert final["count"] == 3
    for vid, v in final["videos"].items():
        assert v == {"matches": [2], "hits": 1, "whole": True, "unchanged_v2": True, "versions": 1}, (vid, v)
