"""Export an open_clip model to a verified vtr-qdrant model bundle.

A bundle folder holds ``visual.onnx``, ``text.onnx``, the tokenizer's merges file and
``manifest.json`` (schema: :mod:`vtr_qdrant.model.manifest`). :func:`export_model` takes any loaded
open_clip model; :func:`onnx_export.pretrained.export_pretrained` loads one by architecture and pretrained tag (or a local
checkpoint) and takes the preprocessing and context length from the model's own config, so the
bundle's preprocessing can never drift from its weights.

The folder appears atomically: everything is written into a hidden temporary sibling and renamed
into place at the end, so an interrupted or refused export leaves no half bundle at ``out_dir``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vtr_qdrant.errors import ConfigError
from vtr_qdrant.model.manifest import (
    BundleManifest,
    ImagePreprocess,
    ModelSource,
    OnnxTower,
    TokenizerSpec,
    write_manifest,
)

from .bundle_folder import STALE_PARTIAL_SECONDS, prepare_target, publish
from .clip_checks import check_merges_file, check_model, check_vocab, validate_options
from .clip_precision import (
    INT8_MIN_COSINE,
    check_fp32,
    convert_towers_fp16,
    fmt_parity,
    quantize_text_int8,
    quantize_visual_int8,
)
from .quantize import OptLevel, fuse_transformer, optimize_graph
from .towers import (
    TEXT_INPUT,
    TEXT_OUTPUT,
    VISUAL_INPUT,
    VISUAL_OUTPUT,
    ExportError,
    ExportMethod,
    TextTower,
    VisualTower,
    export_tower,
    fusable_attention,
)
from .verify import (
    PARITY_TEXTS,
    Parity,
    random_images,
    torch_outputs,
)

__all__ = [
    "ExportReport",
    "ExportError",
    "export_model",
    "tokenize_with",
    "VISUAL_FILE",
    "TEXT_FILE",
    "PARITY_IMAGES",
    "INT8_MIN_COSINE",
    "STALE_PARTIAL_SECONDS",
]


log = logging.getLogger("onnx_export.clip")

VISUAL_FILE = "visual.onnx"
TEXT_FILE = "text.onnx"
#: Number of random images in the visual parity check.
PARITY_IMAGES = 8


@dataclass
class ExportReport:
    """What an export wrote and how closely the ONNX graphs match torch.

    The four parity numbers compare the fp32 graphs run by onnxruntime (CPU) with the torch model
    (NaN when ``verify=False``). Quantised/half-precision results are in ``extra`` and in the
    manifest's ``source.recipe["parity"]``.

    Attributes:
        manifest: the manifest as written (with checksums and fingerprint).
        out_dir: the bundle folder.
        visual_max_abs_diff: largest element difference of the image embeddings.
        visual_min_cosine: smallest cosine between torch and ONNX image embeddings.
        text_max_abs_diff: largest element difference of the text embeddings.
        text_min_cosine: smallest cosine between torch and ONNX text embeddings.
        seconds: wall time of the export.
        method: the torch.onnx exporter that produced the graphs ("dynamo" or "legacy").
        extra: int8/fp16 parity and notes, as recorded in the manifest.
    """

    manifest: BundleManifest
    out_dir: Path
    visual_max_abs_diff: float
    visual_min_cosine: float
    text_max_abs_diff: float
    text_min_cosine: float
    seconds: float
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def format(self) -> str:
        """A human-readable multi-line summary (what the CLI prints)."""
        m = self.manifest
        lines = [
            f"bundle     {self.out_dir}",
            f"name       {m.name}   fingerprint {m.fingerprint}",
            f"model      {m.source.architecture or '?'} / {m.source.pretrained or m.source.checkpoint or '-'}   "
            f"embed_dim {m.embed_dim}   image {m.image.image_size}px ({m.image.resize_mode}, "
            f"{m.image.interpolation})   context {m.tokenizer.context_length}",
            f"exporter   {self.method}   opset {m.source.recipe.get('export', {}).get('opset', '?')}   "
            f"{self.seconds:.1f} s",
            "parity (torch fp32 vs onnxruntime CPU):",
            f"  visual   max|diff| {self.visual_max_abs_diff:.3g}   min cosine {self.visual_min_cosine:.6f}",
            f"  text     max|diff| {self.text_max_abs_diff:.3g}   min cosine {self.text_min_cosine:.6f}",
        ]
        for key, val in self.extra.items():
            if isinstance(val, dict) and "min_cosine" in val:
                lines.append(f"  {key:<8} max|diff| {val['max_abs_diff']:.3g}   min cosine {val['min_cosine']:.6f}"
                             + (f"   (vs fp32 ONNX: {val['min_cosine_vs_fp32']:.6f})" if "min_cosine_vs_fp32" in val else ""))
            elif isinstance(val, str):
                lines.append(f"  {key}: {val}")
        for rel, digest in m.files.items():
            size = (self.out_dir / rel).stat().st_size if (self.out_dir / rel).exists() else 0
            lines.append(f"file       {rel:<32} {size / 1e6:8.1f} MB  sha256 {digest[:16]}...")
        return "\n".join(lines)


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in ("torch", "open_clip_torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def tokenize_with(merges_file: Path, context_length: int, texts: Sequence[str]) -> tuple[np.ndarray, int]:
    """Tokenise with the runtime's own torch-free tokenizer (so the check covers what users run)."""
    from vtr_qdrant.model.tokenizer import ClipTokenizer

    tok = ClipTokenizer(merges_file, context_length=context_length)
    return np.asarray(tok.tokenize(list(texts)), dtype=np.int64), int(tok.vocab_size)


