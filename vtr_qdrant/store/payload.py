"""User payload checks: metadata becomes JSON that every back end stores the same way, or a clear
:class:`~vtr_qdrant.errors.InvalidInputError` before anything is written.

Local mode, Qdrant Edge and a server accept different things (a server refuses NaN in JSON, Edge's
Rust bindings refuse sets and ``int`` keys, local mode pickles almost anything), so we decide here,
once: metadata is a mapping of non-empty ``str`` keys to JSON values (``None``, ``bool``, ``int``
in the signed 64-bit range, finite ``float``, UTF-8 ``str``, lists and mappings of those).
NumPy scalars and arrays become their Python values; anything else is refused, naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = ["MAX_DEPTH", "check_metadata", "check_text"]

#: deepest nesting of lists/mappings accepted in metadata
MAX_DEPTH = 32
_INT64 = (-(2**63), 2**63 - 1)


def check_text(value: Any, what: str) -> str:
    """``value`` if it is a ``str`` that is valid UTF-8 (no lone surrogates), else InvalidInputError."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a str, got {type(value).__name__} {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} {value!r} is not valid UTF-8 text (a file name's undecodable bytes?); pass "
            "vtr_qdrant.video.source.display_name(name) for an escaped, storable form"
        ) from None
    return value


def check_metadata(metadata: Mapping[str, Any] | None, *, where: str = "metadata") -> dict[str, Any]:
    """Validate metadata and return it as plain JSON values (NumPy scalars/arrays converted).

    Raises:
        InvalidInputError: not a mapping, a key that is not a non-empty str, a value that is not
            JSON (set, bytes, object...), a NaN/infinite float, an int outside int64, or nesting
            deeper than :data:`MAX_DEPTH`; the message names the key path and the fix.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"{where} must be a dict of str keys to JSON values, got {type(metadata).__name__}")
    return _mapping(metadata, where, 0)


def _mapping(m: Mapping[Any, Any], path: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        if not isinstance(k, str) or not k:
            raise InvalidInputError(
                f"{path}: key {k!r} must be a non-empty str (JSON object keys are strings); convert it, e.g. str({k!r})"
            )
        check_text(k, f"{path}: key")
        out[k] = _value(v, f"{path}[{k!r}]", depth + 1)
    return out


def _value(v: Any, path: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidInputError(f"{path}: nested deeper than {MAX_DEPTH} levels; flatten it")
    if isinstance(v, np.generic):
        v = v.item()
    elif isinstance(v, np.ndarray):
        v = v.tolist()
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if not _INT64[0] <= v <= _INT64[1]:
            raise InvalidInputError(f"{path}: the integer {v} does not fit in 64 bits; store it as a str")
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InvalidInputError(f"{path}: {v} is not a finite number (JSON has no NaN or infinity); use None")
        return float(v)
    if isinstance(v, str):
        return check_text(v, path)
    if isinstance(v, Mapping):
        return _mapping(v, path, depth)
    if isinstance(v, (list, tuple)):
        return [_value(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v)]
    hint = "a sorted list" if isinstance(v, (set, frozenset)) else "a str" if isinstance(v, (bytes, bytearray)) else "a JSON value"
    raise InvalidInputError(f"{path}: a {type(v).__name__} is not a JSON value; convert it to {hint}")
