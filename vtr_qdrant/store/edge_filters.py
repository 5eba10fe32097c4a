"""``qdrant_client.models.Filter`` -> ``qdrant_edge.Filter``: the Edge back end's filter translation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from types import ModuleType
from typing import Any

from qdrant_client import models

from .._optional import require
from ..errors import ConfigError

__all__ = ["edge_module", "translate_filter"]


def edge_module() -> ModuleType:
    """The ``qdrant_edge`` module, or :class:`MissingDependencyError` naming the ``edge`` extra."""
    return require("qdrant_edge", "edge", purpose="the Qdrant Edge storage back end")


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, list) else [x]


def _check_not_bool(values: Sequence[Any], key: str) -> None:
    if any(isinstance(v, bool) for v in values):
        raise ConfigError(
            f"filter on {key!r} matches a boolean value: qdrant-edge-py turns Python bools into integers, "
            "so such a condition never matches on Qdrant Edge. Store the flag as a keyword ('true'/'false') "
            "or an integer (0/1) and match that instead"
        )


def _iso(x: datetime | date | str | None) -> str | None:
    if x is None or isinstance(x, str):
        return x
    return x.isoformat()


def _geo_point(e: ModuleType, p: models.GeoPoint) -> Any:
    return e.GeoPoint(lon=float(p.lon), lat=float(p.lat))


def _match(e: ModuleType, key: str, m: Any) -> Any:
    if isinstance(m, models.MatchValue):
        _check_not_bool([m.value], key)
        return e.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        _check_not_bool(m.any, key)
        return e.MatchAny(list(m.any))
    if isinstance(m, models.MatchExcept):
        _check_not_bool(m.except_, key)
        return e.MatchExcept(list(m.except_))
    if isinstance(m, models.MatchText):
        return e.MatchText(m.text)
    if isinstance(m, models.MatchTextAny):
        return e.MatchTextAny(m.text_any)
    if isinstance(m, models.MatchPhrase):
        return e.MatchPhrase(m.phrase)
    if isinstance(m, models.MatchPrefix):
        return e.MatchPrefix(m.prefix)
    if isinstance(m, models.MatchSubstring):
        return e.MatchSubstring(m.substring)
    raise ConfigError(
        f"filter on {key!r}: match type {type(m).__name__} is not supported by the Qdrant Edge back end"
    )


def _field_condition(e: ModuleType, c: models.FieldCondition) -> Any:
    kwargs: dict[str, Any] = {}
    if c.match is not None:
        kwargs["match"] = _match(e, c.key, c.match)
    if c.range is not None:
        r = c.range
        if isinstance(r, models.DatetimeRange):
            kwargs["range"] = e.RangeDateTime(gte=_iso(r.gte), gt=_iso(r.gt), lte=_iso(r.lte), lt=_iso(r.lt))
        elif isinstance(r, models.Range):
            kwargs["range"] = e.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
        else:
            raise ConfigError(f"filter on {c.key!r}: range type {type(r).__name__} is not supported")
    if c.geo_bounding_box is not None:
        b = c.geo_bounding_box
        kwargs["geo_bounding_box"] = e.GeoBoundingBox(
            _geo_point(e, b.top_left), _geo_point(e, b.bottom_right)
        )
    if c.geo_radius is not None:
        kwargs["geo_radius"] = e.GeoRadius(_geo_point(e, c.geo_radius.center), float(c.geo_radius.radius))
    if c.geo_polygon is not None:
        poly = c.geo_polygon
        interiors = (
            [[_geo_point(e, p) for p in ring.points] for ring in poly.interiors] if poly.interiors else None
        )
        kwargs["geo_polygon"] = e.GeoPolygon([_geo_point(e, p) for p in poly.exterior.points], interiors)
    if c.values_count is not None:
        v = c.values_count
        kwargs["values_count"] = e.ValuesCount(lt=v.lt, gt=v.gt, lte=v.lte, gte=v.gte)
    if c.is_empty is not None:
        kwargs["is_empty"] = c.is_empty
    if c.is_null is not None:
        kwargs["is_null"] = c.is_null
    if not kwargs:
        raise ConfigError(
            f"FieldCondition on {c.key!r} has no condition (match, range, geo, values_count...)"
        )
    return e.FieldCondition(c.key, **kwargs)


def _point_ids(ids: Sequence[Any]) -> set[Any]:
    out: set[Any] = set()
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, str)) and not hasattr(i, "hex"):
            raise ConfigError(f"HasIdCondition: point ids must be unsigned ints or UUIDs, got {i!r}")
        out.add(i if isinstance(i, int) else str(i))
    return out


def _condition(e: ModuleType, c: Any) -> Any:
    if isinstance(c, models.Filter):
        return _filter(e, c)
    if isinstance(c, models.FieldCondition):
        return _field_condition(e, c)
    if isinstance(c, models.HasIdCondition):
        try:
            return e.HasIdCondition(_point_ids(c.has_id))
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"HasIdCondition: {err}; point ids are unsigned ints or UUID strings") from err
    if isinstance(c, models.IsEmptyCondition):
        return e.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return e.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasVectorCondition):
        return e.HasVectorCondition(c.has_vector)
    if isinstance(c, models.NestedCondition):
        return e.NestedCondition(c.nested.key, _filter(e, c.nested.filter))
    slice_cls = getattr(models, "SliceCondition", None)
    if slice_cls is not None and isinstance(c, slice_cls):
        return e.SliceCondition(c.slice.total, c.slice.index)
    raise ConfigError(
        f"filter condition {type(c).__name__} is not supported by the Qdrant Edge back end; supported: Filter, "
        "FieldCondition (match/range/geo/values_count/is_empty/is_null), HasIdCondition, IsEmptyCondition, "
        "IsNullCondition, HasVectorCondition, NestedCondition, SliceCondition"
    )


def _filter(e: ModuleType, f: models.Filter) -> Any:
    min_should = None
    if f.min_should is not None:
        min_should = e.MinShould(
            [_condition(e, c) for c in f.min_should.conditions], int(f.min_should.min_count)
        )
    must = [_condition(e, c) for c in _as_list(f.must)]
    should = [_condition(e, c) for c in _as_list(f.should)]
    must_not = [_condition(e, c) for c in _as_list(f.must_not)]
    return e.Filter(
        must=must or None, should=should or None, must_not=must_not or None, min_should=min_should
    )


def translate_filter(query_filter: models.Filter | None) -> Any:
    """Translate a ``qdrant_client.models.Filter`` into the equivalent ``qdrant_edge.Filter``.

    Supports must/should/must_not/min_should at any depth, ``FieldCondition`` with every match
    (value, any, except, text, text_any, phrase, prefix, substring), ``Range``/``DatetimeRange``,
    geo (bounding box, radius, polygon), ``values_count``, ``is_empty``/``is_null``, and the
    ``HasId``, ``IsEmpty``, ``IsNull``, ``HasVector``, ``Nested`` and ``Slice`` conditions.

    Args:
        query_filter: the filter, or None.

    Returns:
        A ``qdrant_edge.Filter``, or None when ``query_filter`` is None.

    Raises:
        ConfigError: the filter is not a ``models.Filter``, or uses something Edge cannot evaluate
            (an unknown condition type, a boolean match value).
    """
    if query_filter is None:
        return None
    if not isinstance(query_filter, models.Filter):
        raise ConfigError(
            f"query_filter must be a qdrant_client.models.Filter, got {type(query_filter).__name__}"
        )
    return _filter(edge_module(), query_filter)
