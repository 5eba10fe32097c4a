"""Exception hierarchy.

Every error raised on purpose by vtr-qdrant derives from :class:`VtrError` and from the builtin
exception a caller would naturally catch (``ValueError``, ``LookupError``, ``ImportError``...), so
``except ValueError`` keeps working for callers who do not know about this package.
Messages say what was wrong, what was expected, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "VtrError",
    "ConfigError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ArtifactError",
    "MissingDependencyError",
    "CollectionMismatchError",
    "StorageError",
    "ExportError",
    "VideoDecodeError",
    "UnsafeInputError",
    "DecodeTimeoutError",
]


class VtrError(Exception):
    """Base class of every error raised by vtr-qdrant."""


class ConfigError(VtrError, ValueError):
    """A setting or argument is invalid (wrong value, unknown option, inconsistent combination)."""


class InvalidInputError(VtrError, ValueError):
    """Data handed to a query or write call is malformed (shape, dtype, NaN, empty text...)."""


class ModelNotFoundError(VtrError, LookupError):
    """A model bundle name could not be resolved to a bundle on disk."""


class ArtifactError(VtrError, OSError):
    """A file of a model bundle is missing, unreadable or fails its checksum."""


class MissingDependencyError(VtrError, ImportError):
    """An optional dependency (a pip extra or an external binary) is not installed."""


class CollectionMismatchError(VtrError, ValueError):
    """An existing Qdrant collection was created with another model, dimension or schema."""


class StorageError(VtrError, RuntimeError):
    """The vector store failed or refused an operation (shard locked by another process, engine error)."""


class ExportError(VtrError, RuntimeError):
    """Exporting a model to ONNX failed, or its parity check was below the threshold."""


class VideoDecodeError(VtrError, RuntimeError):
    """A video could not be decoded. ``uri`` names it; ``reason`` is a short machine-readable tag."""

    def __init__(self, uri: str, message: str, *, reason: str = "decode_failed") -> None:
        super().__init__(f"{uri}: {message}")
        self.uri = uri
        self.reason = reason


class UnsafeInputError(VideoDecodeError):
    """A video source was refused for safety (disallowed scheme, playlist referencing other files...)."""

    def __init__(self, uri: str, message: str, *, reason: str = "unsafe_input") -> None:
        super().__init__(uri, message, reason=reason)


class DecodeTimeoutError(VideoDecodeError):
    """Decoding a video took longer than the per-video timeout; the decoder process was killed."""

    def __init__(self, uri: str, message: str, *, reason: str = "timeout") -> None:
        super().__init__(uri, message, reason=reason)
