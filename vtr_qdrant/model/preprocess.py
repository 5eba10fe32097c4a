"""Image preprocessing driven by the bundle manifest (open_clip's eval transform, without torch).

Frames sampled by :mod:`vtr_qdrant.video` already come out at the bundle's image size (the resize
and centre crop run inside ffmpeg); for them only the normalisation runs here. Other images are
resized like torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on PIL images.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .manifest import ImagePreprocess

__all__ = ["preprocess_images", "resize_center_crop"]


def resize_center_crop(image: np.ndarray, size: int, *, resize_mode: str = "shortest", interpolation: str = "bicubic") -> np.ndarray:
    """Resize one RGB image like open_clip's eval transform.

    Args:
        image: (H, W, 3) uint8.
        size: output side length.
        resize_mode: ``shortest`` (short side to ``size``, then centre crop) or ``squash``.
        interpolation: ``bicubic`` or ``bilinear`` (PIL filters, as torchvision uses for PIL input).

    Returns:
        (size, size, 3) uint8.
    """
    from PIL import Image

    h, w = image.shape[:2]
    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    pil = Image.fromarray(image)
    if resize_mode == "squash":
        return np.asarray(pil.resize((size, size), resample))
    # torchvision Resize(int): the short side becomes `size`, the long side int(size * long / short).
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        pil = pil.resize((nw, nh), resample)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return np.asarray(pil)[top : top + size, left : left + size]


def preprocess_images(images: np.ndarray, spec: ImagePreprocess) -> np.ndarray:
    """Turn RGB frames into the image tower's input.

    Args:
        images: (N, H, W, 3) uint8 RGB. Frames already at (image_size, image_size) skip resizing.
        spec: the bundle's preprocessing.

    Returns:
        (N, 3, image_size, image_size) float32, normalised with the bundle's mean and std.
    """
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InvalidInputError(f"images must have shape (N, H, W, 3) RGB, got {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidInputError(f"images must be uint8 RGB (0-255), got dtype {arr.dtype}")
    s = spec.image_size
    if arr.shape[1:3] != (s, s):
        arr = np.stack([resize_center_crop(im, s, resize_mode=spec.resize_mode, interpolation=spec.interpolation) for im in arr])
    mean = np.asarray(spec.mean, dtype=np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(spec.std, dtype=np.float32) * 255.0)
    out = (arr.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
