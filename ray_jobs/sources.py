"""Sources: folders, globs, files, remote URIs and manifest tables -> one :class:`VideoSource` each.

Local files go to ffmpeg as they are. Remote URIs (``s3://``, ``gs://``, ``hdfs://``, anything
``pyarrow.fs.FileSystem.from_uri`` opens) are listed and hashed through pyarrow, and copied to a
local temporary file for the decode task (:func:`staged`), which deletes it afterwards.

A local file's content hash is the sha256 of its bytes (:func:`vtr_qdrant.ingest.file_content_hash`,
the same value the in-process path stores). A remote object is not downloaded just to decide
whether it changed: its hash is derived from its size and modification time (``stat-...``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtr_qdrant.errors import ConfigError, InvalidInputError, VideoDecodeError, VtrError
from vtr_qdrant.ingest import VIDEO_EXTENSIONS, expand_sources, file_content_hash
from vtr_qdrant.store.points import RESERVED_KEYS
from vtr_qdrant.video.source import default_video_id, display_name

from .config import JobConfig
from .rows import Col, uri_cells

__all__ = ["VideoSource", "list_sources", "read_manifest", "is_remote", "staged", "content_hash"]

log = logging.getLogger(__name__)

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_MANIFEST_ID = "video_id"
_MANIFEST_URI = "uri"


@dataclass
class VideoSource:
    """One video to ingest.

    Attributes:
        uri: local path or remote URI.
        video_id: its id in the collection.
        metadata: user payload fields.
        content_hash: see the module docstring; None when the source cannot be read (the decode
            stage then reports why).
    """

    uri: str
    video_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None


def is_remote(uri: str) -> bool:
    """True for ``scheme://`` URIs other than ``file://`` (pyarrow filesystems, staged for ffmpeg)."""
    m = _SCHEME_RE.match(uri)
    return m is not None and m.group(1).lower() != "file"


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
        raise InvalidInputError(f"cannot open {uri!r} with pyarrow's filesystems: {e}") from e


def _remote_hash(size: int | None, mtime_ns: int | None) -> str:
    return "stat-" + hashlib.sha256(f"{size}:{mtime_ns}".encode()).hexdigest()[:27]


def content_hash(uri: str) -> str | None:
    """The change detector of a source (None if it cannot be read; decoding will say why)."""
    if is_remote(uri):
        from pyarrow import fs as pafs

        try:
            filesystem, path = _filesystem(uri)
            info = filesystem.get_file_info(path)
        except Exception:
            return None
        if info.type != pafs.FileType.File:
            return None
        return _remote_hash(info.size, info.mtime_ns)
    try:  # refuses FIFOs, devices, loops from their stat: never blocks
        return file_content_hash(_local_path(uri))
    except (OSError, VtrError):
        return None


def _expand_remote(uri: str) -> list[tuple[str, str | None]]:
    """A remote file, folder (recursive, video extensions) or glob -> ``(file URI, hash)`` pairs
    (the hash from the listing's size and mtime: no extra request per object)."""
    import fnmatch

    from pyarrow import fs as pafs

    m = _SCHEME_RE.match(uri)
    rest = uri[m.end() :] if m else uri
    pattern = None
    base = uri
    if any(ch in rest for ch in "*?["):
        first = min(rest.index(ch) for ch in "*?[" if ch in rest)
        base = uri[: len(uri) - len(rest) + rest.rfind("/", 0, first) + 1]
        pattern = uri
    filesystem, path = _filesystem(base)
    info = filesystem.get_file_info(path)
    if pattern is None and info.type == pafs.FileType.File:
        return [(uri, _remote_hash(info.size, info.mtime_ns))]
    if pattern is None and info.type == pafs.FileType.NotFound:
        return [(uri, None)]  # reported as a failed video, not silently dropped
    root = path.rstrip("/")
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    out = []
    for fi in filesystem.get_file_info(selector):
        if fi.type != pafs.FileType.File:
            continue
        full = base.rstrip("/") + "/" + fi.path[len(root) :].lstrip("/")
        if pattern is not None:
            if not fnmatch.fnmatchcase(full, pattern):
                continue
        elif Path(fi.path).suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        out.append((full, _remote_hash(fi.size, fi.mtime_ns)))
    if pattern is not None and not out:
        raise InvalidInputError(f"the pattern {uri!r} matches no file")
    return sorted(out)


def _derive_id(uri: str, root: str | None, how: str) -> str:
    """A source's video id (always valid UTF-8: undecodable name bytes are escaped)."""
    if how == "stem":
        return display_name(Path(uri.rstrip("/")).stem)
    if how == "relative" and root is not None:
        rel = os.path.relpath(uri, root) if not is_remote(uri) else uri[len(root) :].lstrip("/")
        return display_name(rel.replace(os.sep, "/"))
    if is_remote(uri):
        return uri
    return default_video_id(_local_path(uri))  # never raises, even on a symlink loop


