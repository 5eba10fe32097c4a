"""vtr-qdrant: text-to-video retrieval on Qdrant.

Videos are decoded with ffmpeg, sampled frames are encoded with ONNX-exported open_clip towers and
stored as multi-vector points; a text query runs a prefilter in Qdrant and a text-conditioned
aggregation (X-Pool) over each candidate's frames on the client.

    >>> from qdrant_client import QdrantClient
    >>> from vtr_qdrant import VideoCollection
    >>> videos = VideoCollection(QdrantClient(path="./qdrant"), "videos", bundle="synthetic-world/v3")
    >>> hits = videos.search("a red circle moving left", limit=5)

Importing this package never imports torch, ray, open_clip or a video decoder, and imports
nothing heavy at all until a name is used: ``vtr_qdrant.VideoCollection`` loads qdrant-client, a
Ray encode actor that only needs ``vtr_qdrant.model.bundle`` does not (PEP 562 lazy attributes).
"""

from typing import TYPE_CHECKING

from . import _compat
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
    from .aio.collection import AsyncVideoCollection
    from .collection import EmbeddedVideo, StoredVideo, VideoCollection
    from .model.bundle import ModelBundle, resolve_bundle
    from .model.encoders import FrameEncoder, TextEncoder
    from .model.manifest import BundleManifest
    from .search.aggregation import (
        AggregationResult,
        Aggregator,
        MaxFrame,
        MeanPooling,
        SoftmaxPooling,
        TopKFrames,
    )
    from .search.hits import Moment, VideoHit
    from .search.resolve import get_aggregator
    from .search.xpool import XPoolHead
    from .store.edge import EdgeBackend
    from .video.sampling import SamplingConfig

__version__ = "0.1.0"

__all__ = [
    "VideoCollection",
    "AsyncVideoCollection",
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
    "AggregationResult": "search.aggregation",
    "Aggregator": "search.aggregation",
    "MaxFrame": "search.aggregation",
    "MeanPooling": "search.aggregation",
    "SoftmaxPooling": "search.aggregation",
    "TopKFrames": "search.aggregation",
    "get_aggregator": "search.resolve",
    "ModelBundle": "model.bundle",
    "resolve_bundle": "model.bundle",
    "EmbeddedVideo": "collection",
    "StoredVideo": "collection",
    "VideoCollection": "collection",
    "AsyncVideoCollection": "aio.collection",
    "SamplingConfig": "video.sampling",
    "EdgeBackend": "store.edge",  # needs qdrant-edge-py (the edge extra)
    "FrameEncoder": "model.encoders",
    "TextEncoder": "model.encoders",
    "Moment": "search.hits",
    "VideoHit": "search.hits",
    "BundleManifest": "model.manifest",
    "XPoolHead": "search.xpool",
}

_compat.install()  # the flat layout's module paths (vtr_qdrant.store.qdrant, ...) keep working


def __getattr__(name: str) -> object:
    import importlib
    import importlib.util

    module = _LAZY.get(name)
    if module is None:
        # ``import vtr_qdrant; vtr_qdrant.store.qdrant...`` keeps working for submodules too
        if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'vtr_qdrant' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
