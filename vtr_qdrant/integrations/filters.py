"""Framework filters -> ``qdrant_client.models.Filter``: LlamaIndex ``MetadataFilters`` and Haystack filter dicts.

Both frameworks describe a filter as a tree of *conditions* ``(key, operator, value)`` joined by
AND / OR / NOT; :func:`field_condition` is the one translation of a condition, and
:func:`llama_index_filter` / :func:`haystack_filter` only walk their framework's tree. Keys name the
payload fields at the top level, the user metadata (``meta.category`` in Haystack is ``category``).
A raw ``models.Filter`` passes through untouched. The result is checked by
:func:`~vtr_qdrant.store.filters.check_filter` when the search runs.

Operators (LlamaIndex ``FilterOperator`` values / Haystack names): ``==``, ``!=``, ``>``, ``>=``,
``<``, ``<=``, ``in`` / ``any`` (one of the values), ``nin`` / ``not in`` (none of them), ``all``
(every value: array fields), ``contains`` (an array field holds the value), ``text_match`` (full-text
match), ``is_empty``. Anything else is refused with an :class:`~vtr_qdrant.errors.InvalidInputError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from ..errors import InvalidInputError

__all__ = ["field_condition", "llama_index_filter", "haystack_filter"]

_RANGES = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def _values(op: str, key: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)) or not value:
        raise InvalidInputError(f"filter on {key!r}: operator {op!r} needs a non-empty list of values, got {value!r}")
    return list(value)


def field_condition(key: str, op: str, value: Any) -> tuple[list[models.Condition], list[models.Condition]]:
    """One ``(key, operator, value)`` condition as Qdrant conditions.

    Returns:
        ``(must, must_not)``: the conditions that must hold and those that must not (``!=`` and
        ``nin`` are a ``MatchValue`` / ``MatchAny`` that must not hold, so a point without the
        field passes them, as in both frameworks' in-memory stores).

    Raises:
        InvalidInputError: an unknown operator, or a value of the wrong kind for it.
    """
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"a filter condition needs a non-empty str key, got {key!r}")
    if op in ("==", "contains"):
        return [models.FieldCondition(key=key, match=models.MatchValue(value=value))], []
    if op == "!=":
        return [], [models.FieldCondition(key=key, match=models.MatchValue(value=value))]
    if op in _RANGES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"filter on {key!r}: operator {op!r} needs a number, got {value!r}")
        return [models.FieldCondition(key=key, range=models.Range(**{_RANGES[op]: value}))], []
    if op in ("in", "any"):
        return [models.FieldCondition(key=key, match=models.MatchAny(any=_values(op, key, value)))], []
    if op in ("nin", "not in"):
        return [], [models.FieldCondition(key=key, match=models.MatchAny(any=_values(op, key, value)))]
    if op == "all":
        return [models.FieldCondition(key=key, match=models.MatchValue(value=v)) for v in _values(op, key, value)], []
    if op in ("text_match", "text"):
        return [models.FieldCondition(key=key, match=models.MatchText(text=str(value)))], []
    if op == "is_empty":
        return [models.IsEmptyCondition(is_empty=models.PayloadField(key=key))], []
    raise InvalidInputError(
        f"filter on {key!r}: operator {op!r} has no Qdrant equivalent here; use ==, !=, >, >=, <, <=, in, nin, "
        "all, contains, text_match, is_empty, or pass a qdrant_client.models.Filter"
    )


def _join(condition: str, parts: list[tuple[list[models.Condition], list[models.Condition]]]) -> models.Filter:
    """AND / OR / NOT over translated parts, each part ``(must, must_not)``."""
    as_filters = [models.Filter(must=m or None, must_not=n or None) for m, n in parts]
    c = condition.lower()
    if c == "and":
        return models.Filter(must=[x for m, _ in parts for x in m] or None, must_not=[x for _, n in parts for x in n] or None)
    if c == "or":
        return models.Filter(should=list(as_filters))
    if c == "not":
        return models.Filter(must_not=list(as_filters))
    raise InvalidInputError(f"filter condition must be AND, OR or NOT, got {condition!r}")


def _nested(f: models.Filter) -> tuple[list[models.Condition], list[models.Condition]]:
    return [f], []


def llama_index_filter(filters: Any) -> models.Filter | None:
    """A LlamaIndex ``MetadataFilters`` (nested ones included) as a Qdrant filter; a ``models.Filter`` or None passes through.

    Raises:
        InvalidInputError: another type, an unsupported operator or condition.
    """
    if filters is None or isinstance(filters, models.Filter):
        return filters
    items = getattr(filters, "filters", None)
    if items is None:
        raise InvalidInputError(
            f"filters must be a llama_index MetadataFilters or a qdrant_client.models.Filter, got {type(filters).__name__}"
        )
    parts = []
    for f in items:
        if hasattr(f, "filters"):
            sub = llama_index_filter(f)
            if sub is not None:
                parts.append(_nested(sub))
        else:
            op = getattr(f.operator, "value", f.operator)
            parts.append(field_condition(f.key, str(op), f.value))
    condition = getattr(filters, "condition", None)
    return _join(str(getattr(condition, "value", condition) or "and"), parts)


def haystack_filter(filters: Any) -> models.Filter | None:
    """A Haystack filter dict (``{"field": "meta.x", "operator": "==", "value": 1}`` or
    ``{"operator": "AND", "conditions": [...]}``) as a Qdrant filter; a ``models.Filter`` or None passes through.

    Raises:
        InvalidInputError: another type, a malformed dict, an unsupported operator.
    """
    if filters is None or isinstance(filters, models.Filter):
        return filters
    if not isinstance(filters, Mapping) or "operator" not in filters:
        raise InvalidInputError(
            "filters must be a Haystack filter dict ({'field': 'meta.x', 'operator': '==', 'value': ...} or "
            f"{{'operator': 'AND', 'conditions': [...]}}) or a qdrant_client.models.Filter, got {filters!r:.80}"
        )
    if "conditions" in filters:
        parts = [_leaf(sub) for sub in filters["conditions"]]
        return _join(str(filters["operator"]), parts)
    return _join("and", [_leaf(filters)])


def _leaf(cond: Any) -> tuple[list[models.Condition], list[models.Condition]]:
    if isinstance(cond, Mapping) and "conditions" in cond:
        sub = haystack_filter(cond)
        return _nested(sub) if sub is not None else ([], [])
    if not isinstance(cond, Mapping) or not {"field", "operator", "value"} <= set(cond):
        raise InvalidInputError(f"a Haystack filter condition needs 'field', 'operator' and 'value', got {cond!r:.80}")
    field = str(cond["field"])
    return field_condition(field.removeprefix("meta."), str(cond["operator"]), cond["value"])