def _read_table(uri: str) -> Any:
    """A manifest file (CSV / JSONL / Parquet, local or remote) as a pyarrow Table."""
    import pyarrow as pa

    suffixes = [s.lower() for s in Path(uri.split("?")[0]).suffixes]
    kind = next((s for s in reversed(suffixes) if s in {".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"}), None)
    if kind is None:
        raise ConfigError(f"manifest {uri!r}: expected a .csv, .jsonl or .parquet file")
    try:
        if is_remote(uri):
            filesystem, path = _filesystem(uri)
            opener = filesystem.open_input_file if kind in {".parquet", ".pq"} else filesystem.open_input_stream
            source: Any = opener(path)
        else:
            source = _local_path(uri)
        if kind == ".csv":
            from pyarrow import csv

            return csv.read_csv(source, convert_options=csv.ConvertOptions(strings_can_be_null=True))
        if kind in {".jsonl", ".ndjson", ".json"}:
            from pyarrow import json as pajson

            return pajson.read_json(source)
        import pyarrow.parquet as pq

        return pq.read_table(source)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"cannot read the manifest {uri!r}: {e}") from e


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN from an empty CSV cell
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def read_manifest(uri: str, *, video_id: str = "path") -> list[VideoSource]:
    """Read a manifest table: ``uri`` (required), ``video_id`` (optional), metadata (other columns).

    Relative local paths in the ``uri`` column are relative to the manifest's folder. Null cells
    are left out of the metadata.

    Raises:
        ConfigError: no ``uri`` column, a reserved metadata column name, duplicate ids.
    """
    table = _read_table(uri)
    cols = list(table.column_names)
    if _MANIFEST_URI not in cols:
        raise ConfigError(f"manifest {uri!r} needs a {_MANIFEST_URI!r} column; it has {cols}")
    meta_cols = [c for c in cols if c not in {_MANIFEST_URI, _MANIFEST_ID}]
    clash = RESERVED_KEYS.intersection(meta_cols)
    if clash:
        raise ConfigError(f"manifest {uri!r}: columns {sorted(clash)} are reserved payload keys; rename them")
    base = None if is_remote(uri) else os.path.dirname(os.path.abspath(_local_path(uri)))
    out = []
    for row in table.to_pylist():
        u = row.get(_MANIFEST_URI)
        if not u:
            raise ConfigError(f"manifest {uri!r}: a row has an empty {_MANIFEST_URI!r}: {row}")
        u = str(u)
        if base is not None and not is_remote(u) and not os.path.isabs(_local_path(u)):
            u = os.path.join(base, _local_path(u))
        vid = row.get(_MANIFEST_ID)
        vid = str(vid) if vid not in (None, "") else _derive_id(u, base, video_id)
        meta = {c: _jsonable(row[c]) for c in meta_cols if _jsonable(row[c]) is not None}
        out.append(VideoSource(uri=u, video_id=vid, metadata=meta))
    return out


def list_sources(cfg: JobConfig, *, hash_workers: int = 4) -> list[VideoSource]:
    """Every video the job covers, with ids, metadata and content hashes.

    Folders are searched recursively for video extensions; a glob matching nothing is an error;
    a listed file that does not exist is kept (it becomes a failure row). Hashing runs in a
    small thread pool (I/O bound).

    Raises:
        ConfigError / InvalidInputError: bad manifest, unmatched glob, duplicate video ids.
    """
    found: list[VideoSource] = []
    for src in cfg.sources:
        if is_remote(src):
            root = src if src.endswith("/") else None
            listed = _expand_remote(src)
        else:
            local = _local_path(src)
            root = os.path.realpath(local) if os.path.isdir(local) else None
            listed = [(u, None) for u in expand_sources([local])]
        found += [VideoSource(u, _derive_id(u, root, cfg.video_id), dict(cfg.metadata), h) for u, h in listed]
    if cfg.manifest is not None:
        for s in read_manifest(cfg.manifest, video_id=cfg.video_id):
            s.metadata = {**cfg.metadata, **s.metadata}
            found.append(s)
    seen: dict[str, str] = {}
    unique: list[VideoSource] = []
    for s in found:
        prev = seen.get(s.video_id)
        if prev is None:
            seen[s.video_id] = s.uri
            unique.append(s)
        elif prev != s.uri:
            raise InvalidInputError(
                f"video id {s.video_id!r} is given to two sources ({prev!r} and {s.uri!r}); "
                "use video_id='path' or give ids in a manifest"
            )
    todo = [s for s in unique if s.content_hash is None]
    with ThreadPoolExecutor(max_workers=max(1, hash_workers), thread_name_prefix="vtr-hash") as pool:
        for s, h in zip(todo, pool.map(lambda s: content_hash(s.uri), todo)):
            s.content_hash = h
    return unique


@contextlib.contextmanager
def staged(uri: str, *, staging_dir: str | None = None, chunk: int = 4 << 20) -> Iterator[str]:
    """A local path for ffmpeg: the file itself, or a temporary copy of a remote object.

    The copy keeps the source's extension (ffmpeg's demuxer probing likes it) and is deleted when
    the block exits, whatever happens.

    Raises:
        VideoDecodeError: ``reason="not_found"`` / ``"unreadable"`` when the remote object cannot be read.
    """
    if not is_remote(uri):
        yield _local_path(uri)
        return
    suffix = Path(uri.split("?")[0]).suffix
    fd, tmp = tempfile.mkstemp(prefix="vtr-stage-", suffix=suffix, dir=staging_dir)
    try:
        try:
            filesystem, path = _filesystem(uri)
            with filesystem.open_input_stream(path) as src, os.fdopen(fd, "wb") as dst:
                fd = -1
                shutil.copyfileobj(src, dst, chunk)
        except FileNotFoundError as e:
            raise VideoDecodeError(uri, f"the remote object does not exist: {e}", reason="not_found") from e
        except (OSError, InvalidInputError) as e:
            raise VideoDecodeError(uri, f"cannot read the remote object: {e}", reason="unreadable") from e
        yield tmp
    finally:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def sources_to_rows(sources: Sequence[VideoSource]) -> list[dict[str, Any]]:
    """Rows of the first Ray dataset (metadata travels as JSON text: one stable column type)."""
    return [
        {
            **uri_cells(s.uri),
            Col.VIDEO_ID: s.video_id,
            Col.METADATA: json.dumps(s.metadata, default=str),
            Col.CONTENT_HASH: s.content_hash or "",
        }
        for s in sources
    ]
