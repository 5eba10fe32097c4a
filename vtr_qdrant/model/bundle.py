"""Model bundles: resolving a name to a folder, verifying it, and opening its parts.

Names:

- ``local-dir:/path/to/bundle`` or a path to an existing folder: that folder.
- a registry name such as ``synthetic-world/v3`` or ``ViT-B-32/laion2b_s34b_b79k``: first the
  bundles shipped inside the package (``vtr_qdrant/models/``), then the persistent cache
  (``$VTR_QDRANT_CACHE`` or ``~/.cache/vtr-qdrant``). A missing open_clip model is exported into the
  cache on first use when the ``export`` extra is installed; otherwise the error says how to get it.
  Nothing ever falls back to random weights or a default tokenizer.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArtifactError, ModelNotFoundError
from .manifest import BundleManifest, read_manifest, sha256_file
from .runtime import Device

if TYPE_CHECKING:
    from .encoders import FrameEncoder, TextEncoder
    from .tokenizer import ClipTokenizer

__all__ = ["ModelBundle", "resolve_bundle", "cache_dir", "register_exporter", "BUILTIN_MODELS_DIR", "DEFAULT_BUNDLE"]

log = logging.getLogger(__name__)

BUILTIN_MODELS_DIR = Path(__file__).parent.parent / "models"
#: the bundle every entry point uses when none is named: the project's small synthetic-world CLIP
#: with its trained query-adaptive X-Pool head (``v1`` is the same towers without the head)
DEFAULT_BUNDLE = "synthetic-world/v3"
LOCAL_PREFIX = "local-dir:"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)?$")

# A registry name -> a function that writes the bundle into the given folder: the one passed to
# register_exporter(), else the first installed entry point of EXPORTERS_GROUP (onnx_export's).
Exporter = Callable[[str, Path], None]
_exporter: Exporter | None = None
_verified: dict[tuple[str, float], str] = {}
_verify_lock = threading.Lock()


def register_exporter(exporter: Exporter | None) -> None:
    """Install the function used to export a named model that is not cached yet (``onnx_export`` does)."""
    global _exporter
    _exporter = exporter


def cache_dir() -> Path:
    """Persistent cache folder for exported bundles: ``$VTR_QDRANT_CACHE`` or ``~/.cache/vtr-qdrant``."""
    env = os.environ.get("VTR_QDRANT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vtr-qdrant"


def _name_to_dirname(name: str) -> str:
    return name.replace("/", "__")


@dataclass
class ModelBundle:
    """A verified model bundle folder.

    Attributes:
        path: the bundle folder.
        manifest: its validated manifest.
    """

    path: Path
    manifest: BundleManifest
    _tokenizer: ClipTokenizer | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> ModelBundle:
        """Open a bundle folder; with ``verify`` every file's sha256 is checked (once per process)."""
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ModelNotFoundError(f"model bundle folder {root} does not exist")
        manifest = read_manifest(root)
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    @property
    def fingerprint(self) -> str:
        """Identifies the model (weights, preprocessing, tokenizer); recorded in every collection."""
        return self.manifest.fingerprint

    @property
    def towers_fingerprint(self) -> str:
        """Fingerprint of the towers, tokenizer and preprocessing only (ignores an X-Pool head)."""
        return self.manifest.towers_fingerprint()

    @property
    def embed_dim(self) -> int:
        return self.manifest.embed_dim

    @property
    def name(self) -> str:
        return self.manifest.name

    def file(self, rel: str) -> Path:
        """Absolute path of a bundle file; the file must exist."""
        p = self.path / rel
        if not p.is_file():
            raise ArtifactError(f"bundle {self.name!r}: file {rel!r} is missing from {self.path}")
        return p

    def verify(self) -> None:
        """Check that every referenced file exists and matches its recorded sha256.

        Raises:
            ArtifactError: naming the missing or corrupt file.
        """
        m = self.manifest
        for rel in m.referenced_files():
            if rel not in m.files:
                raise ArtifactError(f"bundle {m.name!r}: manifest lists no checksum for {rel!r}")
        if m.fingerprint != m.compute_fingerprint():
            raise ArtifactError(
                f"bundle {m.name!r}: manifest fingerprint does not match its contents (edited by hand?); "
                "re-export the bundle"
            )
        for rel, digest in m.files.items():
            p = self.file(rel)
            key = (str(p.resolve()), p.stat().st_mtime)
            with _verify_lock:
                if _verified.get(key) == digest:
                    continue
            actual = sha256_file(p)
            if actual != digest:
                raise ArtifactError(
                    f"bundle {m.name!r}: file {rel!r} is corrupt (sha256 {actual[:12]}..., manifest says "
                    f"{digest[:12]}...); delete {self.path} and export or download it again"
                )
            with _verify_lock:
                _verified[key] = digest

    def tokenizer(self) -> ClipTokenizer:
        """The bundle's tokenizer (created once)."""
        if self._tokenizer is None:
            from .tokenizer import ClipTokenizer

            spec = self.manifest.tokenizer
            self._tokenizer = ClipTokenizer(self.file(spec.file), context_length=spec.context_length)
        return self._tokenizer

    def text_encoder(self, *, device: Device = "cpu", batch_size: int = 64, intra_op_threads: int | None = None) -> TextEncoder:
        """A :class:`~vtr_qdrant.model.encoders.TextEncoder` over this bundle's text tower."""
        from .encoders import TextEncoder

        return TextEncoder(self, device=device, batch_size=batch_size, intra_op_threads=intra_op_threads)

    def frame_encoder(
        self, *, device: Device = "cpu", batch_size: int | None = None, intra_op_threads: int | None = None
    ) -> FrameEncoder:
        """A :class:`~vtr_qdrant.model.encoders.FrameEncoder` over this bundle's image tower (``batch_size`` None: per device)."""
        from .encoders import FrameEncoder

        return FrameEncoder(self, device=device, batch_size=batch_size, intra_op_threads=intra_op_threads)


