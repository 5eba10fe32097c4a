"""THE aggregation resolver and head loader: what an aggregation name means, everywhere.

Every entry point — :meth:`VideoCollection.search <vtr_qdrant.collection.VideoCollection.search>`,
:func:`get_aggregator`, ``vtr-qdrant search`` / ``eval`` and the benchmarks — turns a name into an
aggregator here, so a name means one thing:

- ``"mean"``, ``"max"``, ``"topk"``, ``"softmax"``: the parameter-free aggregations
  (:mod:`vtr_qdrant.search.aggregation`);
- ``"xpool"``: a *trained* X-Pool head — the one passed as ``head``, else the one shipped in the
  bundle; without either it is a :class:`~vtr_qdrant.errors.ConfigError` that says what to pass;
- ``"xpool-identity"``: the paper's initialisation (identity projections), needs the dimension;
- an :class:`~vtr_qdrant.search.aggregation.Aggregator` instance (an ``XPoolHead`` too): itself.

Heads are read by one loader, :func:`load_head` (an ``.npz`` from ``XPoolHead.save``, or a bundle
folder whose manifest lists a head), and a bundle's head is loaded once per process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, CollectionMismatchError, ConfigError
from ..model.bundle import LOCAL_PREFIX, ModelBundle
from ..model.manifest import BundleManifest
from .aggregation import AGGREGATIONS, Aggregator
from .xpool import XPoolHead

__all__ = [
    "AGGREGATION_NAMES",
    "FALLBACK_AGGREGATION",
    "default_aggregation",
    "resolve_aggregation",
    "resolve_aggregations",
    "get_aggregator",
    "load_head",
    "bundle_head",
    "towers_fingerprint",
]

#: every aggregation name the resolver knows
AGGREGATION_NAMES: tuple[str, ...] = (*AGGREGATIONS, "xpool", "xpool-identity")

_heads: dict[tuple[str, str], XPoolHead] = {}
_heads_lock = threading.Lock()


def towers_fingerprint(manifest: BundleManifest) -> str:
    """Fingerprint of a bundle's towers, tokenizer and preprocessing, ignoring any X-Pool head.

    Equals ``manifest.fingerprint`` for a bundle without a head, so a bundle that adds a trained
    head to the same towers can be matched against collections built with the head-less bundle.
    """
    return manifest.towers_fingerprint()


def bundle_head(bundle: ModelBundle | None) -> XPoolHead | None:
    """The X-Pool head a bundle ships (loaded once per process and file), or None.

    Raises:
        ArtifactError: the manifest lists a head whose file is missing, unreadable or disagrees
            with the manifest's head count.
    """
    if bundle is None or bundle.manifest.xpool is None:
        return None
    spec = bundle.manifest.xpool
    key = (str(bundle.file(spec.file).resolve()), bundle.manifest.files.get(spec.file, ""))
    with _heads_lock:
        head = _heads.get(key)
    if head is None:
        head = XPoolHead.load(bundle.file(spec.file))
        if head.num_heads != spec.num_heads or head.adaptive != spec.adaptive:
            raise ArtifactError(
                f"bundle {bundle.name!r}: manifest says {spec.num_heads} X-Pool head(s), adaptive={spec.adaptive}; "
                f"the weights have {head.num_heads}, adaptive={head.adaptive}"
            )
        with _heads_lock:
            head = _heads.setdefault(key, head)
    return head


def load_head(spec: str | os.PathLike[str] | ModelBundle, *, expected_fingerprint: str | None = None) -> XPoolHead:
    """Load an X-Pool head from an ``.npz`` written by :meth:`XPoolHead.save`, or from a bundle with a head.

    Args:
        spec: a head file, a bundle folder (``local-dir:`` prefix allowed) or a :class:`ModelBundle`
            whose manifest has an ``xpool`` entry.
        expected_fingerprint: the collection's model fingerprint; a bundle whose towers differ is
            refused (a head only makes sense with the towers it was trained on). Not checked for a
            bare ``.npz`` (it records no towers).

    Raises:
        ArtifactError: unreadable file, or a bundle without a head.
        CollectionMismatchError: the bundle's towers are not the collection's.
    """
    if isinstance(spec, ModelBundle):
        bundle = spec
    else:
        p = Path(os.fspath(spec).removeprefix(LOCAL_PREFIX)).expanduser()
        if not p.is_dir():
            return XPoolHead.load(p)
        bundle = ModelBundle.load(p)
    head = bundle_head(bundle)
    if head is None:
        raise ArtifactError(f"bundle {bundle.name!r} at {bundle.path} ships no X-Pool head (no 'xpool' in its manifest)")
    fp = towers_fingerprint(bundle.manifest)
    if expected_fingerprint is not None and fp != expected_fingerprint:
        raise CollectionMismatchError(
            f"the X-Pool head in {bundle.path} was trained with towers {fp}, but the collection's vectors come from "
            f"model {expected_fingerprint}: train a head for this collection's model"
        )
    return head


#: what a collection aggregates with when nobody says: its bundle's trained head, else this
FALLBACK_AGGREGATION = "softmax"


def default_aggregation(bundle: ModelBundle | None, *, dim: int | None = None) -> Aggregator:
    """A collection's default aggregation: the trained X-Pool head its bundle ships (``"xpool"``),
    else :data:`FALLBACK_AGGREGATION` (parameter-free text-conditioned softmax pooling)."""
    head = bundle_head(bundle)
    if head is not None:
        return resolve_aggregation(head, dim=dim)
    return resolve_aggregation(FALLBACK_AGGREGATION, dim=dim)


def resolve_aggregation(
    aggregation: str | Aggregator,
    *,
    dim: int | None = None,
    bundle: ModelBundle | None = None,
    head: XPoolHead | None = None,
    **options: Any,
) -> Aggregator:
    """Turn an aggregation name (or instance) into an aggregator; see the module docstring.

    Args:
        aggregation: a name in :data:`AGGREGATION_NAMES` or an :class:`Aggregator`.
        dim: embedding dimension D (needed by ``"xpool-identity"``; checked against a head).
        bundle: the model bundle whose shipped head ``"xpool"`` falls back to.
        head: a trained head for ``"xpool"`` (takes precedence over the bundle's).
        **options: constructor options of a parameter-free aggregation (``temperature=``, ``k=``).

    Raises:
        ConfigError: unknown name, ``"xpool"`` with no trained head available, a head of another
            dimension, or options for an aggregation that takes none.
    """
    if isinstance(aggregation, Aggregator):
        agg: Aggregator = aggregation
    elif not isinstance(aggregation, str):
        raise ConfigError(f"aggregation must be a name or an Aggregator, got {type(aggregation).__name__}")
    elif aggregation == "xpool":
        found = head if head is not None else bundle_head(bundle)
        if found is None:
            where = f"the bundle {bundle.name!r} ships none" if bundle is not None else "no model bundle was given"
            raise ConfigError(
                f"aggregation 'xpool' needs a trained X-Pool head and {where}. Pass one (head=XPoolHead.load(path), "
                "`--head PATH`, or a bundle with a head), use 'xpool-identity' for the paper's untrained head, "
                "or 'softmax'"
            )
        agg = found
    elif aggregation == "xpool-identity":
        if dim is None:
            raise ConfigError("aggregation 'xpool-identity' needs the embedding dimension (dim=...)")
        agg = XPoolHead.identity(int(dim))
    elif aggregation in AGGREGATIONS:
        return AGGREGATIONS[aggregation](**options)
    else:
        raise ConfigError(
            f"unknown aggregation {aggregation!r}; choose one of {list(AGGREGATION_NAMES)} or pass an Aggregator instance"
        )
    if options:
        raise ConfigError(f"aggregation {aggregation!r} takes no options, got {sorted(options)}")
    head_dim = getattr(agg, "dim", None)
    if dim is not None and head_dim is not None and head_dim != dim:
        raise ConfigError(f"the X-Pool head has dim {head_dim}, the collection {dim}")
    return agg


def resolve_aggregations(
    names: Sequence[str], dim: int, *, head: XPoolHead | None = None, bundle: ModelBundle | None = None
) -> dict[str, Aggregator]:
    """``{name: aggregator}`` for several names (evaluation tables), each as :func:`resolve_aggregation`."""
    return {name: resolve_aggregation(name, dim=dim, bundle=bundle, head=head) for name in names}


#: the public name of :func:`resolve_aggregation` (``vtr_qdrant.get_aggregator``)
get_aggregator = resolve_aggregation
