"""What a served collection is allowed to do: media roots, the API key, request limits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..store.filters import check_collection_name

__all__ = ["ServeConfig", "MAX_LIMIT"]

#: most hits one search may ask for
MAX_LIMIT = 100


def _roots(roots: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    out = []
    for r in roots:
        real = os.path.realpath(os.fspath(r))
        if not os.path.isdir(real):
            raise ConfigError(f"--media-root {os.fspath(r)!r} is not a folder (resolved to {real!r}); name an existing folder")
        out.append(real)
    return tuple(out)


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one served collection.

    Attributes:
        collection_name: the Qdrant collection.
        media_roots: folders whose files may be served (resolved with ``realpath`` once, here);
            a stored video is served only when its file's real path lies inside one of them.
        api_key: when set, every route but ``GET /`` and ``GET /health`` needs the ``api-key``
            header (Qdrant's header name) or the session cookie ``POST /session`` sets.
        max_body_bytes: larger request bodies get 413.
        body_timeout_s: a client that has not sent its whole body by then gets 408.
        max_query_chars: longer query texts get 422.
        thumbnail_width: JPEG width in pixels (height follows the aspect ratio).
        thumbnail_cache_bytes: memory for cached thumbnails (least recently used dropped first).
        thumbnail_timeout_s: ffmpeg's deadline per thumbnail.
    """

    collection_name: str
    media_roots: tuple[str, ...] = ()
    api_key: str | None = None
    max_body_bytes: int = 64 * 1024
    body_timeout_s: float = 10.0
    max_query_chars: int = 1000
    thumbnail_width: int = 320
    thumbnail_cache_bytes: int = 32 << 20
    thumbnail_timeout_s: float = 15.0

    @classmethod
    def build(
        cls, collection_name: str, media_roots: Sequence[str | os.PathLike[str]] = (), api_key: str | None = None, **limits: int | float
    ) -> ServeConfig:
        """Check the settings and resolve the media roots.

        Raises:
            ConfigError: a bad collection name, a media root that is not a folder, an empty API
                key, or a limit that is not positive.
        """
        check_collection_name(collection_name)
        if api_key is not None and not api_key.strip():
            raise ConfigError("--api-key is empty: give a secret, or leave the flag out to serve without one")
        for name, value in limits.items():
            if name not in cls.__dataclass_fields__ or isinstance(value, bool) or not value > 0:
                raise ConfigError(f"serve setting {name}={value!r} is unknown or not positive")
        return cls(collection_name, _roots(media_roots), api_key, **limits)  # type: ignore[arg-type]