def resolve_bundle(spec: str | os.PathLike[str] | ModelBundle, *, verify: bool = True) -> ModelBundle:
    """Turn a bundle name, ``local-dir:`` path, folder path or :class:`ModelBundle` into a loaded bundle.

    Raises:
        ModelNotFoundError: the name resolves to nothing; the message says how to get the model.
        ArtifactError: the bundle exists but a file is missing or corrupt.
    """
    if isinstance(spec, ModelBundle):
        return spec
    s = os.fspath(spec)
    if s.startswith(LOCAL_PREFIX):
        return ModelBundle.load(s[len(LOCAL_PREFIX) :], verify=verify)
    if isinstance(spec, os.PathLike) or Path(s).expanduser().is_dir():
        return ModelBundle.load(s, verify=verify)
    if not _NAME_RE.match(s):
        raise ModelNotFoundError(
            f"{s!r} is neither an existing bundle folder nor a registry name like 'synthetic-world/v3' "
            "or 'ViT-B-32/laion2b_s34b_b79k'; use 'local-dir:/path/to/bundle' for a folder"
        )
    for root in (BUILTIN_MODELS_DIR, cache_dir()):
        cand = root / _name_to_dirname(s)
        if (cand / "manifest.json").is_file():
            return ModelBundle.load(cand, verify=verify)
    return _export_into_cache(s, verify=verify)


#: entry-point group of exporters: ``name = "module:function"``, the function as :data:`Exporter`.
#: ``onnx_export`` registers its open_clip exporter here (pyproject.toml), so this library never names it.
EXPORTERS_GROUP = "vtr_qdrant.exporters"


def _installed_exporter() -> Exporter | None:
    """The first loadable exporter of the :data:`EXPORTERS_GROUP` entry points (None: its extra is missing)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=EXPORTERS_GROUP):
        try:
            exporter: Exporter = ep.load()
        except ImportError:  # the exporter's extra (torch, open_clip) is not installed
            log.debug("exporter %s is not loadable", ep.value, exc_info=True)
            continue
        return exporter
    return None


def _export_into_cache(name: str, *, verify: bool) -> ModelBundle:
    exporter = _exporter or _installed_exporter()
    if exporter is None:
        raise ModelNotFoundError(
            f"model {name!r} is not a shipped bundle and is not in the cache {cache_dir()}. Export it with "
            f"`pip install 'vtr-qdrant[export]'` and `python -m onnx_export clip --model ARCH --pretrained TAG "
            f"--out DIR`, then pass 'local-dir:DIR' (or set VTR_QDRANT_CACHE)"
        )
    target = cache_dir() / _name_to_dirname(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s into %s (first use)", name, target)
    exporter(name, target)  # the exporter writes atomically (temp folder + rename)
    return ModelBundle.load(target, verify=verify)
