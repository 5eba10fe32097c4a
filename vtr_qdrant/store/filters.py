"""Checks shared by every back end: payload filters and collection names.

A filter or a name that one engine would reject with its own exception (pydantic, a Rust binding,
an HTTP 400) or, worse, silently evaluate differently, is refused here with an
:class:`~vtr_qdrant.errors.InvalidInputError` before any request, identically on local mode, Qdrant
Edge and a server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from qdrant_client import models

from ..errors import ConfigError, InvalidInputError

__all__ = ["COLLECTION_NAME_RE", "KEY_PATH_RE", "check_collection_name", "check_filter"]

#: collection names every back end accepts (Qdrant Edge stores a collection as a folder of that name)
COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")
#: a payload key path as Qdrant parses it: ``a``, ``a.b``, ``a[].b``, ``a[0]``, ``"any key"``
_SEGMENT = r'(?:"[^"]*"|[\w\-]+)(?:\[\d*\])*'
KEY_PATH_RE = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")


def check_collection_name(name: object) -> str:
    """``name`` if every back end can use it as a collection name, else a :class:`ConfigError`."""
    if not isinstance(name, str) or not COLLECTION_NAME_RE.match(name):
        raise ConfigError(
            f"collection name {name!r} cannot be used as a folder name: use letters, digits, '_', '-' "
            "and '.' (not starting with '.' or '-'), at most 255 characters"
        )
    return name


def check_filter(query_filter: object, *, what: str = "query_filter") -> models.Filter | None:
    """A payload filter every back end evaluates the same way, or an :class:`InvalidInputError`.

    Accepts a ``qdrant_client.models.Filter`` or its dict form (validated into one). Refused: any
    other type (a str, a list...), conditions on an empty key, a match on a boolean value (Qdrant
    Edge turns Python bools into integers, so it would never match there: store flags as 0/1 or
    keywords), and NaN or infinite range bounds.

    Returns:
        The filter (a ``models.Filter``), or None.
    """
    if query_filter is None:
        return None
    if isinstance(query_filter, models.Filter):
        flt = query_filter
    elif isinstance(query_filter, Mapping):
        try:
            flt = models.Filter.model_validate(query_filter)
        except ValidationError as e:
            raise InvalidInputError(f"{what} is not a valid Qdrant filter: {e.errors()[0].get('msg')} "
                                    f"at {e.errors()[0].get('loc')}; build it with qdrant_client.models.Filter") from None
    else:
        raise InvalidInputError(
            f"{what} must be a qdrant_client.models.Filter (or its dict form), got {type(query_filter).__name__} "
            f"{query_filter!r:.80}; e.g. models.Filter(must=[models.FieldCondition(key='k', match=models.MatchValue(value=1))])"
        )
    _walk(flt, what)
    return flt


def _walk(f: models.Filter, what: str) -> None:
    groups: list[Any] = [f.must, f.should, f.must_not, f.min_should.conditions if f.min_should else None]
    for group in groups:
        for c in group if isinstance(group, list) else ([group] if group is not None else []):
            if isinstance(c, models.Filter):
                _walk(c, what)
            elif isinstance(c, models.NestedCondition):
                _key(c.nested.key, what)
                _walk(c.nested.filter, what)
            elif isinstance(c, models.FieldCondition):
                _field(c, what)
            elif isinstance(c, models.IsEmptyCondition):
                _key(c.is_empty.key, what)
            elif isinstance(c, models.IsNullCondition):
                _key(c.is_null.key, what)


def _key(key: str, what: str) -> None:
    if not KEY_PATH_RE.match(key):
        raise InvalidInputError(
            f"{what}: {key!r} is not a payload key path; use letters, digits, '_' and '-', '.' between nested "
            'keys, [] or [N] for arrays, and double quotes around any other key (e.g. \'"my key".x\')'
        )


def _field(c: models.FieldCondition, what: str) -> None:
    _key(c.key, what)
    m = c.match
    values: list[Any] = []
    if isinstance(m, models.MatchValue):
        values = [m.value]
    elif isinstance(m, models.MatchAny):
        values = list(m.any)
    elif isinstance(m, models.MatchExcept):
        values = list(m.except_)
    if any(isinstance(v, bool) for v in values):
        raise InvalidInputError(
            f"{what}: the condition on {c.key!r} matches a boolean; Qdrant Edge stores Python bools as "
            "integers, so such a condition would never match there. Store the flag as 0/1 (or a keyword) "
            "and match that"
        )
    r = c.range
    if isinstance(r, models.Range):
        for bound in (r.gt, r.gte, r.lt, r.lte):
            if bound is not None and not math.isfinite(float(bound)):
                raise InvalidInputError(f"{what}: the range on {c.key!r} has a bound of {bound}; bounds must be finite")
