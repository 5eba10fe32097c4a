"""vtr-qdrant: text-to-video retrieval on Qdrant.

Videos are decoded with ffmpeg, sampled frames are encoded with ONNX-exported open_clip towers and
stored as multi-vector points; a text query runs a prefilter in Qdrant and a text-conditioned
aggregation (X-Pool) over each candidate's frames on the client.

    >>> from qdrant_client import QdrantClient
    >>> from vtr_qdrant import VideoCollection
    >>> videos = VideoCollection(QdrantClient(path="./qdrant"), "videos", bundle="synthetic-world/v1")
    >>> hits = videos.search("a red circle moving left", limit=5)

Importing this package never imports torch, ray, open_clip or a video decoder.
"""

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
from .encoders import FrameEncoder, TextEncoder
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
from .hits import Moment, VideoHit
from .manifest import BundleManifest

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


def __getattr__(name: str) -> object:
    # Lazy: EdgeBackend needs qdrant-edge-py (the edge extra), XPoolHead is only needed for xpool.
    if name == "EdgeBackend":
        from .edge import EdgeBackend

        return EdgeBackend
    if name == "XPoolHead":
        from .xpool import XPoolHead

        return XPoolHead
    raise AttributeError(f"module 'vtr_qdrant' has no attribute {name!r}")