def export_model(
    model: nn.Module,
    *,
    out_dir: str | os.PathLike[str],
    name: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    context_length: int,
    merges_file: str | os.PathLike[str],
    source: ModelSource,
    resize_mode: Literal["shortest", "squash"] = "shortest",
    interpolation: Literal["bicubic", "bilinear"] = "bicubic",
    opset: int = 18,
    fp16: bool = False,
    int8: bool = False,
    int8_text: bool = False,
    verify: bool = True,
    min_cosine: float = 0.9999,
    normalize: bool = True,
    opt_level: OptLevel | None = None,
    method: ExportMethod = "auto",
    overwrite: bool = False,
    fuse: bool = False,
) -> ExportReport:
    """Export an open_clip model's two towers to a bundle folder, verified against torch.

    Args:
        model: an open_clip model (anything with ``encode_image(x)`` / ``encode_text(ids)``), fp32,
            on CPU. Put in eval mode for the export; its previous mode is restored.
        out_dir: the bundle folder to create (absent or empty, unless ``overwrite``).
        name: bundle name recorded in the manifest (e.g. ``"ViT-B-32/laion2b_s34b_b79k"``).
        image_size: square input size S of the image tower.
        mean: per-channel RGB mean used to normalise pixels in [0, 1].
        std: per-channel RGB std.
        context_length: token sequence length L of the text tower.
        merges_file: the gzip BPE merges file of the model's tokenizer (copied into the bundle).
        source: provenance (architecture, tag, checkpoint, recipe); the exporter adds its own
            options and the parity numbers under ``recipe["export"]`` and ``recipe["parity"]``.
        resize_mode: how frames are resized before the centre crop (from the model's preprocess config).
        interpolation: resize filter.
        opset: ONNX opset, >= 17.
        fp16: convert both graphs to float16 (fp32 I/O) for the GPU path; checked on CPU when
            onnxruntime's CPU kernels allow it, otherwise logged as needing a GPU to check.
        int8: dynamically quantise the visual tower's MatMul/Gemm weights to int8 (CPU path); the
            text tower stays fp32. Refused below cosine 0.99 to torch.
        int8_text: the same for the text tower (faster query encoding on a CPU); refused below
            cosine 0.999 to the fp32 graph on the parity texts. Recorded in the manifest.
        verify: compare torch and onnxruntime outputs (strongly recommended).
        min_cosine: the fp32 graphs must reach at least this cosine to torch on every row, else
            the export is refused and nothing is written.
        normalize: L2-normalise the tower outputs inside the graphs (recorded as ``normalized``).
        opt_level: if set, save graphs pre-optimised by onnxruntime at this level
            (``disable``/``basic``/``extended``/``all``; above ``basic`` the file is
            hardware-specific).
        method: torch exporter: ``"auto"`` (dynamo, falling back to legacy), ``"dynamo"``, ``"legacy"``.
        overwrite: replace an existing non-empty ``out_dir`` (atomically, by rename).
        fuse: export attention in a fusable form and fuse each transformer layer into onnxruntime
            contrib ops (``Attention``, ``SkipLayerNormalization``, ``BiasGelu``; see
            :func:`onnx_export.quantize.fuse_transformer`). Same arithmetic, parity-checked like
            the plain graphs, recorded under ``recipe["export"]["fusions"]``; the graphs then need
            onnxruntime (CPU or CUDA) rather than any ONNX runtime. If the fusion pass fails the
            plain graphs are kept, with a warning and the error in the manifest.
            Off by default: on a 2-core AVX2 CPU the fused ViT-B/32 tower measured 0-13 % faster
            at batch 16/64 but slower at batch 1 (benchmarks/bench_encoders.py); enable it
            where a benchmark on the target machine shows a gain.

    Returns:
        An :class:`ExportReport`.

    Raises:
        ConfigError: invalid options, or ``out_dir`` is not empty.
        ArtifactError: the merges file is missing or not gzip.
        ExportError: torch.onnx failed, or parity is below ``min_cosine`` (nothing is written).
    """
    # long: one linear orchestration over ~20 public options; each step is a function of its own
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser().absolute()
    merges = Path(merges_file).expanduser()
    validate_options(
        name=name, image_size=image_size, mean=mean, std=std, context_length=context_length,
        resize_mode=resize_mode, interpolation=interpolation, opset=opset, fp16=fp16, int8=int8 or int8_text,
        min_cosine=min_cosine, opt_level=opt_level,
    )
    check_model(model)
    check_merges_file(merges)
    prepare_target(out, overwrite)
    parity_ids, tok_vocab = tokenize_with(merges, context_length, PARITY_TEXTS)
    check_vocab(model, merges, tok_vocab)
    was_training = model.training
    model.eval()
    visual = VisualTower(model, normalize=normalize).eval()
    text = TextTower(model, normalize=normalize).eval()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        vpath, tpath = tmp / VISUAL_FILE, tmp / TEXT_FILE
        used, fusions = _export_graphs(
            model, visual, text, vpath, tpath, image_size, mean, std, parity_ids, opset, method, fuse, opt_level
        )

        images = random_images(PARITY_IMAGES, image_size, mean, std, seed=0)
        ref_v = torch_outputs(visual, images)
        ref_t = torch_outputs(text, parity_ids)
        embed_dim = int(ref_v.shape[-1])
        if ref_t.shape[-1] != embed_dim:
            raise ConfigError(
                f"image embeddings have {embed_dim} dims but text embeddings {ref_t.shape[-1]}: not a CLIP-style model"
            )

        parity, pv, pt = _fp32_parity(verify, vpath, tpath, images, parity_ids, ref_v, ref_t, min_cosine)
        extra: dict[str, Any] = {}
        if int8:
            parity["visual_int8"] = extra["int8"] = quantize_visual_int8(tmp, vpath, images, ref_v)
        if int8_text:
            parity["text_int8"] = extra["int8_text"] = quantize_text_int8(tmp, tpath, parity_ids, ref_t)

        if fp16:
            checked = convert_towers_fp16(vpath, tpath, images, parity_ids, ref_v, ref_t)
            parity.update(checked)
            extra.update(checked)

        tok_file = merges.name if merges.name.endswith(".gz") else merges.name + ".gz"
        shutil.copyfile(merges, tmp / tok_file)

        manifest = _manifest(
            name, source, parity, embed_dim, image_size, mean, std, resize_mode, interpolation, tok_file,
            context_length, tok_vocab, normalize,
            export={"method": used, "opset": opset, "fp16": fp16, "int8": int8, "int8_text": int8_text, "opt_level": opt_level,
                    "fuse": fuse, "fusions": fusions},
        )
        done = write_manifest(tmp, manifest)
        publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    log.info("wrote bundle %r to %s in %.1f s (fingerprint %s)", name, out, seconds, done.fingerprint)
    return ExportReport(
        manifest=done, out_dir=out, visual_max_abs_diff=pv.max_abs_diff, visual_min_cosine=pv.min_cosine,
        text_max_abs_diff=pt.max_abs_diff, text_min_cosine=pt.min_cosine, seconds=seconds, method=used, extra=extra,
    )


