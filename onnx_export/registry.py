"""Registry names -> exported bundles: plugs the open_clip exporter into :mod:`vtr_qdrant.model.bundle`.

Importing this module registers :func:`export_registry_name` with
:func:`vtr_qdrant.model.bundle.register_exporter`, so ``resolve_bundle("ViT-B-32/laion2b_s34b_b79k")``
exports the model into the persistent cache on first use (``vtr_qdrant.model.bundle`` imports this module
itself when the ``export`` extra is installed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vtr_qdrant.errors import ConfigError, ModelNotFoundError
from vtr_qdrant.model.bundle import register_exporter
from vtr_qdrant.model.manifest import MANIFEST_FILE

from . import pretrained as _pretrained

__all__ = ["parse_registry_name", "export_registry_name"]

log = logging.getLogger(__name__)

_HOW_TO_LIST = (
    "registry names are 'ARCHITECTURE/PRETRAINED_TAG' as open_clip knows them; list the valid pairs with "
    "`python -c 'import open_clip; print(open_clip.list_pretrained())'`"
)


def parse_registry_name(name: str) -> tuple[str, str]:
    """Split ``'ARCH/TAG'`` into ``(arch, tag)``.

    Raises:
        ModelNotFoundError: the name is not of that form.
    """
    parts = name.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ModelNotFoundError(f"{name!r} is not a registry name of the form 'ARCH/TAG'; {_HOW_TO_LIST}")
    return parts[0], parts[1]


def export_registry_name(name: str, target_dir: Path) -> None:
    """Export the open_clip model named ``'ARCH/TAG'`` into ``target_dir`` (atomically).

    Args:
        name: registry name, e.g. ``"ViT-B-32/laion2b_s34b_b79k"``.
        target_dir: the cache folder the bundle must appear in.

    Raises:
        ModelNotFoundError: unknown architecture or tag (the message says how to list valid names),
            or the weights cannot be downloaded.
    """
    arch, tag = parse_registry_name(name)
    target = Path(target_dir)
    log.info("exporting open_clip %s/%s into %s", arch, tag, target)
    try:
        # Looked up on the module at call time, so tests can substitute a local model.
        _pretrained.export_pretrained(arch, pretrained=tag, out_dir=target, name=name)
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"{e}. ({_HOW_TO_LIST})") from e
    except ConfigError:
        # Another process exporting the same name may have renamed its bundle into place first.
        if (target / MANIFEST_FILE).is_file():
            log.info("%s was exported into %s by another process meanwhile; using it", name, target)
            return
        raise


register_exporter(export_registry_name)
