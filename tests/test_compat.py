"""The 0.1 flat layout's import paths still work, warn once with the new path, and give the same objects."""

from __future__ import annotations

import importlib
import sys

import pytest

from vtr_qdrant._compat import MOVED

# a name that lived in each old module, and where it lives now
NAMES = {
    "vtr_qdrant.manifest": "BundleManifest",
    "vtr_qdrant.bundle": "resolve_bundle",
    "vtr_qdrant.runtime": "available_providers",
    "vtr_qdrant.preprocess": "preprocess_images",
    "vtr_qdrant.tokenizer": "train_bpe_merges",
    "vtr_qdrant.encoders": "FrameEncoder",
    "vtr_qdrant.testing": "make_test_bundle",
    "vtr_qdrant.config": "SamplingConfig",
    "vtr_qdrant.ffmpeg_bin": "resolve_ffmpeg",
    "vtr_qdrant.points": "segment_spans",
    "vtr_qdrant.storage": "StageOneQuery",
    "vtr_qdrant.edge": "translate_filter",
    "vtr_qdrant.aggregation": "get_aggregator",
    "vtr_qdrant.xpool": "XPoolVideoCache",
    "vtr_qdrant.hits": "moment_from_weights",
    "vtr_qdrant.evaluation": "load_head",
    "vtr_qdrant.demo": "run_demo",
}


def test_every_moved_module_is_covered() -> None:
    assert set(NAMES) == set(MOVED)


@pytest.mark.parametrize("old", sorted(NAMES))
def test_old_path_warns_and_resolves(old: str) -> None:
    if old == "vtr_qdrant.edge":
        pytest.importorskip("qdrant_edge")
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to"):
        module = importlib.import_module(old)
    name = NAMES[old]
    value = getattr(module, name)
    homes = [importlib.import_module(t) for t in MOVED[old]]
    assert any(getattr(h, name, None) is value for h in homes)
    with pytest.raises(AttributeError, match="moved to"):
        module.no_such_name  # noqa: B018


def test_old_names_in_kept_modules() -> None:
    import vtr_qdrant.cli as cli
    import vtr_qdrant.ingest as ingest
    from vtr_qdrant import synthetic, video

    assert callable(cli.build_parser) and callable(cli.open_client)
    assert callable(ingest.expand_sources) and callable(ingest.file_content_hash) and ingest.VIDEO_EXTENSIONS
    assert callable(video.sample_frames) and video.SampledFrames.__module__ == "vtr_qdrant.video.frames"
    for name in ("generate_world", "make_world", "World", "heldout_seed", "is_heldout_seed", "evaluate_retrieval"):
        assert getattr(synthetic, name) is not None


def test_onnx_export_keeps_its_wave1_names() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    from onnx_export import clip, pretrained, train_synthetic

    assert clip.export_pretrained is pretrained.export_pretrained
    for name in ("INT8_MIN_COSINE", "STALE_PARTIAL_SECONDS", "PARITY_IMAGES", "export_model", "tokenize_with"):
        assert hasattr(clip, name), name
    assert train_synthetic.ARCH_RN["vision_cfg"]["layers"] == [1, 1, 1, 1]  # the ResNet variant
