"""The text tower back in torch, trained jointly with the X-Pool head, exported into a new bundle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from onnx_export.head_config import HeadTrainConfig  # noqa: E402
from onnx_export.head_output import write_head_bundle  # noqa: E402
from onnx_export.synthetic_model import build_model_from_recipe  # noqa: E402
from onnx_export.text_tower import text_model_from_bundle, text_parity, write_text_bundle  # noqa: E402
from onnx_export.train_joint import train_text_and_head  # noqa: E402
from onnx_export.train_synthetic_head import training_captions  # noqa: E402
from vtr_qdrant import synthetic as syn  # noqa: E402
from vtr_qdrant.errors import ExportError, InvalidInputError  # noqa: E402
from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores  # noqa: E402
from vtr_qdrant.eval.metrics import evaluate_retrieval, relevance_indices  # noqa: E402
from vtr_qdrant.model.bundle import resolve_bundle  # noqa: E402
from vtr_qdrant.search.resolve import default_aggregation  # noqa: E402
from vtr_qdrant.search.xpool import XPoolHead  # noqa: E402

pytestmark = pytest.mark.export

CAPTIONS = ["a red circle moving left on a blue background", "red circle on blue, then green square on black", "white ring"]


def _model(bundle, **text_overrides):
    return build_model_from_recipe(bundle.manifest.source.recipe["architecture"], **text_overrides)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def v1():
    return resolve_bundle("synthetic-world/v1")


def test_text_tower_rebuilt_from_the_graph_matches_it(v1) -> None:
    model = text_model_from_bundle(v1, _model(v1), texts=CAPTIONS)
    parity = text_parity(model, v1.file(v1.manifest.text.file), np.asarray(v1.tokenizer().tokenize(CAPTIONS), np.int64))
    assert parity.min_cosine >= 0.9999 and parity.max_abs_diff < 1e-5


def test_a_model_of_another_layout_is_refused(v1) -> None:
    with pytest.raises(ExportError, match="cosine|initializer|shape"):
        text_model_from_bundle(v1, _model(v1, layers=1))
    with pytest.raises(ExportError, match="shape|initializer"):
        text_model_from_bundle(v1, _model(v1, width=32, heads=1))


def test_joint_inputs_are_checked(v1) -> None:
    with pytest.raises(InvalidInputError, match="one token row"):
        train_text_and_head(
            _model(v1), np.zeros((3, 40), np.int64), np.zeros(2, np.int64), np.zeros((2, 12, 64), np.float32),
            caption_groups=[0, 1, 2], caption_kinds=["scene"] * 3,
        )


def _heldout(bundle, seed_index: int = 61, n: int = 80):
    world = syn.generate_world(syn.heldout_seed(seed_index), n)
    fenc, size = bundle.frame_encoder(), bundle.manifest.image.image_size
    frames = np.stack([
        fenc.encode(syn.render_video_frames(v, size, syn.uniform_timestamps(v.duration, 12), supersample=4)[0])
        for v in world.videos
    ])
    corpus = EvalCorpus.from_arrays(world.video_ids, frames)
    return world, corpus


def test_joint_training_writes_a_bundle_that_beats_the_frozen_text_tower(v1, tmp_path: Path) -> None:
    """A small run of the v3 recipe: the new bundle keeps v1's image tower byte for byte, its text
    graph matches torch, and on a held-out world its head beats v1's identity head on both kinds."""
    frames, texts, owner, groups = training_captions(v1, [301], 300, video_caption_weight=6)
    tok = v1.tokenizer()
    cfg = HeadTrainConfig(
        max_steps=300, lr=0.03, trainable="adaptive", adaptive_scale=True, weight_decay=0.0, eval_every=100,
        patience=100, threads=2,
    )
    model = text_model_from_bundle(v1, _model(v1))
    result, model = train_text_and_head(
        model, tok.tokenize(texts), owner, frames, caption_groups=groups, caption_kinds=[g[0] for g in groups],
        config=cfg, text_lr=3e-4,
    )
    assert {"scene_R@1", "video_R@1"} <= set(result.val_best)
    assert result.val_best["Rsum"] == pytest.approx(result.val_best["scene_R@1"] + result.val_best["video_R@1"])
    towers = write_text_bundle(model, v1, tmp_path / "towers", name="tiny/v3", recipe={"note": "test"})
    out = write_head_bundle(result, towers, tmp_path / "v3", name="tiny/v3")
    assert _sha(out.file("visual.onnx")) == _sha(v1.file("visual.onnx"))
    assert _sha(out.file("text.onnx")) != _sha(v1.file("text.onnx"))
    assert out.manifest.source.recipe["parity"]["text"]["min_cosine"] >= 0.9999
    head = default_aggregation(out)
    assert isinstance(head, XPoolHead) and head.adaptive

    world, corpus = _heldout(v1)
    identity = XPoolHead.identity(v1.embed_dim)
    old_text, new_text = v1.text_encoder(), out.text_encoder()
    for kind in ("scene", "video"):
        queries = world.queries(kind)
        rel = relevance_indices(queries, world.video_ids)
        q = [x.text for x in queries]
        before = evaluate_retrieval(exhaustive_scores(identity, old_text.encode(q), corpus), rel)["R@1"]
        after = evaluate_retrieval(exhaustive_scores(head, new_text.encode(q), corpus), rel)["R@1"]
        assert after > before, (kind, before, after)


def test_the_default_bundle_is_v3_and_tells_caption_kinds_apart() -> None:
    """v3: v1's image tower, a fine-tuned text tower, the adaptive head; two-scene whole-video captions
    (the ones v2's frozen text tower could not tell from scene captions) get flatter attention than
    each of their scenes' captions."""
    from vtr_qdrant.model.bundle import DEFAULT_BUNDLE

    v3 = resolve_bundle(DEFAULT_BUNDLE)
    v1 = resolve_bundle("synthetic-world/v1")
    assert v3.name == "synthetic-world/v3" and v3.manifest.xpool is not None and v3.manifest.xpool.adaptive
    assert _sha(v3.file("visual.onnx")) == _sha(v1.file("visual.onnx"))
    recipe = v3.manifest.source.recipe
    assert recipe["text_finetune"]["script"] == "onnx_export.train_synthetic_v3"
    assert recipe["text_finetune"]["train_seeds"] == [301, 302, 303, 304, 305, 306]
    assert recipe["parity"]["text"]["min_cosine"] >= 0.9999
    head = default_aggregation(v3)
    assert isinstance(head, XPoolHead) and head.adaptive
    world = syn.generate_world(syn.heldout_seed(62), 60)
    pairs = [(v, s) for v in world.videos if len(v.scenes) == 2 for s in v.scenes]
    enc = v3.text_encoder()
    video_scale = head.attention_scale(enc.encode([v.caption for v, _ in pairs]))
    scene_scale = head.attention_scale(enc.encode([syn.scene_caption(s.shape, s.colour, s.background, s.motion) for _, s in pairs]))
    assert len(pairs) >= 20
    assert np.all(video_scale < scene_scale)
    # near-flat attention (close to mean pooling) for 90 % of them; v2 gave a median of 0.42
    assert np.quantile(video_scale, 0.9) < 0.2 < 0.5 < np.quantile(scene_scale, 0.1), (video_scale, scene_scale)
