"""Examples are scripts: run them as a user would, so the docs cannot go stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _run(args: list[str], cwd: Path, timeout: float = 400) -> str:
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.timeout(300)
def test_quickstart(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from vtr_qdrant.model.bundle import BUILTIN_MODELS_DIR

    if not (BUILTIN_MODELS_DIR / "synthetic-world__v1" / "manifest.json").exists():
        pytest.skip("the synthetic-world/v1 bundle is not built")
    out = _run([str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path / "qs")], cwd=tmp_path)
    assert "ingested 12, skipped 0 unchanged, failed 0" in out
    assert out.count("score=") == 3


@pytest.mark.export
@pytest.mark.timeout(400)
def test_export_real_clip_with_a_tiny_random_architecture(tmp_path: Path) -> None:
    """The real-model example, end to end, on a tiny open_clip architecture and a local checkpoint."""
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    pytest.importorskip("imageio_ffmpeg")
    import video_factory as vf

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (cfg_dir / "vtr-example-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("vtr-example-tiny")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "tiny.pt")
    vids = tmp_path / "videos"
    vids.mkdir()
    vf.color_video(vids / "a.mp4", ("red", "blue"))
    vf.color_video(vids / "b.mp4", ("green", "white"))
    args = [
        str(ROOT / "examples" / "export_real_clip.py"), "--model", "vtr-example-tiny", "--checkpoint", str(tmp_path / "tiny.pt"),
        "--model-config", str(cfg_dir), "--bundle-dir", str(tmp_path / "bundle"), "--videos", str(vids),
        "--qdrant-path", str(tmp_path / "q"), "--num-frames", "4", "--query", "a red screen",
    ]
    out = _run(args, cwd=tmp_path)
    assert "exported" in out and "ingested 2" in out and out.count("score=") == 2
    again = _run(args, cwd=tmp_path)  # bundle reused, files unchanged: nothing re-ingested
    assert "exported" not in again and "skipped 2 unchanged" in again


def _example(name: str, cwd: Path) -> str:
    return _run([str(ROOT / "examples" / f"{name}.py")], cwd=cwd, timeout=120)


def _citations(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[") and "demo-output/videos/w1000000-v" in line]


@pytest.mark.timeout(150)
def test_async_search(tmp_path: Path) -> None:
    out = _example("async_search", tmp_path)
    assert "24 videos" in out and "8 concurrent searches in" in out and out.count("score=") == 9


@pytest.mark.timeout(150)
def test_rag_langchain(tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    out = _example("rag_langchain", tmp_path)
    assert "--- system" in out and "--- human" in out and len(_citations(out)) == 3


@pytest.mark.timeout(150)
def test_rag_llama_index(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.core")
    out = _example("rag_llama_index", tmp_path)
    sources = [line for line in out.splitlines() if " scenes  " in line]
    assert len(sources) == 3 and all(int(line.split(" scenes")[0].split()[-1]) <= 3 for line in sources)  # the filter held


@pytest.mark.timeout(150)
def test_haystack_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("haystack")
    out = _example("haystack_pipeline", tmp_path)
    assert len(_citations(out)) == 3 and out.rstrip().splitlines()[-1].startswith("Question: ")
