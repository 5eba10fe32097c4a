"""Export of open_clip models to bundles: parity, manifest, atomicity, int8, registry names.

A tiny open_clip architecture (2 layers, width 64, 32 px images) random-initialised with a fixed
seed stands in for a real model: same code paths, seconds instead of minutes, no hub download.
Reference embeddings come from torch/open_clip (independent of the ONNX graphs under test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx  # noqa: E402

from onnx_export import clip as oclip  # noqa: E402
from onnx_export import clip_export  # noqa: E402
from onnx_export import pretrained as opre  # noqa: E402
from onnx_export.verify import Parity, onnx_session  # noqa: E402
from vtr_qdrant.errors import ArtifactError, ConfigError, ModelNotFoundError  # noqa: E402
from vtr_qdrant.model.bundle import ModelBundle, resolve_bundle  # noqa: E402
from vtr_qdrant.model.manifest import ModelSource  # noqa: E402

pytestmark = pytest.mark.export

TINY = "vtr-tiny-export-test"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
TEXTS = [
    "",
    "a",
    "a red square moving left on a blue background",
    "Two kids play football on the beach at sunset, waves crashing behind them!!!",
    "café 東京 🚀 &amp; <b>bold</b>",
    " ".join(["a very long caption"] * 40),
]


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg_dir = tmp_path_factory.mktemp("oc_cfg")
    (cfg_dir / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_dir)
    return TINY


def _tiny_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(arch).eval()


@pytest.fixture(scope="module")
def tiny_model(tiny_arch: str) -> torch.nn.Module:
    return _tiny_model(tiny_arch)


def _export(model: torch.nn.Module, out_dir: Path, **kw: object) -> oclip.ExportReport:
    from open_clip.tokenizer import default_bpe

    opts: dict[str, object] = dict(
        name="tiny/test",
        image_size=32,
        mean=MEAN,
        std=STD,
        context_length=77,
        merges_file=default_bpe(),
        source=ModelSource(architecture=TINY, pretrained=None, recipe={"seed": 0}),
    )
    opts.update(kw)
    return oclip.export_model(model, out_dir=out_dir, **opts)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bundle(tiny_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> oclip.ExportReport:
    # The default exporter path (dynamo, legacy fallback); other tests use the faster legacy one.
    return _export(tiny_model, tmp_path_factory.mktemp("b") / "tiny", fuse=True)


def _torch_text(model: torch.nn.Module, texts: list[str]) -> np.ndarray:
    ids = open_clip.get_tokenizer("ViT-B-32")(texts)
    with torch.no_grad():
        return model.encode_text(ids, normalize=True).numpy(), ids.numpy()


def test_export_parity_report(bundle: oclip.ExportReport) -> None:
    assert bundle.visual_min_cosine >= 0.9999
    assert bundle.text_min_cosine >= 0.9999
    assert bundle.visual_max_abs_diff < 1e-4
    assert bundle.text_max_abs_diff < 1e-4
    assert bundle.method in ("dynamo", "legacy")
    assert sorted(p.name for p in bundle.out_dir.iterdir()) == [
        "bpe_simple_vocab_16e6.txt.gz", "manifest.json", "text.onnx", "visual.onnx"
    ]
    # nothing left behind next to the bundle
    assert [p.name for p in bundle.out_dir.parent.iterdir()] == ["tiny"]


def test_manifest_valid_and_loadable(bundle: oclip.ExportReport) -> None:
    b = ModelBundle.load(bundle.out_dir, verify=True)
    m = b.manifest
    assert m.fingerprint == bundle.manifest.fingerprint
    assert m.embed_dim == 32
    assert (m.image.image_size, m.image.mean, m.image.std, m.image.resize_mode) == (32, MEAN, STD, "shortest")
    assert m.tokenizer.context_length == 77 and m.tokenizer.vocab_size == 49408
    assert (m.visual.input_name, m.visual.input_dtype, m.visual.output_name) == ("pixel_values", "float32", "image_embeds")
    assert (m.text.input_name, m.text.input_dtype, m.text.output_name) == ("input_ids", "int64", "text_embeds")
    assert m.visual.normalized and m.text.normalized
    parity = m.source.recipe["parity"]
    assert parity["visual"]["min_cosine"] >= 0.9999 and parity["text"]["min_cosine"] >= 0.9999
    assert m.source.recipe["seed"] == 0 and m.source.recipe["export"]["opset"] == 18
    assert set(m.files) == {"visual.onnx", "text.onnx", "bpe_simple_vocab_16e6.txt.gz"}


def test_graph_io_contract(bundle: oclip.ExportReport) -> None:
    for fname, inp, dtype, out in (
        ("visual.onnx", "pixel_values", onnx.TensorProto.FLOAT, "image_embeds"),
        ("text.onnx", "input_ids", onnx.TensorProto.INT64, "text_embeds"),
    ):
        g = onnx.load(str(bundle.out_dir / fname))
        assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) >= 17
        (i,) = g.graph.input
        (o,) = g.graph.output
        assert (i.name, i.type.tensor_type.elem_type, o.name) == (inp, dtype, out)
        assert i.type.tensor_type.shape.dim[0].dim_param  # symbolic (dynamic) batch axis
        assert o.type.tensor_type.shape.dim[0].dim_param


def test_text_batch_of_different_lengths(bundle: oclip.ExportReport, tiny_model: torch.nn.Module) -> None:
    ref, ids = _torch_text(tiny_model, TEXTS)
    eot = ids.argmax(axis=1)
    assert len(set(eot.tolist())) >= 4  # the EOT pooling position really differs across the batch
    sess = onnx_session(bundle.out_dir / "text.onnx")
    batched = sess.run(None, {"input_ids": ids.astype(np.int64)})[0]
    singles = np.concatenate([sess.run(None, {"input_ids": ids[i : i + 1]})[0] for i in range(len(ids))])
    assert np.min(np.sum(batched * ref, axis=1)) >= 0.9999
    np.testing.assert_allclose(singles, batched, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_visual_matches_open_clip(bundle: oclip.ExportReport, tiny_model: torch.nn.Module) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_model.encode_image(torch.from_numpy(x), normalize=True).numpy()
    got = onnx_session(bundle.out_dir / "visual.onnx").run(None, {"pixel_values": x})[0]
    assert got.shape == (5, 32)
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999


def test_tampered_file_is_rejected(bundle: oclip.ExportReport, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle.out_dir, copy)
    ModelBundle.load(copy, verify=True)
    p = copy / "text.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        ModelBundle.load(copy, verify=True)


def test_failed_parity_writes_nothing(tiny_model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnx_export import clip_precision

    monkeypatch.setattr(clip_precision, "compare", lambda ref, cand: Parity(0.5, 0.9, int(len(ref))))
    out = tmp_path / "refused"
    with pytest.raises(oclip.ExportError, match="parity check failed"):
        _export(tiny_model, out, method="legacy")
    assert list(tmp_path.iterdir()) == []  # no target and no temporary sibling


def test_interrupted_export_writes_nothing(tiny_model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(clip_export, "write_manifest", boom)
    with pytest.raises(KeyboardInterrupt):
        _export(tiny_model, tmp_path / "killed", method="legacy")
    assert list(tmp_path.iterdir()) == []


def test_refuses_non_empty_out_dir(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        _export(tiny_model, tmp_path, method="legacy")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_bad_options(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="opset"):
        _export(tiny_model, tmp_path / "a", opset=16)
    with pytest.raises(ConfigError, match="two bundles"):
        _export(tiny_model, tmp_path / "b", fp16=True, int8=True)
    with pytest.raises(ConfigError, match="resize mode"):
        _export(tiny_model, tmp_path / "c", resize_mode="longest")
    assert list(tmp_path.iterdir()) == []


def test_int8_visual_tower(bundle: oclip.ExportReport, tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    rep = _export(tiny_model, tmp_path / "q", int8=True, method="legacy")
    fp32_size = (bundle.out_dir / "visual.onnx").stat().st_size
    q = rep.out_dir / "visual.onnx"
    assert q.stat().st_size < 0.8 * fp32_size
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in onnx.load(str(q)).graph.node)
    rec = rep.manifest.source.recipe["parity"]["visual_int8"]
    assert rec["min_cosine"] >= 0.99 and rec["bytes_int8"] < rec["bytes_fp32"]
    assert rep.manifest.source.recipe["export"]["int8"] is True
    # the quantised graph runs and still agrees with torch
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_model.encode_image(torch.from_numpy(x), normalize=True).numpy()
    got = onnx_session(q).run(None, {"pixel_values": x})[0]
    assert np.min(np.sum(got * ref, axis=1)) >= 0.99
    ModelBundle.load(rep.out_dir, verify=True)


def test_int8_text_tower(bundle: oclip.ExportReport, tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    from onnx_export.clip_precision import INT8_TEXT_MIN_COSINE

    try:
        rep = _export(tiny_model, tmp_path / "qt", int8_text=True, method="legacy")
    except oclip.ExportError as e:  # a model whose int8 text tower drifts is refused, and nothing is written
        assert "int8 text tower is too far from the fp32 graph" in str(e)
        assert not (tmp_path / "qt").exists()
        return
    rec = rep.manifest.source.recipe["parity"]["text_int8"]
    assert rec["min_cosine_vs_fp32"] >= INT8_TEXT_MIN_COSINE and rec["bytes_int8"] < rec["bytes_fp32"]
    assert rep.manifest.source.recipe["export"]["int8_text"] is True
    q = rep.out_dir / "text.onnx"
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in onnx.load(str(q)).graph.node)
    assert (rep.out_dir / "visual.onnx").stat().st_size == (bundle.out_dir / "visual.onnx").stat().st_size  # fp32 kept
    texts = ["a red circle", "two blue squares on green", "x"]
    fp32 = ModelBundle.load(bundle.out_dir, verify=True).text_encoder().encode(texts)
    int8 = ModelBundle.load(rep.out_dir, verify=True).text_encoder().encode(texts)
    assert np.min(np.sum(fp32 * int8, axis=1)) >= INT8_TEXT_MIN_COSINE - 1e-3  # beyond the parity texts too


def test_export_pretrained_from_local_checkpoint(tiny_arch: str, tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), ckpt)
    rep = opre.export_pretrained(tiny_arch, checkpoint=ckpt, out_dir=tmp_path / "out", method="legacy")
    m = rep.manifest
    assert m.name == f"{tiny_arch}/tiny"
    assert (m.source.architecture, m.source.checkpoint) == (tiny_arch, str(ckpt))
    assert m.image.image_size == 32 and m.image.mean == pytest.approx(MEAN) and m.tokenizer.context_length == 77
    assert len(m.source.recipe["checkpoint_sha256"]) == 64
    assert rep.text_min_cosine >= 0.9999
    # the loaded weights are the checkpoint's, not a fresh random init
    ref, ids = _torch_text(tiny_model, TEXTS[:3])
    got = onnx_session(rep.out_dir / "text.onnx").run(None, {"input_ids": ids})[0]
    assert np.min(np.sum(got * ref, axis=1)) >= 0.9999


def test_export_pretrained_needs_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="random weights"):
        opre.export_pretrained("ViT-B-32", out_dir=tmp_path / "x")
    with pytest.raises(ModelNotFoundError, match="known tags"):
        opre.export_pretrained("ViT-B-32", pretrained="no-such-tag", out_dir=tmp_path / "x")
    with pytest.raises(ArtifactError, match="not found"):
        opre.export_pretrained("ViT-B-32", checkpoint=tmp_path / "missing.pt", out_dir=tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_hub_unreachable_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from onnx_export.__main__ import main

    def offline(*a: object, **k: object) -> None:
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    code = main(["clip", "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "unreachable" in err and "--checkpoint" in err
    assert not (tmp_path / "o").exists()


def test_cli_with_checkpoint(tiny_arch: str, tiny_model: torch.nn.Module, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from onnx_export.__main__ import main

    ckpt = tmp_path / "w.pt"
    torch.save(tiny_model.state_dict(), ckpt)
    code = main(["clip", "--model", tiny_arch, "--checkpoint", str(ckpt), "--out", str(tmp_path / "cli"),
                 "--exporter", "legacy", "--name", "tiny/cli"])
    out = capsys.readouterr().out
    assert code == 0
    assert "min cosine" in out and "tiny/cli" in out
    assert ModelBundle.load(tmp_path / "cli").name == "tiny/cli"


def test_registry_name_exports_into_cache(tiny_model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx_export.registry as reg

    cache = tmp_path / "cache"
    monkeypatch.setenv("VTR_QDRANT_CACHE", str(cache))
    calls: list[tuple[str, str, Path]] = []

    def fake_export_pretrained(arch: str, *, pretrained: str, out_dir: Path, name: str, **kw: object) -> oclip.ExportReport:
        calls.append((arch, pretrained, Path(out_dir)))
        return _export(tiny_model, out_dir, name=name, method="legacy",
                       source=ModelSource(architecture=arch, pretrained=pretrained))

    monkeypatch.setattr(opre, "export_pretrained", fake_export_pretrained)
    reg.register_exporter(reg.export_registry_name)
    b = resolve_bundle("TinyArch/seed0")
    assert calls == [("TinyArch", "seed0", cache / "TinyArch__seed0")]
    assert b.path == cache / "TinyArch__seed0" and b.name == "TinyArch/seed0"
    assert b.manifest.source.pretrained == "seed0"
    # second resolution hits the cache, no new export
    assert resolve_bundle("TinyArch/seed0").fingerprint == b.fingerprint
    assert len(calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == ["TinyArch__seed0"]


def test_registry_unknown_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx_export.registry as reg

    monkeypatch.setenv("VTR_QDRANT_CACHE", str(tmp_path))
    reg.register_exporter(reg.export_registry_name)
    with pytest.raises(ModelNotFoundError, match="list_pretrained"):
        resolve_bundle("NoSuchArch-xyz/some_tag")
    with pytest.raises(ModelNotFoundError, match="known tags"):
        resolve_bundle("ViT-B-32/not_a_real_tag")
    with pytest.raises(ModelNotFoundError, match="ARCH/TAG"):
        reg.export_registry_name("just-a-name", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_stale_partial_folders_are_cleaned(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    import os

    stale = tmp_path / ".b.partial-old"
    (stale / "sub").mkdir(parents=True)
    os.utime(stale, (0, 0))
    fresh = tmp_path / ".b.partial-live"
    fresh.mkdir()
    _export(tiny_model, tmp_path / "b", method="legacy")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.partial-live", "b"]


def test_fp16_graphs_keep_fp32_io(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    rep = _export(tiny_model, tmp_path / "h", fp16=True, method="legacy")
    parity = rep.manifest.source.recipe["parity"]
    for tower in ("visual", "text"):
        g = onnx.load(str(rep.out_dir / f"{tower}.onnx"))
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.graph.initializer)
        assert g.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        rec = parity[f"{tower}_fp16"]
        # checked on CPU in a child process when ORT can run it, otherwise flagged for a GPU check
        assert (isinstance(rec, dict) and rec["min_cosine"] >= 0.999) or "GPU" in rec
    assert rep.manifest.visual.input_dtype == "float32"
    assert rep.text_min_cosine >= 0.9999  # the fp32 gate ran before the conversion


def test_opt_level_graphs_still_pass_parity(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    rep = _export(tiny_model, tmp_path / "o", opt_level="extended", method="legacy")
    assert rep.manifest.source.recipe["export"]["opt_level"] == "extended"
    assert rep.visual_min_cosine >= 0.9999 and rep.text_min_cosine >= 0.9999
    ModelBundle.load(rep.out_dir, verify=True)


def test_refuses_model_with_other_tokenizer(tiny_arch: str, tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    name = "vtr-tiny-export-canon"
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["text_cfg"]["tokenizer_kwargs"] = {"clean": "canonicalize"}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    ckpt = tmp_path / "w.pt"
    torch.save(tiny_model.state_dict(), ckpt)
    with pytest.raises(ConfigError, match="cannot reproduce"):
        opre.export_pretrained(name, checkpoint=ckpt, out_dir=tmp_path / "out", method="legacy")
    assert not (tmp_path / "out").exists()


def test_fused_export_records_fusions(bundle: oclip.ExportReport) -> None:
    fusions = bundle.manifest.source.recipe["export"]["fusions"]
    assert bundle.manifest.source.recipe["export"]["fuse"] is True
    assert fusions["attention_modules_rewritten"] == 4  # 2 visual + 2 text layers
    for tower in ("visual", "text"):
        ops = fusions[tower]["ops"]
        # one attention and one bias+GELU per layer, residual+LayerNorm twice per layer
        assert ops.get("Attention", 0) + ops.get("MultiHeadAttention", 0) == 2, ops
        assert ops["BiasGelu"] == 2 and ops["SkipLayerNormalization"] == 4, ops
        g = onnx.load(str(bundle.out_dir / f"{tower}.onnx"))
        assert {n.op_type for n in g.graph.node if n.domain == "com.microsoft"} >= {"BiasGelu", "SkipLayerNormalization"}
        assert not any(n.op_type == "Softmax" for n in g.graph.node)  # attention really fused
    # the fused graphs went through the same parity gate
    assert bundle.visual_min_cosine >= 0.9999 and bundle.text_min_cosine >= 0.9999


def test_unfused_export(tiny_model: torch.nn.Module, tmp_path: Path) -> None:
    rep = _export(tiny_model, tmp_path / "plain", method="legacy")  # fuse defaults to False
    export = rep.manifest.source.recipe["export"]
    assert export["fuse"] is False and export["fusions"] is None
    for tower in ("visual", "text"):
        g = onnx.load(str(rep.out_dir / f"{tower}.onnx"))
        assert not [n.op_type for n in g.graph.node if n.domain == "com.microsoft"]
    assert rep.visual_min_cosine >= 0.9999 and rep.text_min_cosine >= 0.9999
    # the export put the model's own attention modules back
    assert all(type(m).__name__ != "FusableAttention" for m in tiny_model.modules())


@pytest.mark.parametrize("batch_first", [True, False])
def test_fusable_attention_matches_torch(batch_first: bool) -> None:
    from onnx_export.towers import FusableAttention, fusable_attention

    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    holder = torch.nn.Sequential(mha)
    with torch.no_grad():
        for mask in (None, causal, causal.isinf()):
            ref = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
            with fusable_attention(holder) as n:
                assert n == 1 and isinstance(holder[0], FusableAttention)
                got = holder[0](x, x, x, need_weights=False, attn_mask=mask)[0]
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert holder[0] is mha


def test_frame_encoder_sub_batches(bundle: oclip.ExportReport, monkeypatch: pytest.MonkeyPatch) -> None:
    from vtr_qdrant.model.encoders import CPU_FRAME_BATCH, FrameEncoder

    enc = ModelBundle.load(bundle.out_dir).frame_encoder()
    assert enc.batch_size == CPU_FRAME_BATCH
    sizes: list[int] = []
    real = FrameEncoder._run

    def spy(self: FrameEncoder, batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(FrameEncoder, "_run", spy)
    frames = np.random.default_rng(0).integers(0, 255, (CPU_FRAME_BATCH * 2 + 3, 32, 32, 3), dtype=np.uint8)
    out = enc.encode(frames)
    assert sizes == [CPU_FRAME_BATCH, CPU_FRAME_BATCH, 3]
    sizes.clear()
    whole = FrameEncoder(enc.bundle, batch_size=len(frames)).encode(frames)
    assert sizes == [len(frames)]
    np.testing.assert_allclose(out, whole, atol=1e-5)
