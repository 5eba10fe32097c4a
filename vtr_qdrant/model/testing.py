"""Tiny, torch-free model bundles for tests and examples.

:func:`make_test_bundle` writes a complete bundle (manifest, tokenizer merges, ``visual.onnx``,
``text.onnx``) whose graphs are built with ``onnx.helper``: the image tower average-pools the image
to a 4x4 grid and projects it, the text tower sums token embeddings and projects them. Weights are
random with a seed, so embeddings are meaningless but deterministic, and the bundle honours exactly
the I/O contract of exported open_clip bundles. Needs the ``onnx`` package (``dev`` extra).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .._optional import require
from .bundle import ModelBundle
from .manifest import BundleManifest, ImagePreprocess, ModelSource, OnnxTower, TokenizerSpec, write_manifest

__all__ = ["make_test_bundle", "write_tiny_merges"]

# A handful of merges over a small vocabulary: enough to exercise real BPE merging.
_TINY_MERGES = [
    "t h", "th e</w>", "r e", "re d</w>", "c i", "ci r", "cir c", "circ l", "circl e</w>", "b l",
    "bl u", "blu e</w>", "g r", "gr e", "gre e", "gree n</w>", "s q", "sq u", "squ a", "squa r",
    "squar e</w>", "o n</w>", "d o", "do g</w>", "c a", "ca t</w>", "r u", "ru n", "run s</w>",
]


def write_tiny_merges(path: str | os.PathLike[str]) -> int:
    """Write a small merges file in open_clip's ``bpe_simple_vocab`` format; returns the vocab size."""
    from .tokenizer import ClipTokenizer

    text = "#version: 0.2\n" + "\n".join(_TINY_MERGES)  # no trailing newline: open_clip reads it as an empty entry
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.encode("utf-8"))  # mtime 0: same bytes every time, so the fingerprint is reproducible
    return ClipTokenizer(path).vocab_size


def make_test_bundle(
    out_dir: str | os.PathLike[str],
    *,
    embed_dim: int = 32,
    image_size: int = 32,
    context_length: int = 16,
    seed: int = 0,
    name: str = "test-bundle",
) -> ModelBundle:
    """Write a tiny torch-free bundle into ``out_dir`` and return it loaded and verified.

    Args:
        out_dir: folder to create (or overwrite files in).
        embed_dim: D of both towers' (N, D) float32 outputs.
        image_size: S; the visual input is (N, 3, S, S) float32 (S divisible by 4).
        context_length: L; the text input is (N, L) int64.
        seed: weights seed; two bundles with the same arguments have the same fingerprint.
        name: the manifest's model name.
    """
    onnx = require("onnx", "dev", purpose="building test bundles")
    from onnx import TensorProto, helper, numpy_helper

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab_size = write_tiny_merges(root / "bpe_merges.txt.gz")

    # Image tower: (N,3,S,S) -> avgpool to 4x4 -> (N,48) -> linear -> (N,D)
    k = image_size // 4
    w_img = (rng.standard_normal((48, embed_dim)) / np.sqrt(48)).astype(np.float32)
    b_img = (rng.standard_normal(embed_dim) * 0.1).astype(np.float32)
    visual = helper.make_graph(
        [
            helper.make_node("AveragePool", ["pixel_values"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w_img"], ["proj"]),
            helper.make_node("Add", ["proj", "b_img"], ["image_embeds"]),
        ],
        "visual",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, image_size, image_size])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["N", embed_dim])],
        [numpy_helper.from_array(w_img, "w_img"), numpy_helper.from_array(b_img, "b_img")],
    )
    # Text tower: (N,L) int64 -> embedding lookup -> sum over tokens -> linear -> (N,D)
    emb = rng.standard_normal((vocab_size, embed_dim)).astype(np.float32)
    emb[0] = 0.0  # the padding id contributes nothing
    w_txt = (rng.standard_normal((embed_dim, embed_dim)) / np.sqrt(embed_dim)).astype(np.float32)
    text = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "input_ids"], ["tok"], axis=0),
            helper.make_node("ReduceSum", ["tok", "axes"], ["summed"], keepdims=0),
            helper.make_node("MatMul", ["summed", "w_txt"], ["text_embeds"]),
        ],
        "text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", context_length])],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["N", embed_dim])],
        [
            numpy_helper.from_array(emb, "emb"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(w_txt, "w_txt"),
        ],
    )
    for graph, fname in ((visual, "visual.onnx"), (text, "text.onnx")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vtr-qdrant-testing")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(root / fname))

    manifest = BundleManifest(
        name=name,
        source=ModelSource(framework="onnx.helper", architecture="tiny-test", recipe={"seed": seed}),
        embed_dim=embed_dim,
        image=ImagePreprocess(image_size=image_size, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
        tokenizer=TokenizerSpec(file="bpe_merges.txt.gz", context_length=context_length, vocab_size=vocab_size),
        visual=OnnxTower(file="visual.onnx", input_name="pixel_values", input_dtype="float32", output_name="image_embeds", normalized=False),
        text=OnnxTower(file="text.onnx", input_name="input_ids", input_dtype="int64", output_name="text_embeds", normalized=False),
        created_at="2026-01-01T00:00:00+00:00",
    )
    write_manifest(root, manifest)
    return ModelBundle.load(root)
