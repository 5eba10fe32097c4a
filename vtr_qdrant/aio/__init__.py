"""asyncio face of the library: :class:`AsyncVideoCollection` (also ``vtr_qdrant.AsyncVideoCollection``)."""

from .collection import AsyncVideoCollection

__all__ = ["AsyncVideoCollection"]
