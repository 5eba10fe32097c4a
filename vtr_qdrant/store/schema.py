"""The collection schema: what a vtr-qdrant collection records about itself, and the model guard.

A collection's Qdrant metadata (key :data:`~vtr_qdrant.store.points.METADATA_KEY`) records the
schema version, the embedding dimension, the model's towers fingerprint, the frame sampling and
whether the frame multivectors are HNSW-indexed. Opening a collection checks all of it against
what the caller brings: vectors from another model, dimension or sampling are never mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CollectionMismatchError, ConfigError
from ..video.sampling import SamplingConfig
from .backend import StorageBackend
from .points import METADATA_KEY, SCHEMA_VERSION, VECTOR_FRAMES, VECTOR_POOLED, VECTOR_SCENES, Key

__all__ = ["CollectionSchema", "create_collection", "open_collection"]


@dataclass(frozen=True)
class CollectionSchema:
    """What a collection was created with.

    Attributes:
        dim: embedding dimension D.
        sampling: frame sampling settings of its videos.
        model_fingerprint: towers fingerprint of the model its vectors come from (None: embeddings only).
        model_name: that model's bundle name (informational).
        frames_indexed: stage 1 is frame-aware: an HNSW index on the ``frames`` multivectors, or
            (with ``scenes_indexed``) on the ``scenes`` multivectors.
        scenes_indexed: the collection has the ``scenes`` vector (:mod:`~vtr_qdrant.store.scenes`),
            and the frame-aware search uses it; the ``frames`` graph is then not built.
    """

    dim: int
    sampling: SamplingConfig
    model_fingerprint: str | None = None
    model_name: str | None = None
    frames_indexed: bool = True
    scenes_indexed: bool = False

    def metadata(self) -> dict[str, Any]:
        """The collection metadata, as stored under :data:`METADATA_KEY`."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model_fingerprint": self.model_fingerprint,
            "model_name": self.model_name,
            "dim": self.dim,
            "sampling": self.sampling.model_dump(),
            "frames_indexed": self.frames_indexed,
            "scenes_indexed": self.scenes_indexed,
        }


def create_collection(backend: StorageBackend, name: str, schema: CollectionSchema) -> None:
    """Create the collection with its vectors, metadata and the payload indexes every query uses."""
    backend.create_collection(name, dim=schema.dim, metadata={METADATA_KEY: schema.metadata()},
                              index_frames=schema.frames_indexed and not schema.scenes_indexed, index_scenes=schema.scenes_indexed)
    backend.create_payload_index(name, Key.VIDEO_ID, "keyword")
    backend.create_payload_index(name, Key.CONTENT_HASH, "keyword")
    backend.create_payload_index(name, Key.SEGMENT_INDEX, "integer")
    backend.create_payload_index(name, Key.COMPLETE, "integer")


def open_collection(
    backend: StorageBackend,
    name: str,
    *,
    fingerprint: str | None = None,
    model_name: str | None = None,
    dim: int | None = None,
    sampling: SamplingConfig | None = None,
) -> CollectionSchema:
    """Read an existing collection's schema and check it against the caller's model and settings.

    Args:
        backend: where the collection lives.
        name: its name.
        fingerprint: the caller's model towers fingerprint (None: not checked).
        model_name: the caller's bundle name, for the message.
        dim: the caller's embedding dimension (None: not checked).
        sampling: the caller's sampling (None: the stored one is used).

    Raises:
        CollectionMismatchError: not a vtr-qdrant collection, or another schema version, vectors,
            dimension, model or sampling; the message lists every difference.
    """
    stored = backend.collection_schema(name)
    meta = stored["metadata"].get(METADATA_KEY)
    if not isinstance(meta, dict):
        raise CollectionMismatchError(
            f"collection {name!r} exists but was not created by vtr-qdrant (no {METADATA_KEY!r} metadata); "
            "use another collection_name"
        )
    problems = []
    if meta.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema version {meta.get('schema_version')} (this vtr-qdrant writes {SCHEMA_VERSION})")
    stored_dim = meta.get("dim")
    vectors = stored["vectors"]
    expected = {VECTOR_FRAMES, VECTOR_POOLED} | ({VECTOR_SCENES} if meta.get("scenes_indexed") else set())
    if set(vectors) != expected or any(v["size"] != stored_dim for v in vectors.values()):
        problems.append(f"vectors {vectors} (expected {sorted(expected)} of size {stored_dim})")
    if dim is not None and dim != stored_dim:
        problems.append(f"dimension {stored_dim} (you asked for {dim})")
    stored_fp = meta.get("model_fingerprint")
    if fingerprint is not None and stored_fp != fingerprint:
        problems.append(
            f"model {meta.get('model_name')!r} fingerprint {stored_fp} (your bundle {model_name!r} has {fingerprint})"
        )
    stored_sampling = SamplingConfig.model_validate(meta.get("sampling") or {})
    if sampling is not None and sampling != stored_sampling:
        problems.append(f"sampling {stored_sampling.model_dump()} (you asked for {sampling.model_dump()})")
    if problems:
        raise CollectionMismatchError(
            f"collection {name!r} does not match: it has " + "; ".join(problems)
            + ". Open it with the model and settings it was built with, or use a new collection_name."
        )
    return CollectionSchema(
        dim=int(stored_dim),  # type: ignore[arg-type]
        sampling=stored_sampling,
        model_fingerprint=stored_fp,
        model_name=meta.get("model_name"),
        frames_indexed=bool(meta.get("frames_indexed", False)),
        scenes_indexed=bool(meta.get("scenes_indexed", False)),
    )


def ensure_collection(
    backend: StorageBackend,
    name: str,
    *,
    fingerprint: str | None,
    model_name: str | None,
    dim: int | None,
    sampling: SamplingConfig | None,
    create: bool,
    index_frames: bool,
) -> CollectionSchema:
    """Open the collection (checked by :func:`open_collection`) or create it when ``create``.

    Raises:
        ConfigError: the collection is missing and ``create`` is False, or creating it needs a
            dimension nobody gave.
        CollectionMismatchError: see :func:`open_collection`.
    """
    if backend.collection_exists(name):
        return open_collection(backend, name, fingerprint=fingerprint, model_name=model_name, dim=dim, sampling=sampling)
    if not create:
        raise ConfigError(f"collection {name!r} does not exist (pass create=True to create it)")
    if dim is None:
        raise ConfigError("creating a collection needs a model bundle (bundle=...) or an embedding dimension (dim=...)")
    schema = CollectionSchema(dim=int(dim), sampling=sampling or SamplingConfig(), model_fingerprint=fingerprint,
                              model_name=model_name, frames_indexed=bool(index_frames), scenes_indexed=bool(index_frames))
    create_collection(backend, name, schema)
    return schema
