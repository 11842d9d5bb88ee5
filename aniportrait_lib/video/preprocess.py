"""Input preprocessing of the stage-2 (Lmk2Video) pipeline, numerically like the original.

* :func:`clip_preprocess` - reference photo -> CLIP ViT pixel values (the original first resizes the PIL
  image to 224x224 BICUBIC, then runs ``CLIPImageProcessor()`` defaults, whose resize/centre-crop are
  identities at 224x224, then /255 and the CLIP mean/std normalisation).
* :func:`vae_preprocess` - reference photo -> VAE encoder input in [-1, 1] (PIL LANCZOS resize to
  (width, height), /255, 2x-1; ``VaeImageProcessor`` defaults).
* :func:`prepare_pose_tensor` - rendered pose frames -> PoseGuider input ``2*x - 1`` of the uint8 values
  WITHOUT /255 (range -1..509), as the original feeds numpy frames through ``VaeImageProcessor``.

Images are taken as uint8 RGB arrays (H, W, 3), PIL images, or float arrays/tensors in [0, 1]
(ComfyUI ``IMAGE`` frames, converted with ``round(x * 255)``, small overshoots clipped); 0..255 data must
come as uint8.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "CLIP_IMAGE_SIZE",
    "CLIP_MEAN",
    "CLIP_STD",
    "to_uint8_image",
    "to_uint8_frames",
    "clip_preprocess",
    "vae_preprocess",
    "prepare_pose_tensor",
]

CLIP_IMAGE_SIZE = 224
#: ``OPENAI_CLIP_MEAN`` / ``OPENAI_CLIP_STD`` (CLIPImageProcessor defaults), RGB order.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ImageLike = Union[np.ndarray, torch.Tensor, Image.Image]


def _float_to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] -> uint8 ``round(x * 255)``; a small overshoot (e.g. 1.001 from an upscaler) is clipped.

    Values far outside [0, 1] are refused rather than guessed to be 0..255 data: pass those as uint8.
    """
    x = x.astype(np.float64)
    if x.size and not np.isfinite(x).all():
        raise ValueError("The image holds NaN or infinite values.")
    if x.size and (x.min() < -0.5 or x.max() > 1.5):
        raise ValueError(
            f"Float image values must be in [0, 1], got [{x.min():.3g}, {x.max():.3g}]; pass 0..255 data as uint8."
        )
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def to_uint8_image(image: ImageLike) -> np.ndarray:
    """One image as a uint8 (H, W, 3) array.

    Accepts a PIL image (converted to RGB), a uint8 array/tensor (H, W, 3), or a float array/tensor
    (H, W, 3) with values in [0, 1] (a batch of one, (1, H, W, 3), is accepted too).
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"Expected an image of shape (H, W, 3), got {tuple(arr.shape)}.")
    if arr.dtype == np.uint8:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        return _float_to_uint8(arr)
    raise ValueError(f"Unsupported image dtype {arr.dtype}; use uint8 0..255 or float 0..1.")


def to_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Frames as a uint8 (F, H, W, 3) array (uint8 input is kept, float input in [0, 1] is scaled by 255)."""
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"Expected pose frames of shape (F, H, W, 3), got {tuple(arr.shape)}.")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return _float_to_uint8(arr)
    raise ValueError(f"Unsupported pose frame dtype {arr.dtype}; use uint8 0..255 or float 0..1.")


def resize_for_clip(image: ImageLike) -> np.ndarray:
    """Reference photo -> uint8 (224, 224, 3), PIL BICUBIC like the original (``ref_image.resize((224, 224))``)."""
    pil = Image.fromarray(to_uint8_image(image))
    return np.array(pil.resize((CLIP_IMAGE_SIZE, CLIP_IMAGE_SIZE), resample=Image.BICUBIC), dtype=np.uint8)


def clip_preprocess(image: ImageLike) -> torch.Tensor:
    """Reference photo -> CLIP image-encoder input.

    Args:
        image: RGB reference photo, uint8 (H, W, 3) / PIL / float [0, 1].

    Returns:
        float32 tensor (1, 3, 224, 224): BICUBIC resize to 224x224, /255, ``(x - CLIP_MEAN) / CLIP_STD``.
    """
    x = resize_for_clip(image).astype(np.float32) * np.float32(1.0 / 255.0)
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)
    std = np.asarray(CLIP_STD, dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def resize_reference(image: ImageLike, width: int, height: int) -> np.ndarray:
    """Reference photo -> uint8 (height, width, 3), PIL LANCZOS like the original's VaeImageProcessor."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}.")
    pil = Image.fromarray(to_uint8_image(image))
    if pil.size != (width, height):
        pil = pil.resize((width, height), resample=Image.LANCZOS)
    return np.array(pil, dtype=np.uint8)


def vae_preprocess(image: ImageLike, width: int, height: int) -> torch.Tensor:
    """Reference photo -> VAE encoder input.

    Args:
        image: RGB reference photo, uint8 (H, W, 3) / PIL / float [0, 1].
        width, height: output size in pixels.

    Returns:
        float32 tensor (1, 3, height, width) in [-1, 1]: PIL LANCZOS resize to (width, height), /255, 2x-1.
    """
    x = resize_reference(image, width, height).astype(np.float32) / 255.0
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    return 2.0 * x - 1.0


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
        u8 = torch.from_numpy(np.ascontiguousarray(to_uint8_frames(frames)))
    x = u8.permute(0, 3, 1, 2).to(torch.float32)  # (F, 3, H, W)
    h = x.shape[-2] if height is None else int(height)
    w = x.shape[-1] if width is None else int(width)
    if (h, w) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="nearest")
    x = 2.0 * x - 1.0
    return x.permute(1, 0, 2, 3).unsqueeze(0).contiguous()
