"""Export an open_clip model to a verified vtr-qdrant model bundle.

A bundle folder holds ``visual.onnx``, ``text.onnx``, the tokenizer's merges file and
``manifest.json`` (schema: :mod:`vtr_qdrant.model.manifest`). :func:`export_model` takes any loaded
open_clip model; :func:`export_pretrained` loads one by architecture and pretrained tag (or a local
checkpoint) and takes the preprocessing and context length from the model's own config, so the
bundle's preprocessing can never drift from its weights.

The folder appears atomically: everything is written into a hidden temporary sibling and renamed
into place at the end, so an interrupted or refused export leaves no half bundle at ``out_dir``.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
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

from vtr_qdrant.errors import ArtifactError, ConfigError, ModelNotFoundError, VtrError
from vtr_qdrant.model.manifest import (
    BundleManifest,
    ImagePreprocess,
    ModelSource,
    OnnxTower,
    TokenizerSpec,
    sha256_file,
    write_manifest,
)

from .quantize import OPT_LEVELS, OptLevel, convert_fp16, fuse_transformer, optimize_graph, quantize_int8
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
    compare,
    onnx_session,
    random_images,
    run_onnx,
    run_onnx_isolated,
    torch_outputs,
)

__all__ = ["ExportReport", "ExportError", "export_model", "export_pretrained", "VISUAL_FILE", "TEXT_FILE"]

log = logging.getLogger(__name__)

VISUAL_FILE = "visual.onnx"
TEXT_FILE = "text.onnx"
#: Number of random images in the visual parity check.
PARITY_IMAGES = 8
#: int8 quantisation changes the numbers on purpose; below this cosine to torch the export is refused.
INT8_MIN_COSINE = 0.99


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


def _check_merges_file(path: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"tokenizer merges file {path} not found")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(
            f"{path} is not a gzip BPE merges file in open_clip's bpe_simple_vocab format: {e}"
        ) from e


def _model_vocab_size(model: nn.Module) -> int | None:
    for owner in (model, getattr(model, "text", None)):
        if owner is None:
            continue
        emb = getattr(owner, "token_embedding", None)
        if isinstance(emb, nn.Embedding):
            return int(emb.num_embeddings)
        vs = getattr(owner, "vocab_size", None)
        if isinstance(vs, int):
            return vs
    return None


def _validate_options(
    *, name: str, image_size: int, mean: Sequence[float], std: Sequence[float], context_length: int,
    resize_mode: str, interpolation: str, opset: int, fp16: bool, int8: bool, min_cosine: float,
    opt_level: str | None,
) -> None:
    if not name or not name.strip():
        raise ConfigError("a bundle needs a non-empty name (e.g. 'ViT-B-32/laion2b_s34b_b79k')")
    if image_size <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ConfigError(f"mean and std need 3 values each (std > 0), got mean={mean!r} std={std!r}")
    if context_length < 2:
        raise ConfigError(f"context_length must be >= 2, got {context_length}")
    if resize_mode not in ("shortest", "squash"):
        raise ConfigError(
            f"resize mode {resize_mode!r} is not supported by the bundle runtime; expected 'shortest' or 'squash'"
        )
    if interpolation not in ("bicubic", "bilinear"):
        raise ConfigError(f"interpolation {interpolation!r} is not supported; expected 'bicubic' or 'bilinear'")
    if opset < 17:
        raise ConfigError(f"opset {opset} is too old; the bundle needs opset >= 17")
    if fp16 and int8:
        raise ConfigError(
            "fp16 (GPU path) and int8 (CPU path) are alternative builds; export two bundles instead of combining them"
        )
    if not 0.0 < min_cosine <= 1.0:
        raise ConfigError(f"min_cosine must be in (0, 1], got {min_cosine}")
    if opt_level is not None and opt_level not in OPT_LEVELS:
        raise ConfigError(f"opt_level {opt_level!r} is unknown; expected one of {', '.join(OPT_LEVELS)}")


#: Temporary export folders older than this are leftovers of killed exports and are removed.
STALE_PARTIAL_SECONDS = 6 * 3600


def _remove_stale_partials(out_dir: Path) -> None:
    if not out_dir.parent.is_dir():
        return
    now = time.time()
    for p in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_PARTIAL_SECONDS:
                log.info("removing %s, left by an interrupted export", p)
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def _prepare_target(out_dir: Path, overwrite: bool) -> None:
    _remove_stale_partials(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not overwrite:
            raise ConfigError(f"{out_dir} exists and is not empty; choose another folder or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished temporary folder to ``out_dir`` with renames only (same filesystem)."""
    if out_dir.exists():
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        elif overwrite:
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / "bundle")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / "bundle", out_dir)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
            return
        else:
            raise ConfigError(f"{out_dir} appeared while exporting and is not empty; not replacing it")
    os.replace(tmp, out_dir)


