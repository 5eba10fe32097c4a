"""Text and frame encoders over a bundle's ONNX towers (onnxruntime; no torch)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import InvalidInputError
from .manifest import BundleManifest
from .preprocess import preprocess_images
from .runtime import Device, get_session, providers_for

if TYPE_CHECKING:
    from .tokenizer import ClipTokenizer

__all__ = ["TextEncoder", "FrameEncoder", "EncoderBundle", "l2_normalize", "CPU_FRAME_BATCH", "CUDA_FRAME_BATCH"]

#: Frames per ONNX run on the CPU unless the caller chooses. Measured for ViT-B/32 on a 2-core AVX2
#: machine (benchmarks/bench_encoders.py): 8-16 frames per run give ~20-30 % more images/s than
#: 32 or 64, for onnxruntime and torch alike; above that the (frames x tokens x 4*width) MLP
#: activations no longer stay in cache. Large requests are run as sub-batches of this size.
CPU_FRAME_BATCH = 16
#: Frames per ONNX run on a GPU unless the caller chooses (larger runs keep a GPU busy).
CUDA_FRAME_BATCH = 64

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "uint8": np.uint8}


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Divide by the L2 norm along ``axis`` (zero vectors stay zero)."""
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


class EncoderBundle(Protocol):
    """What an encoder reads from a bundle (:class:`~vtr_qdrant.model.bundle.ModelBundle` is one)."""

    @property
    def manifest(self) -> BundleManifest: ...

    @property
    def embed_dim(self) -> int: ...

    def file(self, rel: str) -> Path: ...

    def tokenizer(self) -> ClipTokenizer: ...


class _TowerEncoder:
    def __init__(self, bundle: EncoderBundle, tower: str, *, device: Device, batch_size: int, intra_op_threads: int | None) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle = bundle
        self.spec = getattr(bundle.manifest, tower)
        self.device: Device = device
        self.batch_size = int(batch_size)
        self.intra_op_threads = intra_op_threads
        self._path = bundle.file(self.spec.file)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.bundle.embed_dim

    def _session(self):  # type: ignore[no-untyped-def]
        export = self.bundle.manifest.source.recipe.get("export") or {}
        # float16 graphs crash onnxruntime 1.32's CPU provider at the highest optimisation level
        level = "extended" if isinstance(export, dict) and export.get("fp16") and self.device != "cuda" else "all"
        return get_session(self._path, device=self.device, intra_op_threads=self.intra_op_threads, optimization=level)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.spec.input_name: batch.astype(_NP_DTYPES[self.spec.input_dtype], copy=False)}
        (out,) = self._session().run([self.spec.output_name], feed)
        out = np.asarray(out, dtype=np.float32)
        return out if self.spec.normalized else l2_normalize(out)


#: query embeddings a :class:`TextEncoder` keeps (a repeated query skips the text tower)
TEXT_CACHE_SIZE = 4096


class TextEncoder(_TowerEncoder):
    """Encodes query texts with the bundle's tokenizer and text tower, keeping an LRU of embeddings.

    The LRU is keyed by (towers fingerprint, text): a repeated query costs a dictionary lookup
    instead of a tower run (50-90 ms for ViT-B/32 on 2 cores). It is thread-safe; texts of one
    call that are not cached are encoded together, in batches of ``batch_size``.

    Example:
        >>> enc = bundle.text_encoder()
        >>> enc.encode(["a red circle"]).shape
        (1, D)
    """

    def __init__(
        self, bundle: EncoderBundle, *, device: Device = "cpu", batch_size: int = 64, intra_op_threads: int | None = None,
        cache_size: int = TEXT_CACHE_SIZE,
    ) -> None:
        super().__init__(bundle, "text", device=device, batch_size=batch_size, intra_op_threads=intra_op_threads)
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidInputError(f"cache_size must be an int >= 0, got {cache_size!r}")
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._key = str(getattr(bundle, "towers_fingerprint", "") or bundle.manifest.name)

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: one string or a sequence of non-empty strings.

        Returns:
            (N, D) float32, L2-normalised.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"text #{i} must be a str, got {type(t).__name__}")
            if not t.strip():
                raise InvalidInputError(f"text #{i} is empty: a query needs at least one word")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            hits = {t: self._cache[(self._key, t)] for t in set(texts) if (self._key, t) in self._cache}
            for t in hits:
                self._cache.move_to_end((self._key, t))
        todo = list(dict.fromkeys(t for t in texts if t not in hits))
        if todo:
            ids = self.bundle.tokenizer().tokenize(todo)
            vecs = np.concatenate([self._run(ids[i : i + self.batch_size]) for i in range(0, len(ids), self.batch_size)])
            fresh = dict(zip(todo, vecs))
            hits.update(fresh)
            if self.cache_size:
                with self._lock:
                    for t, v in fresh.items():
                        self._cache[(self._key, t)] = v.copy()
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        for i, t in enumerate(texts):
            out[i] = hits[t]
        return out


class FrameEncoder(_TowerEncoder):
    """Encodes RGB frames with the bundle's image tower (preprocessing from the manifest).

    ``encode`` takes any number of frames and runs them through the tower ``batch_size`` frames at
    a time. Left at None, ``batch_size`` is :data:`CPU_FRAME_BATCH` (16) on the CPU and
    :data:`CUDA_FRAME_BATCH` (64) when the session runs on CUDA: on a CPU, sub-batches of 16
    are faster per frame than one large run.
    """

    def __init__(
        self, bundle: EncoderBundle, *, device: Device = "cpu", batch_size: int | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        if batch_size is None:
            on_gpu = "CUDAExecutionProvider" in providers_for(device)
            batch_size = CUDA_FRAME_BATCH if on_gpu else CPU_FRAME_BATCH
        super().__init__(bundle, "visual", device=device, batch_size=batch_size, intra_op_threads=intra_op_threads)

    @property
    def image_size(self) -> int:
        """Side length the tower expects; frames sampled at this size skip resizing."""
        return self.bundle.manifest.image.image_size

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Embed frames.

        Args:
            images: (N, H, W, 3) uint8 RGB; any size (resized and centre-cropped as the bundle says).

        Returns:
            (N, D) float32, L2-normalised.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InvalidInputError(f"images must have shape (N, H, W, 3) RGB, got {images.shape}")
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        spec = self.bundle.manifest.image
        out = [self._run(preprocess_images(images[i : i + self.batch_size], spec)) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out)
