"""vtr-qdrant: text-to-video retrieval on Qdrant.

Videos are decoded with ffmpeg, sampled frames are encoded with ONNX-exported open_clip towers and
stored as multi-vector points; a text query runs a prefilter in Qdrant and a text-conditioned
aggregation (X-Pool) over each candidate's frames on the client.

    >>> from qdrant_client import QdrantClient
    >>> from vtr_qdrant import VideoCollection
    >>> videos = VideoCollection(QdrantClient(path="./qdrant"), "videos", bundle="synthetic-world/v1")
    >>> hits = videos.search("a red circle moving left", limit=5)

Importing this package never imports torch, ray, open_clip or a video decoder, and imports
nothing heavy at all until a name is used: ``vtr_qdrant.VideoCollection`` loads qdrant-client, a
Ray encode actor that only needs ``vtr_qdrant.bundle`` does not (PEP 562 lazy attributes).
"""

from typing import TYPE_CHECKING

from .errors import (
    ArtifactError,
    CollectionMismatchError,
    ConfigError,
    DecodeTimeoutError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotFoundError,
    StorageError,
    UnsafeInputError,
    VideoDecodeError,
    VtrError,
)

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from .aggregation import (
        AggregationResult,
        Aggregator,
        MaxFrame,
        MeanPooling,
        SoftmaxPooling,
        TopKFrames,
        get_aggregator,
    )
    from .bundle import ModelBundle, resolve_bundle
    from .collection import EmbeddedVideo, StoredVideo, VideoCollection
    from .config import SamplingConfig
    from .edge import EdgeBackend
    from .encoders import FrameEncoder, TextEncoder
    from .hits import Moment, VideoHit
    from .manifest import BundleManifest
    from .xpool import XPoolHead

__version__ = "0.1.0"

__all__ = [
    "VideoCollection",
    "EdgeBackend",
    "XPoolHead",
    "EmbeddedVideo",
    "StoredVideo",
    "VideoHit",
    "Moment",
    "SamplingConfig",
    "ModelBundle",
    "BundleManifest",
    "resolve_bundle",
    "TextEncoder",
    "FrameEncoder",
    "Aggregator",
    "AggregationResult",
    "MeanPooling",
    "MaxFrame",
    "TopKFrames",
    "SoftmaxPooling",
    "get_aggregator",
    "VtrError",
    "ConfigError",
    "InvalidInputError",
    "ModelNotFoundError",
    "StorageError",
    "ArtifactError",
    "MissingDependencyError",
    "CollectionMismatchError",
    "VideoDecodeError",
    "UnsafeInputError",
    "DecodeTimeoutError",
]


# public name -> submodule that defines it; imported on first attribute access
_LAZY = {
    "AggregationResult": "aggregation",
    "Aggregator": "aggregation",
    "MaxFrame": "aggregation",
    "MeanPooling": "aggregation",
    "SoftmaxPooling": "aggregation",
    "TopKFrames": "aggregation",
    "get_aggregator": "aggregation",
    "ModelBundle": "bundle",
    "resolve_bundle": "bundle",
    "EmbeddedVideo": "collection",
    "StoredVideo": "collection",
    "VideoCollection": "collection",
    "SamplingConfig": "config",
    "EdgeBackend": "edge",  # needs qdrant-edge-py (the edge extra)
    "FrameEncoder": "encoders",
    "TextEncoder": "encoders",
    "Moment": "hits",
    "VideoHit": "hits",
    "BundleManifest": "manifest",
    "XPoolHead": "xpool",
}


def __getattr__(name: str) -> object:
    import importlib
    import importlib.util

    module = _LAZY.get(name)
    if module is None:
        # ``import vtr_qdrant; vtr_qdrant.storage...`` keeps working for submodules too
        if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'vtr_qdrant' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
