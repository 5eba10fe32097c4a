"""Incremental and zero-downtime runs: versioned collections behind an alias, skip, prune.

The job's ``collection`` is the name searchers use. The job keeps it an *alias* of a concrete,
versioned collection (``<name>__v<UTC time>``):

* first run: create ``<name>__v...`` and point the alias at it right away;
* normal run: write into the aliased collection; unchanged videos (same content hash and model
  fingerprint) are skipped; ``prune`` deletes videos whose source is gone;
* ``rebuild``: write everything into a new versioned collection (another model or sampling is
  fine) and, once the job completes, swap the alias in one atomic ``update_collection_aliases``
  call — searchers never see a half-built collection — then drop old versions beyond
  ``keep_versions``.

A collection created by the in-process path (a plain collection, not an alias) is written into
as it is; ``rebuild`` refuses it (Qdrant cannot give an alias the name of an existing collection).

Qdrant Edge has no aliases: :class:`~vtr_qdrant.store.edge.EdgeBackend` keeps them as symbolic links
beside its collection folders, swapped atomically by ``rename(2)``, and every ``EdgeBackend``
call follows them, so the same scheme works there. Edge admits one handle per collection, so
before the swap the job closes its handle on the new version (a searcher in another process
opens it on its next call) and it skips dropping an old version another process still holds.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import models

from vtr_qdrant.collection import VideoCollection
from vtr_qdrant.errors import ConfigError, StorageError
from vtr_qdrant.store.points import Key

from .sources import VideoSource

__all__ = ["Target", "resolve_target", "versioned_name", "swap_alias", "drop_old_versions", "stored_video_ids", "split_unchanged",
           "prune", "verify"]

log = logging.getLogger(__name__)

_VERSION_SEP = "__v"


@dataclass
class Target:
    """Where this run writes.

    Attributes:
        name: the name searchers use (alias, or a plain collection).
        write_to: the concrete collection the job writes into.
        live: the concrete collection the alias points at before the run (None: none yet).
        is_alias: whether ``name`` is (or will be) an alias.
        swap: whether the alias must be pointed at ``write_to`` when the job completes.
    """

    name: str
    write_to: str
    live: str | None
    is_alias: bool
    swap: bool


def versioned_name(name: str, *, now: float | None = None) -> str:
    """``<name>__v<YYYYmmddTHHMMSSffffff>`` (UTC): sorts by creation time."""
    t = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int((t % 1) * 1e6):06d}"
    return f"{name}{_VERSION_SEP}{stamp}"


def _edge(client: Any) -> Any:
    """The client as an :class:`~vtr_qdrant.store.edge.EdgeBackend`, or None for a QdrantClient."""
    from vtr_qdrant.store.edge import EdgeBackend

    return client if isinstance(client, EdgeBackend) else None


def _aliases(client: Any) -> dict[str, str]:
    edge = _edge(client)
    if edge is not None:
        return dict(edge.aliases())
    return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}


def _collections(client: Any) -> list[str]:
    edge = _edge(client)
    if edge is not None:
        return list(edge.list_collections())
    return [c.name for c in client.get_collections().collections]


def resolve_target(client: Any, name: str, *, rebuild: bool) -> Target:
    """Decide where this run writes (see the module docstring); creates the first alias if needed.

    Raises:
        ConfigError: ``rebuild`` of a plain collection.
    """
    aliases = _aliases(client)
    if name in aliases:
        live = aliases[name]
        if rebuild:
            return Target(name, versioned_name(name), live, True, True)
        return Target(name, live, live, True, False)
    if client.collection_exists(name):
        if rebuild:
            raise ConfigError(
                f"{name!r} is a plain collection, not an alias, so it cannot be swapped atomically. "
                f"Rebuild under a new name (collection: {name}_v2) and point searchers at it, or delete "
                f"{name!r} and run the job again (it then creates an alias)"
            )
        return Target(name, name, name, False, False)
    # Nothing yet: a new versioned collection; the alias is created once it exists (first run) or
    # at the end (rebuild, same thing when there is no live collection).
    return Target(name, versioned_name(name), None, True, True)


def swap_alias(client: Any, alias: str, collection: str) -> None:
    """Point ``alias`` at ``collection`` in one atomic operation (delete + create in one request;
    on Qdrant Edge a symbolic link renamed over the old one, after releasing ``collection``)."""
    edge = _edge(client)
    if edge is not None:
        edge.close(collection)  # flushed and released: a searcher in another process may open it now
        edge.set_alias(alias, collection)
        return
    ops: list[Any] = []
    if alias in _aliases(client):
        ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
    client.update_collection_aliases(change_aliases_operations=ops)
    log.info("alias %s -> %s", alias, collection)


def drop_old_versions(client: Any, alias: str, keep: int) -> list[str]:
    """Delete ``<alias>__v*`` collections beyond the newest ``keep`` (never the aliased one).

    Also removes versions left by killed rebuilds. On Qdrant Edge a version another process still
    has open is kept (with a warning) and dropped by a later run. Returns the deleted names.
    """
    live = _aliases(client).get(alias)
    pattern = re.compile(re.escape(alias + _VERSION_SEP) + r"\d{8}T\d{12}$")
    versions = sorted((c for c in _collections(client) if pattern.match(c)), reverse=True)
    edge = _edge(client)
    kept = [live] if live else []
    dropped = []
    for v in versions:
        if v == live:
            continue
        if len(kept) < keep:
            kept.append(v)
            continue
        if edge is not None:
            try:
                edge.count(v)  # takes the shard's lock: fails while another process holds it
            except StorageError as e:
                log.warning("kept old version %s for now: %s", v, e)
                continue
        client.delete_collection(v)
        dropped.append(v)
    if dropped:
        log.info("dropped old versions of %s: %s", alias, dropped)
    return dropped


def stored_video_ids(vc: VideoCollection) -> set[str]:
    """Ids of every video in the collection (first segments only, no vectors)."""
    first = models.Filter(must=[models.FieldCondition(key=Key.SEGMENT_INDEX, match=models.MatchValue(value=0))])
    recs = vc.backend.scroll(vc.collection_name, first, with_frames=False, limit=2**62)
    return {str(r.payload.get(Key.VIDEO_ID)) for r in recs}


def split_unchanged(vc: VideoCollection, sources: Sequence[VideoSource], *, force: bool) -> tuple[list[VideoSource], list[VideoSource]]:
    """``(todo, unchanged)``: a source is unchanged when its video is stored whole (one complete
    version, every segment) with the same content hash and the collection's model fingerprint
    (sources with no hash are never unchanged); see :meth:`VideoStore.unchanged`."""
    if force or not sources:
        return list(sources), []
    same_ids = vc.store.unchanged({s.video_id: s.content_hash for s in sources})
    todo = [s for s in sources if s.video_id not in same_ids]
    same = [s for s in sources if s.video_id in same_ids]
    return todo, same


def prune(vc: VideoCollection, sources: Sequence[VideoSource]) -> list[str]:
    """Delete stored videos whose id is not among ``sources``; returns their ids.

    Raises:
        ConfigError: no source at all (an empty listing would delete everything; that is more
            likely a mistake, e.g. an unmounted folder, than a wish).
    """
    if not sources:
        raise ConfigError("refusing to prune: the job found no source at all (unmounted folder? wrong manifest?)")
    listed = {s.video_id for s in sources}
    gone = sorted(stored_video_ids(vc) - listed)
    for vid in gone:
        vc.delete(vid)
    if gone:
        log.info("pruned %d videos whose sources are gone", len(gone))
    return gone


def verify(vc: VideoCollection, *, min_age: float | None = None) -> dict[str, Any]:
    """The end-of-job scan: leftovers of crashed writes deleted, videos still not whole listed.

    Videos without a whole version are not re-ingested here: the next run does that (the skip
    check never calls them unchanged); ``vtr-qdrant verify --repair`` does it at once. Incomplete
    versions younger than ``min_age`` seconds (default
    :data:`~vtr_qdrant.store.audit.DEFAULT_MIN_AGE`) may be another writer's: left alone.
    """
    from vtr_qdrant.store.audit import DEFAULT_MIN_AGE, audit, repair

    report = repair(vc.store, audit(vc.store, min_age=DEFAULT_MIN_AGE if min_age is None else min_age))
    for p in report.remaining:
        log.warning("verify: %s %s: %s", p.video_id, p.problems, p.action)
    return report.to_dict()
