"""Test doubles for the distributed write path: an in-process "server" and fault injection.

No Qdrant server binary is available on the build machines. :class:`FakeQdrantServer` is a Ray
actor holding a local-mode ``QdrantClient(":memory:")`` — one store shared by every process of the
Ray session, like a server — and records each upsert request. :class:`RemoteClient` forwards
QdrantClient calls to it from any worker. :class:`FlakyClientFactory` builds clients that fail
the way networks do: transient errors before a request reaches the server (HTTP 503/429, read
timeouts, gRPC-style UNAVAILABLE) and timeouts *after* the server applied it (the response was
lost: the retry re-sends an upsert the server already has).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = ["FakeQdrantServer", "RemoteClient", "FlakyClient", "FlakyClientFactory", "RemoteClientFactory", "start_fake_server"]


class FakeQdrantServer:
    """Actor body (start it with :func:`start_fake_server`): a shared in-memory Qdrant."""

    def __init__(self) -> None:
        from qdrant_client import QdrantClient

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client = QdrantClient(":memory:")
        self.upsert_sizes: list[int] = []

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method == "upsert":
            self.upsert_sizes.append(len(kwargs.get("points", args[1] if len(args) > 1 else [])))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local-mode notices (payload indexes)
            return getattr(self.client, method)(*args, **kwargs)

    def stats(self) -> dict[str, Any]:
        return {"upsert_sizes": list(self.upsert_sizes)}


def start_fake_server() -> Any:
    """Start a :class:`FakeQdrantServer` actor in the current Ray session; returns its handle."""
    import ray

    return ray.remote(num_cpus=0)(FakeQdrantServer).remote()


class RemoteClient:
    """Duck-typed ``QdrantClient`` forwarding every method call to a :class:`FakeQdrantServer`."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        import ray

        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._server.call.remote(method, args, kwargs))

        return call

    def close(self) -> None:
        pass


@dataclass
class RemoteClientFactory:
    """Picklable factory of :class:`RemoteClient` (for ``run_job(client_factory=...)``)."""

    server: Any

    def __call__(self) -> RemoteClient:
        return RemoteClient(self.server)


def _transient(rng: random.Random) -> Exception:
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    return rng.choice(
        [
            UnexpectedResponse(503, "Service Unavailable", b"overloaded", httpx.Headers()),
            UnexpectedResponse(429, "Too Many Requests", b"slow down", httpx.Headers()),
            ResponseHandlingException(httpx.ReadTimeout("timed out")),
            TimeoutError("timed out"),
        ]
    )


class FlakyClient:
    """Wraps a client; ``upsert``/``delete``/``count``/``scroll`` fail at random (fixed seed).

    Args:
        inner: the real client.
        seed: fault sequence seed.
        p_before: probability a call fails before reaching the server.
        p_after: probability an upsert is applied and then times out (response lost).
        always_timeout: every write call times out (a dead server).
        scripted: whatever the random draws, the first upsert fails before reaching the server
            and the second is applied and then times out (both kinds happen in every writer).
    """

    FLAKY = frozenset({"upsert", "delete", "count", "scroll"})

    def __init__(
        self,
        inner: Any,
        *,
        seed: int = 0,
        p_before: float = 0.3,
        p_after: float = 0.1,
        always_timeout: bool = False,
        scripted: bool = True,
    ) -> None:
        self._inner = inner
        self.scripted = scripted
        self.upserts = 0
        self._rng = random.Random(seed)
        self.p_before = p_before
        self.p_after = p_after
        self.always_timeout = always_timeout
        self.injected = 0

    def __getattr__(self, method: str) -> Any:
        target = getattr(self._inner, method)
        if method not in self.FLAKY:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.always_timeout and method == "upsert":
                self.injected += 1
                raise TimeoutError("the server did not answer in time")
            if method == "upsert":
                self.upserts += 1
            if self._rng.random() < self.p_before or (self.scripted and self.upserts == 1 and method == "upsert"):
                self.injected += 1
                raise _transient(self._rng)
            out = target(*args, **kwargs)
            scripted_after = self.scripted and self.upserts == 2 and method == "upsert"
            if method == "upsert" and (self._rng.random() < self.p_after or scripted_after):
                self.injected += 1
                raise TimeoutError("timed out waiting for the response (the upsert was applied)")
            return out

        return call


@dataclass
class FlakyClientFactory:
    """Picklable factory of :class:`FlakyClient` over a :class:`RemoteClient`."""

    server: Any
    seed: int = 0
    p_before: float = 0.3
    p_after: float = 0.1
    always_timeout: bool = False

    def __call__(self) -> FlakyClient:
        return FlakyClient(
            RemoteClient(self.server), seed=self.seed, p_before=self.p_before, p_after=self.p_after, always_timeout=self.always_timeout
        )
