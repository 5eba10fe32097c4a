"""The model-bundle manifest: one pydantic schema, written by ``onnx_export`` and read here.

A bundle is a folder: ``visual.onnx``, ``text.onnx``, the tokenizer's merges file, optionally an
X-Pool head, and ``manifest.json``. Preprocessing travels with the weights: image size, mean/std and
resize mode live in the manifest, never in code defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .._atomic import atomic_write_text
from ..errors import ArtifactError

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_SCHEMA_VERSION",
    "OnnxTower",
    "ImagePreprocess",
    "TokenizerSpec",
    "XPoolSpec",
    "ModelSource",
    "BundleManifest",
    "sha256_file",
    "write_manifest",
    "read_manifest",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1

OnnxDType = Literal["float32", "float16", "int64", "int32", "uint8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnnxTower(_Strict):
    """One ONNX graph of the bundle (image or text tower).

    The graph takes one input with a dynamic batch axis and returns one (N, embed_dim) output.
    """

    file: str = Field(description="path of the .onnx file, relative to the bundle folder")
    input_name: str
    input_dtype: OnnxDType
    output_name: str
    output_dtype: OnnxDType = "float32"
    normalized: bool = Field(description="True if the graph already L2-normalises its output")


class ImagePreprocess(_Strict):
    """How frames become the image tower's input (open_clip's eval transform)."""

    image_size: int = Field(gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: Literal["shortest", "squash"] = Field(
        "shortest", description="shortest: resize the short side then centre-crop (CLIP); squash: resize to a square"
    )
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


class TokenizerSpec(_Strict):
    """The text tokenizer: open_clip's byte-level BPE with a merges file shipped in the bundle."""

    kind: Literal["clip_bpe"] = "clip_bpe"
    file: str = Field(description="gzip merges file in open_clip's bpe_simple_vocab format, relative path")
    context_length: int = Field(gt=1)
    vocab_size: int = Field(gt=0)


class XPoolSpec(_Strict):
    """A trained X-Pool head shipped with the bundle (weights only make sense with this bundle's towers)."""

    file: str
    num_heads: int = Field(ge=1)
    format: Literal["npz", "safetensors"] = "npz"
    adaptive: bool = Field(False, description="the head has the query-adaptive attention scale (npz format 2)")
    onnx: str | None = Field(None, description="optional ONNX export of the head, relative path")


class ModelSource(_Strict):
    """Where the weights came from: enough to reproduce or cite them."""

    framework: str = "open_clip"
    architecture: str | None = None
    pretrained: str | None = None
    checkpoint: str | None = None
    recipe: dict[str, Any] = Field(default_factory=dict, description="how the bundle was made (exporter options, training run)")


class BundleManifest(_Strict):
    """``manifest.json`` of a model bundle.

    ``files`` maps every file of the bundle (relative path) to its sha256; ``fingerprint`` identifies
    the model (weights + preprocessing + tokenizer) and is what a Qdrant collection records, so that
    a collection is never queried or extended with another model.
    """

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str
    source: ModelSource = Field(default_factory=ModelSource)
    embed_dim: int = Field(gt=0)
    image: ImagePreprocess
    tokenizer: TokenizerSpec
    visual: OnnxTower
    text: OnnxTower
    xpool: XPoolSpec | None = None
    files: dict[str, str] = Field(default_factory=dict)
    fingerprint: str = ""
    created_at: str = ""
    created_by: str = "vtr-qdrant"

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > MANIFEST_SCHEMA_VERSION:
            raise ValueError(
                f"manifest schema_version {v} is newer than this vtr-qdrant understands "
                f"({MANIFEST_SCHEMA_VERSION}); upgrade vtr-qdrant"
            )
        return v

    def referenced_files(self) -> list[str]:
        """Relative paths of every file the manifest points to."""
        out = [self.visual.file, self.text.file, self.tokenizer.file]
        if self.xpool is not None:
            out.append(self.xpool.file)
            if self.xpool.onnx is not None:
                out.append(self.xpool.onnx)
        return out

    def compute_fingerprint(self) -> str:
        """sha256 over the file hashes and every field that changes what the model computes.

        Name, timestamps and provenance do not enter it: re-exporting identical weights gives the
        same fingerprint.
        """
        semantic = self.model_dump(
            include={"embed_dim", "image", "tokenizer", "visual", "text", "xpool", "files"}, mode="json"
        )
        blob = json.dumps(semantic, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def towers_fingerprint(self) -> str:
        """Fingerprint of what produces the stored vectors: towers, tokenizer, preprocessing.

        Ignores an X-Pool head, so a bundle that adds a trained head to the same towers matches
        collections built with the head-less bundle; equals :attr:`fingerprint` without a head.
        This is what a collection records.
        """
        return _towers_only(self).compute_fingerprint()


def _towers_only(m: BundleManifest) -> BundleManifest:
    files = dict(m.files)
    if m.xpool is not None:
        for rel in (m.xpool.file, m.xpool.onnx):
            if rel is not None:
                files.pop(rel, None)
    return m.model_copy(update={"xpool": None, "files": files})


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: BundleManifest) -> BundleManifest:
    """Hash the referenced files, compute the fingerprint and write ``manifest.json`` atomically.

    Args:
        bundle_dir: the bundle folder; every file the manifest references must already be in it.
        manifest: the manifest to complete (its ``files``/``fingerprint``/``created_at`` are replaced).

    Returns:
        The completed manifest, as written.
    """
    root = Path(bundle_dir)
    files: dict[str, str] = {}
    for rel in manifest.referenced_files():
        p = root / rel
        if not p.is_file():
            raise ArtifactError(f"bundle file {rel!r} is referenced by the manifest but missing in {root}")
        files[rel] = sha256_file(p)
    done = manifest.model_copy(update={"files": files, "created_at": manifest.created_at or _now()})
    done = done.model_copy(update={"fingerprint": done.compute_fingerprint()})
    atomic_write_text(root / MANIFEST_FILE, done.model_dump_json(indent=2) + "\n")
    return done


def read_manifest(bundle_dir: str | os.PathLike[str]) -> BundleManifest:
    """Read and validate ``manifest.json`` (no checksum verification; see :class:`ModelBundle`)."""
    path = Path(bundle_dir) / MANIFEST_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ArtifactError(f"{path} not found: a model bundle folder must contain {MANIFEST_FILE}") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e}") from e
    try:
        return BundleManifest.model_validate_json(text)
    except ValidationError as e:
        raise ArtifactError(f"{path} is not a valid bundle manifest: {e}") from e


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


