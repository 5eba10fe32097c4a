"""How the synchronous façade's code runs under asyncio without blocking the event loop.

:class:`~vtr_qdrant.aio.collection.AsyncVideoCollection` runs each call of
:class:`~vtr_qdrant.collection.VideoCollection` in a worker thread (text encoding, stage 2,
decoding, validation: the CPU work) and routes every storage call the façade makes to where it
belongs:

- ``AsyncQdrantClient`` on a server: :class:`LoopBoundClient` hands each client call to the event
  loop of the awaiting coroutine (``asyncio.run_coroutine_threadsafe``); qdrant-client's async
  client performs the network I/O there while the worker thread waits. The request-building code
  is :class:`~vtr_qdrant.store.qdrant.QdrantClientBackend`'s, unchanged.
- ``AsyncQdrantClient`` in local mode (``":memory:"``, ``path=``): its coroutines compute the
  whole query without ever yielding, so awaited on the caller's loop they would block it for each
  query in turn (measured: 8 concurrent searches of 60 videos held a loop up to 33 ms). They run
  on a :class:`BackgroundLoop` instead: a private loop in one dedicated thread.
- a synchronous back end (Qdrant Edge, which has no async client, or a sync ``QdrantClient``):
  :class:`ExecutorBackend` runs each of its calls on one dedicated thread, so engine calls never
  run on the event loop nor compete with the worker pool for its threads.

The loop a worker reports to travels in a context variable set by :func:`run_in_worker`, so one
collection serves coroutines of any loop (a framework that runs ``ainvoke`` in a fresh loop).

CPU slots: a worker computes only while it holds one of a few slots (:class:`CpuSlots`) and gives
its slot back while it waits for a Qdrant server (an in-process engine's work is CPU work of
this machine, so a worker waiting for local mode or Edge keeps its slot). Every thread that
computes Python code makes the event loop wait for the GIL (up to ``sys.getswitchinterval()``,
5 ms, per thread ahead of it). Measured with 8 concurrent searches on Qdrant Edge (2
cores): 16 workers all computing at once made the event loop wait up to 15 ms for the GIL and
took 23-42 ms for the 8 searches; one computing at a time, 2.6 ms and 17 ms
(``tests/aio/test_async_collection.py`` measures the lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from ..errors import StorageError
from ..store.backend import StorageBackend

__all__ = ["BackgroundLoop", "CpuSlots", "LoopBoundClient", "ExecutorBackend", "run_in_worker", "default_cpu_slots"]

T = TypeVar("T")


def default_cpu_slots() -> int:
    """Workers computing at once by default: the cores less one (left to the event loop), 1 to 8."""
    return min(8, max(1, (os.cpu_count() or 2) - 1))


class CpuSlots:
    """How many worker threads may compute at once (a semaphore a worker releases while it waits).

    Args:
        n: slots, >= 1.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._sem = threading.Semaphore(n)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` holding a slot."""
        with self._sem:
            return fn(*args, **kwargs)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Give the held slot back for the duration (a wait for storage), take one again after."""
        self._sem.release()
        try:
            yield
        finally:
            self._sem.acquire()


_CTX: contextvars.ContextVar[tuple[asyncio.AbstractEventLoop, CpuSlots]] = contextvars.ContextVar("vtr_qdrant_aio")


@contextlib.contextmanager
def _waiting() -> Iterator[None]:
    """Inside a worker: release its CPU slot while it waits (no-op elsewhere)."""
    ctx = _CTX.get(None)
    if ctx is None:
        yield
        return
    with ctx[1].released():
        yield


async def run_in_worker(executor: Executor, slots: CpuSlots, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in ``executor`` holding one of ``slots``, awaited; the storage calls it
    makes are awaited on this coroutine's loop.

    The caller's context variables are copied into the worker (as ``asyncio.to_thread`` does).
    Cancelling the awaiting coroutine does not stop a call that already started in its thread.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    ctx.run(_CTX.set, (loop, slots))
    return await loop.run_in_executor(executor, functools.partial(ctx.run, slots.run, fn, *args, **kwargs))


class BackgroundLoop:
    """An event loop running forever in one dedicated daemon thread (for in-process async engines)."""

    def __init__(self, name: str = "vtr-aio-local") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the loop (after the calls in flight) and join its thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()


class LoopBoundClient:
    """A synchronous face of an ``AsyncQdrantClient`` for code running in a worker thread.

    ``proxy.query_points(...)`` schedules ``async_client.query_points(...)`` on an event loop and
    blocks this worker thread until it completes; the result or the exception comes back unchanged.

    Args:
        client: a ``qdrant_client.AsyncQdrantClient`` (anything with the same coroutine methods).
        loop: where its coroutines run; None: the loop of the coroutine that started the worker
            (:func:`run_in_worker`), and the worker gives its CPU slot back while it waits (the
            wait is network I/O); with a loop of its own (an in-process engine) it keeps the slot.
    """

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.async_client = client
        self.loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.async_client, name)
        if not callable(method):
            return method  # type: ignore[no-any-return]

        def call(*args: Any, **kwargs: Any) -> Any:
            ctx = _CTX.get(None)
            if ctx is None:
                raise StorageError(
                    f"AsyncQdrantClient.{name} was called outside an AsyncVideoCollection coroutine; "
                    "await the AsyncVideoCollection method instead of calling its .collection directly"
                )
            loop = self.loop or ctx[0]
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:  # waiting here would block the loop that must run the request
                raise StorageError(
                    f"AsyncQdrantClient.{name} was called synchronously on its own event loop (a deadlock); "
                    "await the AsyncVideoCollection method instead"
                )
            future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop)
            if self.loop is not None:
                return future.result()
            with _waiting():
                return future.result()

        return call


class ExecutorBackend:
    """A synchronous back end whose every method runs on one dedicated executor.

    A proxy, not a re-declaration: each public method of ``inner`` (the
    :class:`StorageBackend` interface and its extras: ``close``, ``flush``, ``set_alias``...) is
    looked up on ``inner`` and submitted to ``executor``, so the proxy follows the interface as it
    grows. It is registered as a virtual :class:`StorageBackend`.

    Args:
        inner: the back end (e.g. :class:`~vtr_qdrant.store.edge.EdgeBackend`).
        executor: where its calls run (one thread: the engine sees one caller at a time).
    """

    def __init__(self, inner: StorageBackend, executor: Executor) -> None:
        self.inner = inner
        self.executor = executor

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            # an in-process engine's work is CPU work of this machine: the worker keeps its slot
            return self.executor.submit(attr, *args, **kwargs).result()

        return call


StorageBackend.register(ExecutorBackend)  # VideoCollection takes it as a back end
