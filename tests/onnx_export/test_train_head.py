"""Training the X-Pool head (torch): it learns, it is reproducible, and torch == the deployed numpy head.

The task is built so that text-conditioned pooling matters and the untrained head cannot solve it:
videos are sequences of 2-4 "scenes" (frames near a concept vector), a caption names one scene, and
the text embedding of a concept is a fixed random rotation of its frame embedding. Identity q/k
projections (and mean pooling) see no relation between text and frames; a trained head learns it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from onnx_export.train_head import (  # noqa: E402
    HeadTrainConfig,
    XPoolModule,
    XPoolTrainModel,
    export_head_onnx,
    train_head,
    write_head_bundle,
)
from vtr_qdrant.errors import ConfigError, InvalidInputError  # noqa: E402
from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores  # noqa: E402
from vtr_qdrant.eval.metrics import evaluate_retrieval  # noqa: E402
from vtr_qdrant.search.resolve import towers_fingerprint  # noqa: E402
from vtr_qdrant.search.xpool import XPOOL_PARAMETER_NAMES, XPOOL_PREFIX, XPoolHead  # noqa: E402

pytestmark = pytest.mark.export

DIM = 32


def scene_task(seed: int, n_videos: int = 160, n_concepts: int = 40, frames: int = 8):
    """(text (C, D), caption video (C,), frames (V, F, D), caption concept (C,)) float32."""
    rng = np.random.default_rng(seed)
    concepts = np.random.default_rng(99).standard_normal((n_concepts, DIM))  # shared by every split
    rot, _ = np.linalg.qr(np.random.default_rng(98).standard_normal((DIM, DIM)))
    fr = np.zeros((n_videos, frames, DIM), np.float32)
    text, owner, groups = [], [], []
    for v in range(n_videos):
        ks = rng.choice(n_concepts, size=int(rng.integers(2, 5)), replace=False)
        cuts = np.sort(rng.choice(np.arange(1, frames), size=len(ks) - 1, replace=False))
        for k, idx in zip(ks, np.split(np.arange(frames), cuts)):
            x = concepts[k] + 0.3 * rng.standard_normal((len(idx), DIM))
            fr[v, idx] = x / np.linalg.norm(x, axis=1, keepdims=True)
            t = rot @ concepts[k] + 0.3 * rng.standard_normal(DIM)
            text.append(t / np.linalg.norm(t))
            owner.append(v)
            groups.append(int(k))
    return np.array(text, np.float32), np.array(owner), fr, groups


def heldout_r5(head: XPoolHead, seed: int = 7) -> float:
    text, owner, fr, groups = scene_task(seed, n_videos=60)
    rel = [
        {v for v in range(len(fr)) if g in {groups[c] for c in np.flatnonzero(owner == v)}} for g in groups
    ]
    scores = exhaustive_scores(head, text, EvalCorpus.from_arrays([str(i) for i in range(len(fr))], fr))
    return evaluate_retrieval(scores, rel)["R@5"]


CFG = HeadTrainConfig(max_steps=150, batch_size=32, eval_every=25, patience=20, seed=0, threads=1, lr=2e-3)


@pytest.fixture(scope="module")
def trained():
    text, owner, fr, groups = scene_task(0)
    return train_head(text, owner, fr, config=CFG, caption_groups=groups)


def test_training_reduces_loss_and_beats_identity(trained) -> None:
    losses = [h["loss"] for h in trained.history if h["loss"] is not None]
    assert losses[-1] < 0.7 * losses[0]
    assert trained.best_step > 0
    assert trained.val_best["Rsum"] > trained.val_identity["Rsum"]
    # on unseen videos of the same task too
    identity = heldout_r5(XPoolHead.identity(DIM))
    learnt = heldout_r5(trained.head)
    assert learnt > identity + 0.15, (learnt, identity)
    assert trained.train_videos + trained.val_videos == 160


def test_training_is_deterministic(trained) -> None:
    text, owner, fr, groups = scene_task(0)
    again = train_head(text, owner, fr, config=CFG, caption_groups=groups)
    assert again.best_step == trained.best_step
    for k, v in trained.head.state_dict().items():
        np.testing.assert_array_equal(again.head.state_dict()[k], v)
    other = train_head(
        text, owner, fr, config=HeadTrainConfig(**{**CFG.__dict__, "seed": 1}), caption_groups=groups
    )
    assert not np.array_equal(
        other.head.state_dict()[XPOOL_PREFIX + "cross_attn.q_proj.weight"],
        trained.head.state_dict()[XPOOL_PREFIX + "cross_attn.q_proj.weight"],
    )


def test_state_dict_uses_official_names(trained) -> None:
    keys = set(XPoolTrainModel(DIM).state_dict())
    assert keys == {XPOOL_PREFIX + k for k in XPOOL_PARAMETER_NAMES} | {"logit_scale"}
    assert float(trained.state_dict["logit_scale"].exp()) <= 100.0 + 1e-4


@pytest.mark.parametrize("num_heads", [1, 4])
def test_torch_module_equals_numpy_head(trained, num_heads: int) -> None:
    rng = np.random.default_rng(3)
    module = XPoolModule(DIM, num_heads=num_heads).double()
    if num_heads == 1:
        module.load_state_dict({k: torch.from_numpy(v) for k, v in trained.head.state_dict("").items()})
    else:
        with torch.no_grad():  # random weights: exercise every parameter
            for p in module.parameters():
                p.copy_(
                    torch.from_numpy(
                        rng.standard_normal(tuple(p.shape)) * 0.3 + (1.0 if p.ndim == 1 else 0.0)
                    )
                )
    module.eval()
    head = XPoolHead.from_state_dict(
        {XPOOL_PREFIX + k: v for k, v in module.state_dict().items()}, num_heads=num_heads
    )
    text = rng.standard_normal((5, DIM))
    frames = rng.standard_normal((6, 7, DIM))
    mask = np.ones((6, 7), bool)
    mask[2, 4:] = False
    mask[5, 1:] = False
    with torch.no_grad():
        pooled = module(torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)).numpy()
        sims = module.similarity(
            torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)
        ).numpy()
    np.testing.assert_allclose(pooled, head.pool(text, frames, mask), rtol=0, atol=1e-10)
    np.testing.assert_allclose(sims, head.similarity(text, frames, mask), rtol=0, atol=1e-10)
    np.testing.assert_allclose(sims, head.aggregate(text, frames, mask).scores, rtol=0, atol=1e-9)


def test_dropout_only_in_training() -> None:
    m = XPoolModule(DIM, dropout=0.3)
    with torch.no_grad():
        m.linear_proj.weight.mul_(3.0)
    t, f = torch.randn(2, DIM), torch.randn(3, 4, DIM)
    mask = torch.ones(3, 4, dtype=torch.bool)
    m.eval()
    a, b = m(t, f, mask), m(t, f, mask)
    assert torch.equal(a, b)
    m.train()
    assert not torch.equal(m(t, f, mask), a)


def test_bad_inputs() -> None:
    text, owner, fr, _ = scene_task(0, n_videos=10)
    with pytest.raises(InvalidInputError):
        train_head(text, owner[:-1], fr, config=CFG)
    with pytest.raises(InvalidInputError, match="at least 4 videos"):
        train_head(text[:3], np.zeros(3, int), fr[:3], config=CFG)
    with pytest.raises(ConfigError):
        train_head(text, owner, fr, config=HeadTrainConfig(batch_size=1))


def test_head_bundle_and_onnx(trained, test_bundle, tmp_path: Path) -> None:
    from vtr_qdrant.model.bundle import ModelBundle

    pytest.importorskip("onnx")
    # the test bundle has D=32 like the task: attach the trained head to it
    out = tmp_path / "with-head"
    bundle = write_head_bundle(trained, test_bundle, out, onnx=True)
    assert bundle.manifest.xpool is not None and bundle.manifest.xpool.num_heads == 1
    assert bundle.fingerprint != test_bundle.fingerprint
    assert (
        towers_fingerprint(bundle.manifest)
        == test_bundle.fingerprint
        == towers_fingerprint(test_bundle.manifest)
    )
    assert (out / "xpool.onnx").is_file() and (out / "train_report.json").is_file()
    assert bundle.manifest.source.recipe["xpool"]["best_step"] == trained.best_step
    loaded = XPoolHead.load(ModelBundle.load(out).file("xpool.npz"))
    for k, v in trained.head.state_dict().items():
        np.testing.assert_allclose(loaded.state_dict()[k], v, rtol=0, atol=1e-7)
    with pytest.raises(ConfigError, match="not empty"):
        write_head_bundle(trained, test_bundle, out)
    with pytest.raises(ConfigError, match="new folder"):
        write_head_bundle(trained, test_bundle, test_bundle.path, overwrite=True)


def test_onnx_export_multihead(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    params = {
        k: (rng.standard_normal((DIM, DIM)) * 0.2 + np.eye(DIM))
        if k.endswith("weight") and "layer_norm" not in k
        else rng.standard_normal(DIM) * 0.1 + ("layer_norm" in k and k.endswith("weight"))
        for k in XPOOL_PARAMETER_NAMES
    }
    head = XPoolHead(params, num_heads=2)
    assert export_head_onnx(head, tmp_path / "h.onnx").is_file()


def test_attention_scale_is_folded_into_q_proj_exactly() -> None:
    rng = np.random.default_rng(5)
    model = XPoolTrainModel(DIM, num_heads=2, dropout=0.0, learn_attention_scale=True).double()
    with torch.no_grad():
        for p in model.pool_frames.parameters():
            p.add_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * 0.2))
        model.attention_log_scale.fill_(-1.3)  # type: ignore[union-attr]
    model.eval()
    text, frames = rng.standard_normal((4, DIM)), rng.standard_normal((5, 6, DIM))
    mask = np.ones((5, 6), bool)
    mask[1, 2:] = False
    with torch.no_grad():
        want = model.similarity(
            torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)
        ).numpy()
        plain = model.pool_frames.similarity(
            torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)
        ).numpy()
    head = model.to_numpy_head()
    np.testing.assert_allclose(head.similarity(text, frames, mask), want, rtol=0, atol=1e-10)
    assert np.abs(plain - want).max() > 1e-3  # the scale changes the scores, so the test can fail
    assert set(XPoolTrainModel.head_state_dict(model.state_dict())) == {
        XPOOL_PREFIX + k for k in XPOOL_PARAMETER_NAMES
    }


def test_trainable_subsets_and_decay_toward_identity() -> None:
    text, owner, fr, groups = scene_task(0, n_videos=40)
    base = {**CFG.__dict__, "max_steps": 20, "eval_every": 10}
    identity = XPoolHead.identity(DIM).state_dict("")
    frozen = [
        k
        for k in XPOOL_PARAMETER_NAMES
        if k.startswith(("cross_attn.v_", "cross_attn.out", "linear", "layer_norm2", "layer_norm3"))
    ]

    def moved(result, keys):
        sd = result.state_dict
        return {k: float((sd[XPOOL_PREFIX + k].double().numpy() - identity[k]).__abs__().max()) for k in keys}

    att = train_head(
        text, owner, fr, config=HeadTrainConfig(**{**base, "trainable": "attention"}), caption_groups=groups
    )
    assert max(moved(att, frozen).values()) == 0.0
    assert moved(att, ["cross_attn.q_proj.weight"])["cross_attn.q_proj.weight"] > 1e-3
    sc = train_head(
        text,
        owner,
        fr,
        config=HeadTrainConfig(**{**base, "trainable": "scale", "learn_attention_scale": True}),
        caption_groups=groups,
    )
    q = sc.state_dict[XPOOL_PREFIX + "cross_attn.q_proj.weight"].double().numpy()
    # the kept head is a pure rescaling of the identity q_proj, and the scale did learn
    assert np.allclose(np.diag(q), q[0, 0]) and np.count_nonzero(q - np.diag(np.diag(q))) == 0
    assert abs(sc.history[-1]["attention_scale"] - 1.0) > 1e-3
    assert max(moved(sc, [k for k in XPOOL_PARAMETER_NAMES if "q_proj" not in k]).values()) == 0.0
    # a strong decay toward the initialisation keeps every weight at identity (decay to 0 would not)
    held = train_head(
        text,
        owner,
        fr,
        config=HeadTrainConfig(**{**base, "weight_decay": 1.0 / CFG.lr, "warmup_steps": 0}),
        caption_groups=groups,
    )
    assert max(moved(held, XPOOL_PARAMETER_NAMES).values()) < 1e-2
    with pytest.raises(ConfigError, match="trainable"):
        HeadTrainConfig(trainable="q").check()
    with pytest.raises(ConfigError, match="learn_attention_scale"):
        HeadTrainConfig(trainable="scale").check()


def test_hard_negative_batches_and_loss_options() -> None:
    from onnx_export.head_batches import hard_batch, nearest_videos

    text, owner, fr, groups = scene_task(0, n_videos=40)
    videos = np.arange(2, 40)
    nb = nearest_videos(fr, np.ones(fr.shape[:2], bool), videos, 4)
    mean = fr.mean(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    sims = mean @ mean.T
    for v in (2, 17, 39):
        others = [u for u in videos if u != v]
        assert nb[v][0] == max(others, key=lambda u: sims[v, u])  # nearest first, never itself
        assert set(nb[v]) <= set(videos.tolist()) and v not in nb[v]
    batch, nxt = hard_batch(videos, 0, 16, 4, nb)
    assert len(batch) == len(set(batch.tolist())) == 16 and nxt <= 16
    assert nb[int(videos[0])][0] in batch  # the first anchor brought its nearest neighbour
    cfg = HeadTrainConfig(**{**CFG.__dict__, "max_steps": 10, "hard_negatives": 4, "v2t_weight": 0.0})
    assert train_head(text, owner, fr, config=cfg, caption_groups=groups).history[-1]["loss"] > 0
    for bad in ({"hard_negatives": 1}, {"hard_negatives": 999}, {"v2t_weight": -1.0}):
        with pytest.raises(ConfigError):
            HeadTrainConfig(**bad).check()  # type: ignore[arg-type]


@pytest.mark.parametrize("num_heads", [1, 2])
def test_adaptive_torch_model_equals_numpy_head(num_heads: int, tmp_path: Path) -> None:
    """The trained query-adaptive scale means the same in torch, in numpy (both forms) and in ONNX."""
    rng = np.random.default_rng(4)
    model = XPoolTrainModel(DIM, num_heads, dropout=0.0, adaptive_scale=True).double()
    with torch.no_grad():
        for p in model.pool_frames.parameters():
            p.add_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * 0.2))
    model.eval()
    head = XPoolTrainModel.head_state_dict(model.state_dict())
    numpy_head = XPoolHead.from_state_dict(head, num_heads=num_heads)
    assert numpy_head.adaptive
    text = rng.standard_normal((5, DIM))
    frames = rng.standard_normal((6, 7, DIM))
    mask = np.ones((6, 7), bool)
    mask[2, 4:] = False
    with torch.no_grad():
        sims = model.similarity(torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(sims, numpy_head.similarity(text, frames, mask), rtol=0, atol=1e-10)
    np.testing.assert_allclose(sims, numpy_head.aggregate(text, frames, mask).scores, rtol=0, atol=1e-9)
    assert export_head_onnx(numpy_head, tmp_path / "adaptive.onnx").is_file()  # checked against numpy inside


@pytest.mark.slow
def test_adaptive_training_beats_the_identity_head_on_both_query_kinds() -> None:
    """A small run of the shipped recipe on a training world, scored on a held-out world."""
    from onnx_export.train_synthetic_head import training_data
    from vtr_qdrant import synthetic as syn
    from vtr_qdrant.eval.metrics import relevance_indices
    from vtr_qdrant.model.bundle import resolve_bundle

    bundle = resolve_bundle("synthetic-world/v1")
    frames, text, owner, groups = training_data(bundle, [301], 300, video_caption_weight=6)
    cfg = HeadTrainConfig(
        max_steps=300, lr=0.1, trainable="adaptive", adaptive_scale=True, weight_decay=0.0, patience=100, threads=2
    )
    head = train_head(text, owner, frames, config=cfg, caption_groups=groups).head
    world = syn.generate_world(syn.heldout_seed(60), 80)
    fenc, tenc = bundle.frame_encoder(), bundle.text_encoder()
    size = bundle.manifest.image.image_size
    held = np.stack([
        fenc.encode(syn.render_video_frames(v, size, syn.uniform_timestamps(v.duration, 12), supersample=4)[0])
        for v in world.videos
    ])
    corpus = EvalCorpus.from_arrays(world.video_ids, held)
    identity = XPoolHead.identity(bundle.embed_dim)
    for kind in ("scene", "video"):
        queries = world.queries(kind)
        rel = relevance_indices(queries, world.video_ids)
        t = tenc.encode([q.text for q in queries])
        r1 = {n: evaluate_retrieval(exhaustive_scores(h, t, corpus), rel)["R@1"] for n, h in (("id", identity), ("ad", head))}
        assert r1["ad"] > r1["id"], (kind, r1)