def _fp32_parity(
    verify: bool, vpath: Path, tpath: Path, images: np.ndarray, ids: np.ndarray, ref_v: np.ndarray,
    ref_t: np.ndarray, min_cosine: float,
) -> tuple[dict[str, Any], Parity, Parity]:
    """The parity record of the fp32 graphs (refused below ``min_cosine``), or a note that it was skipped."""
    parity: dict[str, Any] = {"images": PARITY_IMAGES, "texts": len(PARITY_TEXTS)}
    nan = float("nan")
    pv = pt = Parity(nan, nan, 0)
    if verify:
        pv, pt = check_fp32(vpath, tpath, images, ids, ref_v, ref_t, min_cosine)
        parity["visual"], parity["text"] = pv.as_dict(), pt.as_dict()
        log.info("parity visual: %s; text: %s", fmt_parity(pv), fmt_parity(pt))
    else:
        log.warning("verify=False: the exported graphs were NOT compared with torch")
        parity["skipped"] = True
    return parity, pv, pt


def _export_graphs(
    model: nn.Module, visual: nn.Module, text: nn.Module, vpath: Path, tpath: Path, image_size: int,
    mean: Sequence[float], std: Sequence[float], parity_ids: np.ndarray, opset: int, method: ExportMethod,
    fuse: bool, opt_level: OptLevel | None,
) -> tuple[str, dict[str, Any] | None]:
    """Export both towers (optionally fused and pre-optimised); returns (exporter used, fusion record)."""
    ex_img = torch.from_numpy(random_images(2, image_size, mean, std, seed=1))
    ex_ids = torch.from_numpy(parity_ids[1:3].copy())
    with fusable_attention(model) if fuse else contextlib.nullcontext(0) as n_swapped:
        log.info("exporting the visual tower (%s exporter, opset %d)", method, opset)
        used_v = export_tower(visual, ex_img, vpath, input_name=VISUAL_INPUT, output_name=VISUAL_OUTPUT,
                              opset=opset, method=method)
        log.info("exporting the text tower (%s exporter, opset %d)", method, opset)
        used_t = export_tower(text, ex_ids, tpath, input_name=TEXT_INPUT, output_name=TEXT_OUTPUT,
                              opset=opset, method=method)
    used = used_v if used_v == used_t else f"visual:{used_v},text:{used_t}"
    fusions: dict[str, Any] | None = None
    if fuse:
        fusions = {"attention_modules_rewritten": n_swapped}
        for tower, path in (("visual", vpath), ("text", tpath)):
            try:
                fusions[tower] = fuse_transformer(path, path)
            except ExportError as e:
                log.warning("kept the unfused %s graph: %s", tower, e)
                fusions[tower] = {"error": str(e)[:300]}
    if opt_level is not None:
        optimize_graph(vpath, vpath, opt_level)
        optimize_graph(tpath, tpath, opt_level)

    return used, fusions


