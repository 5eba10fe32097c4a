"""Reading and writing X-Pool head parameters: the official checkpoint layout and our npz format.

Official X-Pool checkpoints store the head as ``pool_frames.cross_attn.{q,k,v,out}_proj.*``,
``pool_frames.linear_proj.*`` and ``pool_frames.layer_norm{1,2,3}.*`` (torch ``nn.Linear``
convention y = x Wᵀ + b) next to a fine-tuned CLIP (``clip.*``). Our own format is a pickle-free,
uncompressed ``.npz`` with a format key, ``dim`` and ``num_heads``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_file
from .._optional import require
from ..errors import ArtifactError, ConfigError

__all__ = [
    "XPOOL_PREFIX",
    "XPOOL_PARAMETER_NAMES",
    "ADAPTIVE_PARAMETER_NAMES",
    "params_from_state_dict",
    "read_checkpoint",
    "write_npz",
    "read_npz",
]

#: Prefix of the head's parameters in the official X-Pool checkpoints (next to ``clip.*``).
XPOOL_PREFIX = "pool_frames."

#: Parameter names of the head, relative to :data:`XPOOL_PREFIX`, as in the official module.
XPOOL_PARAMETER_NAMES: tuple[str, ...] = (
    "cross_attn.q_proj.weight",
    "cross_attn.q_proj.bias",
    "cross_attn.k_proj.weight",
    "cross_attn.k_proj.bias",
    "cross_attn.v_proj.weight",
    "cross_attn.v_proj.bias",
    "cross_attn.out_proj.weight",
    "cross_attn.out_proj.bias",
    "linear_proj.weight",
    "linear_proj.bias",
    "layer_norm1.weight",
    "layer_norm1.bias",
    "layer_norm2.weight",
    "layer_norm2.bias",
    "layer_norm3.weight",
    "layer_norm3.bias",
)

#: Parameters of the query-adaptive attention scale (our extension; absent from official checkpoints):
#: ``log s(t) = adaptive_scale.weight · t + adaptive_scale.bias`` multiplies every attention logit.
ADAPTIVE_PARAMETER_NAMES: tuple[str, ...] = ("adaptive_scale.weight", "adaptive_scale.bias")

_FORMAT_KEY = "__vtr_xpool_format__"
#: 1: the 16 official parameters; 2: plus the adaptive scale. Both are read.
_FORMAT_VERSION = 2


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """Convert a numpy array or a torch tensor (without importing torch) to a float64 array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = value.detach().cpu()
        try:
            value = tensor.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            value = tensor.float().numpy()
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"X-Pool parameter {name!r} is not a numeric array ({type(value).__name__})") from e
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"X-Pool parameter {name!r} contains NaN or infinite values")
    return arr



def params_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The head's 16 parameters (float64, no prefix) from a state dict in the official layout.

    Keys may carry the ``pool_frames.`` prefix (a full X-Pool model: unrelated ``clip.*`` keys are
    ignored) or not (the head module alone), optionally behind a DataParallel ``module.`` prefix.
    Values are numpy arrays or torch tensors (converted without importing torch here).

    Raises:
        ConfigError: missing parameters, non-finite values, duplicate keys.
    """
    if not isinstance(state_dict, Mapping):
        raise ConfigError(f"an X-Pool state dict must be a mapping, got {type(state_dict).__name__}")
    wanted = set(XPOOL_PARAMETER_NAMES) | set(ADAPTIVE_PARAMETER_NAMES)
    found: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in state_dict.items():
        name = str(key)
        name = name.removeprefix("module.")
        name = name.removeprefix(XPOOL_PREFIX)
        if name not in wanted:
            continue
        if name in found:
            raise ConfigError(
                f"X-Pool state dict holds {name!r} twice ({source[name]!r} and {key!r}); "
                "pass only one copy of the head"
            )
        found[name] = value
        source[name] = str(key)
    missing = [k for k in XPOOL_PARAMETER_NAMES if k not in found]
    if missing:
        sample = sorted(str(k) for k in state_dict)[:5]
        hint = (
            f" (no X-Pool head parameters at all: is this an X-Pool checkpoint? first keys: {sample})"
            if len(missing) == len(XPOOL_PARAMETER_NAMES)
            else ""
        )
        raise ConfigError(
            f"X-Pool state dict is missing {len(missing)} parameter(s): "
            f"{[XPOOL_PREFIX + k for k in missing]}{hint}"
        )
    return {k: _to_numpy(v, source[k]) for k, v in found.items()}


def read_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The state dict of an official X-Pool torch checkpoint (``{"state_dict": ...}`` or a bare one).

    Loaded with ``torch.load(..., weights_only=True, map_location="cpu")``; needs the ``export`` extra.

    Raises:
        ArtifactError: the file is missing or not a readable torch checkpoint.
        MissingDependencyError: torch is not installed.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"X-Pool checkpoint not found: {p}")
    torch = require("torch", "export", purpose="reading X-Pool torch checkpoints")
    try:
        obj = torch.load(str(p), weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises many types (pickle, zip, RuntimeError...)
        raise ArtifactError(
            f"could not read X-Pool checkpoint {p} with torch.load(weights_only=True): {e}"
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ArtifactError(
            f"X-Pool checkpoint {p} holds a {type(obj).__name__}; expected a state dict "
            'or {"state_dict": ...}'
        )
    return obj


def write_npz(path: str | os.PathLike[str], params: Mapping[str, np.ndarray], *, num_heads: int, dim: int) -> None:
    """Write parameters as an uncompressed, pickle-free ``.npz`` (atomic replace); float32 where lossless."""
    p = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for k, v in params.items():
        v32 = v.astype(np.float32)
        arrays[XPOOL_PREFIX + k] = v32 if np.array_equal(v32.astype(np.float64), v) else v
    # files without the adaptive scale stay version 1, readable by every release
    version = 2 if any(k in params for k in ADAPTIVE_PARAMETER_NAMES) else 1
    arrays[_FORMAT_KEY] = np.array(version, dtype=np.int64)
    arrays["num_heads"] = np.array(num_heads, dtype=np.int64)
    arrays["dim"] = np.array(dim, dtype=np.int64)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def read_npz(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], int, int]:
    """Read a file of :func:`write_npz`: (prefixed parameters, num_heads, dim).

    Raises:
        ArtifactError: the file is missing, not an npz, or not an X-Pool head file.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"X-Pool head file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ArtifactError(
            f"could not read X-Pool head file {p} (expected an .npz from save()): {e}"
        ) from e
    if _FORMAT_KEY not in arrays:
        raise ArtifactError(f"{p} is not an X-Pool head file written by XPoolHead.save()")
    version = int(arrays.pop(_FORMAT_KEY))
    if not 1 <= version <= _FORMAT_VERSION:
        raise ArtifactError(
            f"{p}: unsupported X-Pool head format version {version} (this vtr-qdrant reads 1 to {_FORMAT_VERSION})"
        )
    num_heads = int(arrays.pop("num_heads"))
    dim = int(arrays.pop("dim"))
    return arrays, num_heads, dim
