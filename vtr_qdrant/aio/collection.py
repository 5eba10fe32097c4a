"""``AsyncVideoCollection``: :class:`~vtr_qdrant.collection.VideoCollection` as coroutines.

One implementation, two faces: each coroutine runs the synchronous façade's method of the same
name, with the same arguments, docstring and result (:mod:`vtr_qdrant.aio.bridge` says where each
part runs). So a web app's event loop stays free while a query is encoded, stage 1 runs in Qdrant
and stage 2 scores the candidates, and sync and async hits are identical by construction — there
is no second search path to drift.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from qdrant_client import AsyncQdrantClient, QdrantClient

from ..collection import VideoCollection
from ..errors import ConfigError
from ..store.backend import StorageBackend
from ..store.qdrant import QdrantClientBackend, as_backend
from .bridge import (
    BackgroundLoop,
    CpuSlots,
    ExecutorBackend,
    LoopBoundClient,
    default_cpu_slots,
    run_in_worker,
)

__all__ = ["AsyncVideoCollection", "DEFAULT_WORKERS"]

P = ParamSpec("P")
R = TypeVar("R")

#: worker threads per collection: a call holds one from start to end (waits for Qdrant included);
#: only :func:`~vtr_qdrant.aio.bridge.default_cpu_slots` of them compute at once
DEFAULT_WORKERS = 16


def _twin(method: Callable[Concatenate[VideoCollection, P], R]) -> Callable[Concatenate[AsyncVideoCollection, P], Coroutine[Any, Any, R]]:
    """The coroutine twin of a :class:`VideoCollection` method: same parameters, same result."""

    @functools.wraps(method)
    async def twin(self: AsyncVideoCollection, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await run_in_worker(self.executor, self.slots, method, self.collection, *args, **kwargs)

    twin.__qualname__ = f"AsyncVideoCollection.{method.__name__}"
    twin.__doc__ = (
        f"Coroutine twin of :meth:`VideoCollection.{method.__name__} <vtr_qdrant.collection.VideoCollection."
        f"{method.__name__}>` (runs in a worker thread; storage I/O as described in :mod:`vtr_qdrant.aio.bridge`).\n\n"
        + (method.__doc__ or "")
    )
    return twin


def _is_local(client: AsyncQdrantClient) -> bool:
    opts = client.init_options
    return opts.get("location") == ":memory:" or opts.get("path") is not None


def _backend_of(client: Any) -> tuple[StorageBackend, ThreadPoolExecutor | BackgroundLoop | None]:
    if isinstance(client, AsyncQdrantClient):
        if _is_local(client):  # in-process compute: on its own loop and thread (bridge docstring)
            own = BackgroundLoop()
            return QdrantClientBackend(cast(QdrantClient, LoopBoundClient(client, own.loop))), own
        return QdrantClientBackend(cast(QdrantClient, LoopBoundClient(client))), None
    if isinstance(client, (StorageBackend, QdrantClient)):
        pool = ThreadPoolExecutor(1, thread_name_prefix="vtr-aio-backend")
        return cast(StorageBackend, ExecutorBackend(as_backend(client), pool)), pool
    raise TypeError(
        "expected a qdrant_client.AsyncQdrantClient (':memory:', path=..., url=...) or a StorageBackend "
        f"(e.g. EdgeBackend), got {type(client).__name__}"
    )


async def _shutdown(owned: tuple[ThreadPoolExecutor | BackgroundLoop, ...]) -> None:
    loop = asyncio.get_running_loop()
    for p in owned:  # the workers first: their storage calls need the back end's thread
        close = functools.partial(p.shutdown, wait=True) if isinstance(p, ThreadPoolExecutor) else p.close
        await loop.run_in_executor(None, close)


def _open(backend: StorageBackend, collection_name: str, bundle: Any, options: dict[str, Any]) -> VideoCollection:
    vc = VideoCollection(backend, collection_name, bundle, **options)
    if vc.bundle is not None:
        # load the tokenizer and the text tower's session now, once: concurrent first searches
        # would otherwise race to create them, and the first search would pay for it
        vc.encode_text(["warm up"])
    return vc


class AsyncVideoCollection:
    """A collection of videos in Qdrant, searchable by text, for asyncio code.

    Create one with :meth:`create` (opening a collection does I/O)::

        from qdrant_client import AsyncQdrantClient
        videos = await AsyncVideoCollection.create(AsyncQdrantClient(url="http://localhost:6333"), "videos",
                                                   bundle="synthetic-world/v3")
        hits = await videos.search("a red circle", limit=5)

    Every method of :class:`~vtr_qdrant.collection.VideoCollection` that touches storage or runs a
    model is here as a coroutine with the same name, parameters and result: :meth:`search`,
    :meth:`search_batch`, :meth:`encode_text`, :meth:`upsert_embeddings`,
    :meth:`upsert_embeddings_batch`, :meth:`add_videos`, :meth:`get`, :meth:`count`,
    :meth:`count_points`, :meth:`info`, :meth:`delete`, :meth:`optimize`.

    Where things run: the method's code (text encoding, stage 2, decoding) in a worker thread of
    :attr:`executor`; with an ``AsyncQdrantClient``, every request to Qdrant is awaited on the
    calling coroutine's event loop (local mode: on a private loop, see below); with a synchronous back end (Qdrant Edge, a ``QdrantClient``),
    its calls run on a dedicated single-thread executor. The frames and X-Pool caches are shared by
    the workers and locked (:class:`~vtr_qdrant.search.stage_two.StageTwo`). qdrant-client's
    *local mode* (``AsyncQdrantClient(":memory:")``) computes each query inside its
    coroutine without yielding, so its coroutines run on a private loop in a dedicated thread.

    Attributes:
        collection: the synchronous façade doing the work (for its attributes: ``collection_name``,
            ``dim``, ``bundle``, ``aggregation``...). Its storage calls must come through this
            class's coroutines: called directly they raise :class:`~vtr_qdrant.errors.StorageError`.
        executor: the worker threads.
        slots: how many of them compute at once.
    """

    def __init__(
        self, collection: VideoCollection, executor: Executor, slots: CpuSlots, *, owned: tuple[ThreadPoolExecutor | BackgroundLoop, ...] = ()
    ) -> None:
        self.collection = collection
        self.executor = executor
        self.slots = slots
        self._owned = owned

    @classmethod
    async def create(
        cls,
        client: AsyncQdrantClient | StorageBackend | QdrantClient,
        collection_name: str,
        bundle: Any = None,
        *,
        executor: Executor | None = None,
        cpu_workers: int | None = None,
        **options: Any,
    ) -> AsyncVideoCollection:
        """Open (or create) a collection.

        Args:
            client: an ``AsyncQdrantClient`` (``":memory:"``, ``path=...`` or ``url=...``), or a
                synchronous back end (:class:`~vtr_qdrant.store.edge.EdgeBackend`, a ``QdrantClient``),
                which then runs on a dedicated thread.
            collection_name, bundle: as :class:`~vtr_qdrant.collection.VideoCollection`.
            executor: the worker threads (default: a pool of :data:`DEFAULT_WORKERS`, shut down by
                :meth:`close`).
            cpu_workers: how many of the workers may compute at once (a worker waiting for storage
                does not count); default :func:`~vtr_qdrant.aio.bridge.default_cpu_slots`. More
                than the free cores only makes the event loop wait longer for the GIL.
            **options: the other keyword arguments of :class:`~vtr_qdrant.collection.VideoCollection`
                (``dim``, ``sampling``, ``indexed_fields``, ``create``, ``aggregation``, ``hnsw_ef``...).

        Raises:
            TypeError: ``client`` is neither a Qdrant client nor a back end.
            ConfigError: ``cpu_workers`` is not an int >= 1.
            CollectionMismatchError, ConfigError: as :class:`~vtr_qdrant.collection.VideoCollection`.
        """
        if cpu_workers is not None and (isinstance(cpu_workers, bool) or not isinstance(cpu_workers, int) or cpu_workers < 1):
            raise ConfigError(f"cpu_workers must be an int >= 1 or None, got {cpu_workers!r}")
        slots = CpuSlots(cpu_workers or default_cpu_slots())
        backend, backend_pool = _backend_of(client)
        own_pool = None
        if executor is None:
            executor = own_pool = ThreadPoolExecutor(DEFAULT_WORKERS, thread_name_prefix="vtr-aio")
        owned = tuple(p for p in (own_pool, backend_pool) if p is not None)
        try:
            vc = await run_in_worker(executor, slots, _open, backend, collection_name, bundle, options)
        except BaseException:
            await _shutdown(owned)
            raise
        return cls(vc, executor, slots, owned=owned)

    @property
    def collection_name(self) -> str:
        """The Qdrant collection."""
        return self.collection.collection_name

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.collection.dim

    async def close(self) -> None:
        """Shut down the executors this object created (after the calls in flight). The client or
        back end passed to :meth:`create` stays open: it is the caller's."""
        owned, self._owned = self._owned, ()
        await _shutdown(owned)

    async def __aenter__(self) -> AsyncVideoCollection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    search = _twin(VideoCollection.search)
    search_batch = _twin(VideoCollection.search_batch)
    encode_text = _twin(VideoCollection.encode_text)
    upsert_embeddings = _twin(VideoCollection.upsert_embeddings)
    add_embeddings = upsert_embeddings
    upsert_embeddings_batch = _twin(VideoCollection.upsert_embeddings_batch)
    add_videos = _twin(VideoCollection.add_videos)
    get = _twin(VideoCollection.get)
    count = _twin(VideoCollection.count)
    count_points = _twin(VideoCollection.count_points)
    info = _twin(VideoCollection.info)
    delete = _twin(VideoCollection.delete)
    optimize = _twin(VideoCollection.optimize)
