"""Input preprocessing of the stage-2 (Lmk2Video) pipeline, numerically like the original.

* :func:`clip_pixels` - reference photo -> float (1, 224, 224, 3) in [0, 1]: the original's 224x224 BICUBIC resize,
  for an encoder that applies the CLIP mean/std itself (ComfyUI's CLIP vision).
* :func:`reference_pixels` - reference photo -> float (1, H, W, 3) in [0, 1]: the original's LANCZOS resize to
  (width, height), for a VAE that maps [0, 1] to [-1, 1] itself (ComfyUI's VAE).
* :func:`prepare_pose_tensor` - rendered pose frames -> PoseGuider input ``2*x - 1`` of the uint8 values
  WITHOUT /255 (range -1..509), as the original feeds numpy frames through ``VaeImageProcessor``.

Images are converted with the pack's one image policy (:mod:`aniportrait_lib.imaging`): uint8 RGB arrays,
PIL images, or float arrays/tensors in [0, 1] (``round(x * 255)``, small overshoots clipped).

The original ran Pillow 9.5; its resizes are reproduced pass by pass (:func:`resize_width_first`).
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import imaging

__all__ = [
    "CLIP_IMAGE_SIZE",
    "CLIP_MEAN",
    "CLIP_STD",
    "resize_width_first",
    "resize_for_clip",
    "resize_reference",
    "clip_pixels",
    "reference_pixels",
    "prepare_pose_tensor",
]

CLIP_IMAGE_SIZE = 224
#: ``OPENAI_CLIP_MEAN`` / ``OPENAI_CLIP_STD`` (CLIPImageProcessor defaults), RGB order.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageLike = Union[np.ndarray, torch.Tensor, Image.Image]


def resize_width_first(image: Image.Image, width: int, height: int, resample: int) -> Image.Image:
    """``image.resize((width, height), resample)`` with the width pass first, as Pillow 9.5 (the original's) did.

    Pillow resamples separably and rounds to uint8 after each pass, so the pass order changes pixels.
    Pillow 9.5 always ran the horizontal pass first; newer Pillow may run the vertical one first
    (observed with Pillow 13: always when the width grows and the height shrinks, and for some sizes
    when both shrink), which moved the VAE input of a 70x110 -> 80x64 reference by up to 0.125.
    Two single-axis resizes (width at the original height, then height) pin the original's order; a
    single-axis resize is one pass with the same coefficients in every Pillow version.

    Args:
        image: PIL image.
        width, height: output size in pixels.
        resample: PIL filter (``Image.LANCZOS``, ``Image.BICUBIC``, ...).
    Returns:
        A new PIL image of size (width, height).
    """
    if image.size == (width, height):
        return image.copy()
    if image.width != width:
        image = image.resize((width, image.height), resample=resample)
    if image.height != height:
        image = image.resize((width, height), resample=resample)
    return image


def _pil_rgb(image: ImageLike) -> Image.Image:
    return Image.fromarray(imaging.image_to_uint8(image, "reference image"))


def resize_for_clip(image: ImageLike) -> np.ndarray:
    """Reference photo -> uint8 (224, 224, 3), PIL BICUBIC like the original (``ref_image.resize((224, 224))``)."""
    pil = resize_width_first(_pil_rgb(image), CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE, Image.BICUBIC)
    return np.array(pil, dtype=np.uint8)


def resize_reference(image: ImageLike, width: int, height: int) -> np.ndarray:
    """Reference photo -> uint8 (height, width, 3), PIL LANCZOS like the original's ``VaeImageProcessor``."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}.")
    return np.array(resize_width_first(_pil_rgb(image), width, height, Image.LANCZOS), dtype=np.uint8)


def clip_pixels(image: ImageLike) -> torch.Tensor:
    """Reference photo -> float32 (1, 224, 224, 3) in [0, 1] (``k / 255`` of :func:`resize_for_clip`), for an
    image encoder that applies the CLIP mean/std itself (ComfyUI's ``CLIP_VISION.encode_image``)."""
    return imaging.uint8_to_float(resize_for_clip(image)[None])


def reference_pixels(image: ImageLike, width: int, height: int) -> torch.Tensor:
    """Reference photo -> float32 (1, height, width, 3) in [0, 1] (``k / 255`` of :func:`resize_reference`), for a
    VAE that maps [0, 1] to [-1, 1] itself (ComfyUI's ``VAE.encode``)."""
    return imaging.uint8_to_float(resize_reference(image, width, height)[None])


def prepare_pose_tensor(
    frames: np.ndarray | torch.Tensor, height: int | None = None, width: int | None = None
) -> torch.Tensor:
    """Rendered pose frames -> PoseGuider input.

    Args:
        frames: (F, H, W, 3) pose images with channels as stored (the renderer's BGR-as-RGB order),
            uint8 0..255 or float 0..1 (scaled to 0..255 first).
        height, width: optional output size; frames of another size are resized with nearest
            neighbour (as the original ``VaeImageProcessor`` does).

    Returns:
        float32 tensor (1, 3, F, H, W) = ``2 * x - 1`` of the 0..255 values (range -1..509, no /255).
    """
    if isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8:
        u8 = frames  # stays on its device (the sampler passes one window's frames already on the GPU)
        if u8.ndim != 4 or u8.shape[-1] != 3:
            raise ValueError(f"Expected pose frames of shape (F, H, W, 3), got {tuple(u8.shape)}.")
    else:
        u8 = torch.from_numpy(imaging.frames_to_uint8(frames, "pose images"))
    x = u8.permute(0, 3, 1, 2).to(torch.float32)  # (F, 3, H, W)
    h = x.shape[-2] if height is None else int(height)
    w = x.shape[-1] if width is None else int(width)
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="nearest")
    x = 2.0 * x - 1.0
    return x.permute(1, 0, 2, 3).unsqueeze(0).contiguous()
