"""The one image policy of the pack: ComfyUI-style float images <-> uint8 RGB arrays.

Every node and library function converts images here, so the same rules hold everywhere:

* float data must lie in [0, 1]. A small overshoot, as resamplers (Lanczos, bicubic, upscalers)
  produce, is clipped: anything within ``[-OVERSHOOT, 1 + OVERSHOOT]``. Values clearly outside that
  range (e.g. 0..255 data stored as float) are refused with a message naming the input instead
  of being guessed at.
* NaN or infinite values are refused.
* grey (1 channel) is repeated to RGB, the alpha channel of RGBA is dropped.
* float -> uint8 is ``round(x * 255)``; uint8 -> float is ``k / 255`` (exact round trip).
* long batches are converted in chunks, so a 10-minute video never needs a second float copy.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

#: how far float pixels may overshoot [0, 1] and still be clipped instead of refused
OVERSHOOT = 0.5
#: frames converted at once (bounds the temporary float copy of a long batch)
CHUNK_FRAMES = 64


def _as_numpy(data: Any) -> np.ndarray:
    if isinstance(data, Image.Image):
        return np.asarray(data.convert("RGB"))
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy() if data.dtype != torch.bfloat16 else data.detach().float().cpu().numpy()
    return np.asarray(data)


def _check_float_range(values: np.ndarray, what: str) -> None:
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"the {what} input holds NaN or infinite values; check the node that produced it.")
    if lo < -OVERSHOOT or hi > 1.0 + OVERSHOOT:
        raise ValueError(
            f"the {what} input has pixel values from {lo:.3g} to {hi:.3g}, but images must be floats in 0..1 "
            f"(0..255 data must be uint8); fix or rescale the node that produced it."
        )


def _to_rgb_channels(frames: np.ndarray, what: str) -> np.ndarray:
    """``(N, H, W, C)`` with C in 1/3/4 -> ``(N, H, W, 3)`` (grey repeated, alpha dropped)."""
    channels = frames.shape[-1]
    if channels == 3:
        return frames
    if channels == 1:
        return np.repeat(frames, 3, axis=-1)
    if channels == 4:
        return frames[..., :3]
    raise ValueError(f"the {what} input has {channels} channels; connect grey, RGB or RGBA images.")


def _chunk_to_uint8(chunk: np.ndarray, what: str) -> np.ndarray:
    if chunk.dtype == np.uint8:
        return chunk
    if chunk.dtype == np.bool_:
        return chunk.astype(np.uint8) * 255
    if not np.issubdtype(chunk.dtype, np.floating):
        raise ValueError(f"the {what} input has pixel type {chunk.dtype}; use uint8 (0..255) or float (0..1).")
    _check_float_range(chunk, what)
    return np.clip(np.round(chunk.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def frames_to_uint8(frames: Any, what: str = "images", chunk: int = CHUNK_FRAMES) -> np.ndarray:
    """A batch of images -> C-contiguous uint8 ``(N, H, W, 3)`` RGB.

    Args:
        frames: ``(N, H, W, C)`` (a core IMAGE, C = 3) or ``(N, H, W)`` grey; torch tensor or numpy,
            float 0..1 or uint8; C may be 1, 3 or 4.
        what: the input's name for error messages ("reference image", "pose images", ...).
        chunk: frames converted at once.
    Raises:
        ValueError: empty batch, wrong shape, unsupported type, NaN/inf or values clearly outside 0..1.
    """
    if isinstance(frames, torch.Tensor) and frames.ndim == 3 and frames.shape[-1] not in (1, 3, 4):
        frames = frames[..., None]
    shape = tuple(frames.shape) if hasattr(frames, "shape") else np.asarray(frames).shape
    if len(shape) == 3:
        frames, shape = (frames[..., None], shape + (1,))
    if len(shape) != 4 or 0 in shape:
        raise ValueError(f"the {what} input is empty or not a batch of images (shape {shape}); connect at least one image.")
    out = np.empty(shape[:3] + (3,), dtype=np.uint8)
    for start in range(0, shape[0], chunk):
        part = _as_numpy(frames[start : start + chunk])
        out[start : start + chunk] = _to_rgb_channels(_chunk_to_uint8(part, what), what)
    return out


def image_to_uint8(image: Any, what: str = "image") -> np.ndarray:
    """One image -> uint8 ``(H, W, 3)`` RGB: a PIL image, ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``."""
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    shape = tuple(image.shape) if hasattr(image, "shape") else np.asarray(image).shape
    if len(shape) == 2:
        return frames_to_uint8(np.asarray(_as_numpy(image))[None, ..., None], what)[0]
    if len(shape) == 3:
        return frames_to_uint8(image[None], what)[0]
    if len(shape) == 4 and shape[0] == 1:
        return frames_to_uint8(image, what)[0]
    raise ValueError(f"the {what} must be one image (H, W, C); got shape {shape}.")


def frames_to_levels(frames: Any, what: str = "images", chunk: int = CHUNK_FRAMES) -> np.ndarray:
    """A batch of RGB float images -> float32 ``(N, H, W, 3)`` pixel levels on the 0..255 scale, NOT rounded
    or clipped: for steps that resample again (paste back), so a crop's resampling overshoot and sub-level
    detail survive the round trip. Same checks as :func:`frames_to_uint8` (NaN/inf, range, shape)."""
    shape = tuple(frames.shape)
    if len(shape) != 4 or 0 in shape or shape[-1] != 3:
        raise ValueError(f"the {what} input is empty or not a batch of RGB images (shape {shape}); connect at least one image.")
    out = np.empty(shape, dtype=np.float32)
    for start in range(0, shape[0], chunk):
        part = _as_numpy(frames[start : start + chunk])
        if part.dtype == np.uint8:
            out[start : start + chunk] = part
            continue
        _check_float_range(part, what)
        out[start : start + chunk] = part.astype(np.float32) * 255.0
    return out


def levels_to_float(levels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """float pixel levels ``(..., 3)`` on the 0..255 scale -> float32 tensor on the 0..1 scale, unclipped
    (a resampler's small overshoot is kept; every consumer clips it, see :data:`OVERSHOOT`)."""
    return torch.from_numpy(np.ascontiguousarray(levels, dtype=np.float32)).to(device).div_(255.0)


def uint8_to_float(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float32 tensor in [0, 1] (``k / 255``: converts back exactly)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).float().div_(255.0)


def first_image(images: torch.Tensor, what: str) -> tuple[torch.Tensor, str | None]:
    """The first image of a batch ``(N, H, W, C)`` as ``(1, H, W, C)``, and a note when others were dropped."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"the {what} input is empty (shape {tuple(images.shape)}); connect at least one image.")
    note = None
    if images.shape[0] > 1:
        note = f"the {what} input holds {images.shape[0]} images; only the first one is used."
    return images[:1], note
