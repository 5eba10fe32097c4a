"""Model bundles: manifest, checksums, name resolution, encoders and preprocessing."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from vtr_qdrant import ArtifactError, InvalidInputError, ModelNotFoundError, resolve_bundle
from vtr_qdrant.model.bundle import ModelBundle, cache_dir
from vtr_qdrant.model.manifest import BundleManifest, read_manifest
from vtr_qdrant.model.preprocess import preprocess_images, resize_center_crop
from vtr_qdrant.model.testing import make_test_bundle


def test_manifest_is_strict_and_fingerprinted(test_bundle: ModelBundle) -> None:
    m = test_bundle.manifest
    assert set(m.files) == {"visual.onnx", "text.onnx", "bpe_merges.txt.gz"}
    assert m.fingerprint == m.compute_fingerprint() and len(m.fingerprint) == 32
    data = json.loads((test_bundle.path / "manifest.json").read_text())
    data["unexpected"] = 1
    with pytest.raises(ValueError, match="unexpected"):
        BundleManifest.model_validate(data)
    data.pop("unexpected")
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="upgrade vtr-qdrant"):
        BundleManifest.model_validate(data)


def test_same_weights_same_fingerprint(tmp_path: Path, test_bundle: ModelBundle) -> None:
    again = make_test_bundle(tmp_path / "again", name="renamed")
    assert again.fingerprint == test_bundle.fingerprint  # name/provenance do not enter it
    other = make_test_bundle(tmp_path / "other", seed=5)
    assert other.fingerprint != test_bundle.fingerprint


def _copy(bundle: ModelBundle, dst: Path) -> Path:
    shutil.copytree(bundle.path, dst)
    return dst


def test_corrupt_and_missing_files_name_the_file(tmp_path: Path, test_bundle: ModelBundle) -> None:
    root = _copy(test_bundle, tmp_path / "b")
    with open(root / "text.onnx", "ab") as f:
        f.write(b"junk")
    with pytest.raises(ArtifactError, match="'text.onnx' is corrupt"):
        ModelBundle.load(root)
    (root / "text.onnx").unlink()
    with pytest.raises(ArtifactError, match="'text.onnx' is missing"):
        ModelBundle.load(root)
    (root / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="must contain manifest.json"):
        ModelBundle.load(root)


def test_hand_edited_manifest_is_refused(tmp_path: Path, test_bundle: ModelBundle) -> None:
    root = _copy(test_bundle, tmp_path / "b")
    data = json.loads((root / "manifest.json").read_text())
    data["image"]["image_size"] = 64
    (root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="fingerprint does not match"):
        ModelBundle.load(root)
    with pytest.raises(ArtifactError, match="not a valid bundle manifest"):
        (root / "manifest.json").write_text("{}")
        read_manifest(root)


def test_resolve_names(tmp_path: Path, test_bundle: ModelBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_bundle(test_bundle) is test_bundle
    assert resolve_bundle(f"local-dir:{test_bundle.path}").fingerprint == test_bundle.fingerprint
    assert resolve_bundle(test_bundle.path).fingerprint == test_bundle.fingerprint
    monkeypatch.setenv("VTR_QDRANT_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    _copy(test_bundle, tmp_path / "cache" / "tiny__v0")
    assert resolve_bundle("tiny/v0").fingerprint == test_bundle.fingerprint
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_bundle(f"local-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(ModelNotFoundError, match="registry name"):
        resolve_bundle("no such model!")


def test_unknown_registry_name_without_exporter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import vtr_qdrant.model.bundle as b

    monkeypatch.setenv("VTR_QDRANT_CACHE", str(tmp_path))
    monkeypatch.setattr(b, "_exporter", None)
    monkeypatch.setitem(__import__("sys").modules, "onnx_export.registry", None)  # as if not installed
    with pytest.raises(ModelNotFoundError, match=r"pip install 'vtr-qdrant\[export\]'"):
        resolve_bundle("ViT-B-32/laion2b_s34b_b79k")


def test_encoders_shapes_norms_and_batching(test_bundle: ModelBundle) -> None:
    te = test_bundle.text_encoder(batch_size=2)
    emb = te.encode(["a red circle", "blue", "the green dog runs", "cat"])
    assert emb.shape == (4, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(te.encode("blue")[0], emb[1], atol=1e-6)
    fe = test_bundle.frame_encoder(batch_size=3)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    out = fe.encode(imgs)
    assert out.shape == (7, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[5], fe.encode(imgs[5:6])[0], atol=1e-5)
    # other sizes are resized + centre-cropped first
    assert fe.encode(rng.integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)).shape == (2, 32)
    with pytest.raises(InvalidInputError, match="uint8"):
        fe.encode(imgs.astype(np.float32))
    with pytest.raises(InvalidInputError, match=r"\(N, H, W, 3\)"):
        fe.encode(imgs[..., 0])
    with pytest.raises(InvalidInputError, match="empty"):
        te.encode(["ok", ""])


def test_preprocess_matches_open_clip_transform(test_bundle: ModelBundle) -> None:
    """Independent reference: torchvision's Resize + CenterCrop + Normalize on PIL images."""
    tv = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    spec = test_bundle.manifest.image
    t = tv.Compose(
        [
            tv.Resize(spec.image_size, interpolation=tv.InterpolationMode.BICUBIC),
            tv.CenterCrop(spec.image_size),
            tv.ToTensor(),
            tv.Normalize(spec.mean, spec.std),
        ]
    )
    rng = np.random.default_rng(1)
    for h, w in [(48, 80), (81, 40), (32, 32), (33, 45)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = t(Image.fromarray(img)).numpy()
        ours = preprocess_images(img[None], spec)[0]
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert resize_center_crop(np.zeros((10, 20, 3), np.uint8), 8, resize_mode="squash").shape == (8, 8, 3)


def test_cuda_request_without_provider_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import vtr_qdrant.model.runtime as rt

    monkeypatch.setattr(rt, "available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(rt, "_warned", set())
    with pytest.warns(RuntimeWarning, match="CUDA was requested"):
        assert rt.providers_for("cuda") == ["CPUExecutionProvider"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.providers_for("cuda")  # second time: silent
        assert rt.providers_for("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'auto'"):
        rt.providers_for("tpu")  # type: ignore[arg-type]