def _tokenize(merges_file: Path, context_length: int, texts: Sequence[str]) -> tuple[np.ndarray, int]:
    """Tokenise with the runtime's own torch-free tokenizer (so the check covers what users run)."""
    from vtr_qdrant.model.tokenizer import ClipTokenizer

    tok = ClipTokenizer(merges_file, context_length=context_length)
    return np.asarray(tok.tokenize(list(texts)), dtype=np.int64), int(tok.vocab_size)


def _fmt(p: Parity) -> str:
    return f"max|diff| {p.max_abs_diff:.3g}, min cosine {p.min_cosine:.6f} over {p.n}"


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
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser().absolute()
    merges = Path(merges_file).expanduser()
    _validate_options(
        name=name, image_size=image_size, mean=mean, std=std, context_length=context_length,
        resize_mode=resize_mode, interpolation=interpolation, opset=opset, fp16=fp16, int8=int8,
        min_cosine=min_cosine, opt_level=opt_level,
    )
    if not (callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None))):
        raise ConfigError(f"{type(model).__name__} has no encode_image/encode_text; pass an open_clip model")
    params = list(model.parameters())
    if params and (params[0].dtype != torch.float32 or params[0].device.type != "cpu"):
        raise ConfigError(
            f"export an fp32 model on CPU (got {params[0].dtype} on {params[0].device}); load it with "
            "precision='fp32', device='cpu' and use fp16=True for a half-precision bundle"
        )
    _check_merges_file(merges)
    _prepare_target(out, overwrite)

    parity_ids, tok_vocab = _tokenize(merges, context_length, PARITY_TEXTS)
    model_vocab = _model_vocab_size(model)
    if model_vocab is not None and tok_vocab > model_vocab:
        raise ConfigError(
            f"the tokenizer in {merges.name} has {tok_vocab} tokens but the model's embedding has {model_vocab}: "
            "this merges file is not the model's tokenizer"
        )

    was_training = model.training
    model.eval()
    visual = VisualTower(model, normalize=normalize).eval()
    text = TextTower(model, normalize=normalize).eval()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        vpath, tpath = tmp / VISUAL_FILE, tmp / TEXT_FILE
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

        images = random_images(PARITY_IMAGES, image_size, mean, std, seed=0)
        ref_v = torch_outputs(visual, images)
        ref_t = torch_outputs(text, parity_ids)
        embed_dim = int(ref_v.shape[-1])
        if ref_t.shape[-1] != embed_dim:
            raise ConfigError(
                f"image embeddings have {embed_dim} dims but text embeddings {ref_t.shape[-1]}: not a CLIP-style model"
            )

        parity: dict[str, Any] = {"images": PARITY_IMAGES, "texts": len(PARITY_TEXTS)}
        extra: dict[str, Any] = {}
        nan = float("nan")
        pv = pt = Parity(nan, nan, 0)
        if verify:
            pv, pt = _check_fp32(vpath, tpath, images, parity_ids, ref_v, ref_t, min_cosine)
            parity["visual"], parity["text"] = pv.as_dict(), pt.as_dict()
            log.info("parity visual: %s; text: %s", _fmt(pv), _fmt(pt))
        else:
            log.warning("verify=False: the exported graphs were NOT compared with torch")
            parity["skipped"] = True

        if int8:
            q = tmp / "visual.int8.onnx"
            quantize_int8(vpath, q)
            sess = onnx_session(q)
            out_q = run_onnx(sess, images)
            pq = compare(ref_v, out_q)
            vs32 = compare(run_onnx(onnx_session(vpath), images), out_q)
            del sess
            rec = {**pq.as_dict(), "min_cosine_vs_fp32": vs32.min_cosine,
                   "bytes_fp32": vpath.stat().st_size, "bytes_int8": q.stat().st_size}
            parity["visual_int8"] = extra["int8"] = rec
            log.info("int8 visual tower: %s (vs fp32 ONNX: %.6f)", _fmt(pq), vs32.min_cosine)
            if not pq.min_cosine >= INT8_MIN_COSINE:
                raise ExportError(
                    f"int8 visual tower is too far from torch ({_fmt(pq)}; need >= {INT8_MIN_COSINE}); "
                    "export without int8"
                )
            if pq.min_cosine < 0.999:
                log.warning("int8 visual tower agrees with torch only to cosine %.6f; check retrieval quality "
                            "before using it", pq.min_cosine)
            os.replace(q, vpath)

        if fp16:
            for tower, path, inputs, ref in (("visual", vpath, images, ref_v), ("text", tpath, parity_ids, ref_t)):
                convert_fp16(path, path)
                key = f"{tower}_fp16"
                try:
                    # ORT_ENABLE_ALL's CPU layout passes crash (SIGSEGV) on these graphs in ORT 1.32;
                    # a child process at "extended" keeps a crash from killing the export.
                    got = run_onnx_isolated(path, inputs)
                except Exception as e:  # noqa: BLE001 - ORT CPU lacks fp16 kernels for some ops
                    note = (f"not checked: onnxruntime CPU cannot run it ({type(e).__name__}: "
                            f"{(str(e).splitlines() or [''])[0][:160]}); check on a GPU with onnxruntime-gpu")
                    parity[key] = extra[key] = note
                    log.warning("fp16 %s tower %s", tower, note)
                    continue
                ph = compare(ref, got)
                parity[key] = extra[key] = {**ph.as_dict(), "checked_on": "CPUExecutionProvider (extended opt)"}
                log.info("fp16 %s tower on CPU: %s (GPU kernels differ; check on a GPU before relying on it)",
                         tower, _fmt(ph))
                if not math.isfinite(ph.max_abs_diff):
                    raise ExportError(f"fp16 {tower} tower produces non-finite or misshaped outputs; export fp32")

        tok_file = merges.name if merges.name.endswith(".gz") else merges.name + ".gz"
        shutil.copyfile(merges, tmp / tok_file)

        recipe = dict(source.recipe)
        recipe["export"] = {
            "exporter": "onnx_export.clip",
            "method": used,
            "opset": opset,
            "fp16": fp16,
            "int8": int8,
            "opt_level": opt_level,
            "fuse": fuse,
            "fusions": fusions,
            "normalize": normalize,
            "versions": _versions(),
        }
        if fp16:
            recipe["export"]["note"] = (
                "float16 graphs for the CUDA execution provider; onnxruntime's CPU provider crashed (SIGSEGV) "
                "on such graphs at ORT_ENABLE_ALL in onnxruntime 1.32 (ORT_ENABLE_EXTENDED works)"
            )
        recipe["parity"] = parity
        io_dtype: Literal["float32"] = "float32"
        manifest = BundleManifest(
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
        done = write_manifest(tmp, manifest)
        _publish(tmp, out, overwrite)
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


def _check_fp32(
    vpath: Path, tpath: Path, images: np.ndarray, ids: np.ndarray, ref_v: np.ndarray, ref_t: np.ndarray,
    min_cosine: float,
) -> tuple[Parity, Parity]:
    """Torch vs ORT parity of the fp32 graphs, batched and at batch size 1; raise below ``min_cosine``."""
    results = []
    for tower, path, inputs, ref in (("visual", vpath, images, ref_v), ("text", tpath, ids, ref_t)):
        sess = onnx_session(path)
        batched = run_onnx(sess, inputs, batch_size=len(inputs))
        single = run_onnx(sess, inputs[:2], batch_size=1)
        p_all = compare(ref, batched)
        p_one = compare(ref[:2], single)
        p = Parity(max(p_all.max_abs_diff, p_one.max_abs_diff), min(p_all.min_cosine, p_one.min_cosine), p_all.n)
        if not p.min_cosine >= min_cosine:
            raise ExportError(
                f"{tower} tower parity check failed: {_fmt(p)} (need min cosine >= {min_cosine}); no bundle "
                "was written. Try method='legacy' or another opset, and report the model if it persists"
            )
        results.append(p)
    return results[0], results[1]


def _known_architecture(architecture: str) -> None:
    import open_clip

    if architecture.startswith(("hf-hub:", "local-dir:")):
        return
    if architecture not in open_clip.list_models():
        raise ModelNotFoundError(
            f"open_clip has no architecture {architecture!r}. List them with "
            "`python -c 'import open_clip; print(open_clip.list_models())'` and the (architecture, tag) pairs "
            "with `open_clip.list_pretrained()`"
        )


def _check_tokenizer(architecture: str, merges_file: Path, context_length: int) -> None:
    """Refuse models whose open_clip tokenizer the bundle's torch-free tokenizer does not reproduce.

    The bundle only knows open_clip's default CLIP BPE (``clean="lower"``, no reduction); models with
    Hugging Face tokenizers or other cleaning would get plausible-looking but wrong ids. Checked on
    the model's actual tokenizer object and on the ids of :data:`PARITY_TEXTS`.
    """
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, get_clean_fn

    try:
        tok = open_clip.get_tokenizer(architecture, context_length=context_length)
    except Exception as e:  # noqa: BLE001 - open_clip raises many types while building tokenizers
        raise ConfigError(f"cannot build the open_clip tokenizer of {architecture}: {type(e).__name__}: {e}") from e
    if (
        not isinstance(tok, SimpleTokenizer)
        or tok.clean_fn is not get_clean_fn("lower")
        or tok.reduction_fn is not None
        or len(tok.all_special_ids) != 2
    ):
        raise ConfigError(
            f"{architecture} uses a tokenizer the bundle runtime cannot reproduce ({type(tok).__name__}); only "
            "open_clip's default CLIP BPE tokenizer (clean='lower', no reduction mask) is supported"
        )
    ours, _ = _tokenize(merges_file, context_length, PARITY_TEXTS)
    theirs = tok(list(PARITY_TEXTS)).numpy()
    if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
        raise ConfigError(
            f"the bundle tokenizer (merges file {merges_file.name}) gives other ids than {architecture}'s open_clip "
            "tokenizer on the check strings; refusing to export a bundle that would encode queries wrongly"
        )


def _load_error(architecture: str, pretrained: str | None, checkpoint: Path | None, e: Exception) -> VtrError:
    if checkpoint is not None:
        return ArtifactError(f"could not load {architecture} weights from checkpoint {checkpoint}: {type(e).__name__}: {e}")
    net = any(k in type(e).__name__ for k in ("Connection", "Timeout", "HTTP", "LocalEntryNotFound", "URL", "Offline"))
    net = net or any(k in str(e) for k in ("resolve", "connect", "offline", "Network", "internet", "HF_HUB_OFFLINE"))
    why = "the model hub looks unreachable" if net else "loading the pretrained weights failed"
    return ModelNotFoundError(
        f"could not get {architecture}/{pretrained}: {why} ({type(e).__name__}: {str(e)[:300]}). "
        f"Download the checkpoint on a machine with internet access and pass it with "
        f"--checkpoint PATH (python API: checkpoint=PATH) together with --model {architecture}"
    )


def export_pretrained(
    architecture: str,
    *,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ExportReport:
    """Load an open_clip model (hub tag or local checkpoint) and export it with :func:`export_model`.

    Image size, mean/std, resize mode and interpolation come from the model's preprocess config
    (what ``open_clip.create_model_and_transforms`` uses for evaluation); the context length from
    the model; the merges file is open_clip's default CLIP BPE file.

    Args:
        architecture: an open_clip architecture name, e.g. ``"ViT-B-32"``.
        pretrained: an open_clip pretrained tag, e.g. ``"laion2b_s34b_b79k"`` (downloads from the hub).
        checkpoint: a local checkpoint file instead of a tag (no network).
        out_dir: the bundle folder to create.
        name: bundle name; defaults to ``"ARCH/TAG"`` or ``"ARCH/<checkpoint file stem>"``.
        cache_dir: open_clip's download cache folder.
        **options: passed to :func:`export_model` (``fp16``, ``int8``, ``opset``, ``opt_level``,
            ``min_cosine``, ``verify``, ``normalize``, ``method``, ``overwrite``).

    Raises:
        ConfigError: both or neither of ``pretrained``/``checkpoint``; unsupported tokenizer/preprocessing.
        ModelNotFoundError: unknown architecture or tag, or the hub is unreachable.
        ArtifactError: the checkpoint is missing or cannot be loaded.
    """
    from vtr_qdrant._optional import require

    open_clip = require("open_clip", "export", purpose="exporting open_clip models")
    schema = architecture.startswith(("hf-hub:", "local-dir:"))  # weights come with the config
    if (pretrained is not None and checkpoint is not None) or (not schema and pretrained is None and checkpoint is None):
        raise ConfigError(
            "pass exactly one of pretrained (an open_clip tag, e.g. 'laion2b_s34b_b79k') or checkpoint (a local "
            "file); exporting random weights is not supported"
        )
    _known_architecture(architecture)
    ckpt: Path | None = None
    if checkpoint is not None:
        ckpt = Path(checkpoint).expanduser()
        if not ckpt.is_file():
            raise ArtifactError(f"checkpoint file {ckpt} not found")
    elif not architecture.startswith(("hf-hub:", "local-dir:")):
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if pretrained not in tags:
            raise ModelNotFoundError(
                f"open_clip has no pretrained tag {pretrained!r} for {architecture}; known tags: "
                f"{', '.join(tags) or 'none'}. See open_clip.list_pretrained() for every (architecture, tag) pair, "
                "or pass a local checkpoint"
            )
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            architecture,
            pretrained=str(ckpt) if ckpt is not None else pretrained,
            precision="fp32",
            device="cpu",
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except VtrError:
        raise
    except Exception as e:  # noqa: BLE001 - downloads and torch.load raise many unrelated types
        raise _load_error(architecture, pretrained, ckpt, e) from e

    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", getattr(model.visual, "image_size", None))
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"{architecture} takes non-square {tuple(size)} images; the bundle needs a square size")
        size = size[0]
    if not isinstance(size, int):
        raise ConfigError(f"cannot read the image size of {architecture} from its preprocess config ({pp!r})")
    context_length = open_clip.get_model_tokenize_cfg(model).get("context_length") or getattr(model, "context_length", None)
    if not isinstance(context_length, int):
        raise ConfigError(f"cannot read the context length of {architecture}")
    from open_clip.tokenizer import default_bpe

    _check_tokenizer(architecture, Path(default_bpe()), context_length)
    recipe: dict[str, Any] = {"preprocess_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in pp.items()}}
    if ckpt is not None:
        recipe["checkpoint_sha256"] = sha256_file(ckpt)
    source = ModelSource(
        framework="open_clip",
        architecture=architecture,
        pretrained=pretrained,
        checkpoint=str(ckpt) if ckpt is not None else None,
        recipe=recipe,
    )
    if schema:
        default_name = architecture.split(":", 1)[1].strip("/").replace(":", "_")
    elif pretrained:
        default_name = f"{architecture}/{pretrained}"
    else:
        default_name = f"{architecture}/{ckpt.stem if ckpt else 'local'}"
    return export_model(
        model,
        out_dir=out_dir,
        name=name or default_name,
        image_size=size,
        mean=tuple(pp.get("mean", ())),
        std=tuple(pp.get("std", ())),
        context_length=context_length,
        merges_file=default_bpe(),
        source=source,
        resize_mode=pp.get("resize_mode", "shortest"),
        interpolation=pp.get("interpolation", "bicubic"),
        **options,
    )
