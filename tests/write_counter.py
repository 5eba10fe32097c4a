"""A back-end wrapper for crash tests: counts the writer's write requests, with a hook around each."""

from __future__ import annotations

from typing import Any

#: The back-end methods that write.
WRITE_METHODS = ("upsert", "set_payload", "delete")


class CountingWrites:
    """Delegates to a back end; calls :meth:`before_write` and :meth:`after_write` around every write
    request. ``calls`` counts the write requests that returned; ``n`` is the subclass's limit."""

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n, self.calls = inner, n, 0

    def before_write(self) -> None:
        """A write request is about to be sent."""

    def after_write(self) -> None:
        """A write request returned (``calls`` includes it)."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in WRITE_METHODS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.before_write()
            out = attr(*args, **kwargs)
            self.calls += 1
            self.after_write()
            return out

        return counted