def _manifest(
    name: str, source: ModelSource, parity: dict[str, Any], embed_dim: int, image_size: int, mean: Sequence[float],
    std: Sequence[float], resize_mode: Literal["shortest", "squash"], interpolation: Literal["bicubic", "bilinear"],
    tok_file: str, context_length: int, tok_vocab: int, normalize: bool, *, export: dict[str, Any],
) -> BundleManifest:
    """The bundle manifest, with the export options and parity numbers in ``source.recipe``."""
    recipe = dict(source.recipe)
    recipe["export"] = {"exporter": "onnx_export.clip", **export, "normalize": normalize, "versions": _versions()}
    if export["fp16"]:
        recipe["export"]["note"] = (
            "float16 graphs for the CUDA execution provider; onnxruntime's CPU provider crashed (SIGSEGV) "
            "on such graphs at ORT_ENABLE_ALL in onnxruntime 1.32 (ORT_ENABLE_EXTENDED works)"
        )
    recipe["parity"] = parity
    io_dtype: Literal["float32"] = "float32"
    return BundleManifest(
        name=name,
        source=source.model_copy(update={"recipe": recipe}),
        embed_dim=embed_dim,
        image=ImagePreprocess(
            image_size=image_size,
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
            resize_mode=resize_mode,
            interpolation=interpolation,
        ),
        tokenizer=TokenizerSpec(file=tok_file, context_length=context_length, vocab_size=tok_vocab),
        visual=OnnxTower(file=VISUAL_FILE, input_name=VISUAL_INPUT, input_dtype=io_dtype,
                         output_name=VISUAL_OUTPUT, output_dtype=io_dtype, normalized=normalize),
        text=OnnxTower(file=TEXT_FILE, input_name=TEXT_INPUT, input_dtype="int64",
                       output_name=TEXT_OUTPUT, output_dtype=io_dtype, normalized=normalize),
    )
