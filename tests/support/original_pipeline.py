"""The original pipeline's own preprocessing and VAE steps with diffusers/transformers models, for the golden
tests that compare the pack's steps with the original's intermediate tensors (the pack itself encodes and decodes
through ComfyUI's VAE and CLIP vision)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aniportrait_lib.sampling.preprocess import CLIP_MEAN, CLIP_STD, ImageLike, resize_for_clip, resize_reference
from aniportrait_lib.sampling.sampler import LATENT_SCALE, to_vae_space


def clip_preprocess(image: ImageLike) -> torch.Tensor:
    """Reference photo -> the original's ``CLIPImageProcessor`` output: float32 (1, 3, 224, 224), BICUBIC resize to
    224x224, /255, ``(x - CLIP_MEAN) / CLIP_STD``."""
    x = resize_for_clip(image).astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def vae_preprocess(image: ImageLike, width: int, height: int) -> torch.Tensor:
    """Reference photo -> the original's ``VaeImageProcessor`` output: float32 (1, 3, height, width) in [-1, 1],
    PIL LANCZOS resize, /255, 2x-1."""
    x = resize_reference(image, width, height).astype(np.float32) / 255.0
    return 2.0 * torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None] - 1.0


@torch.no_grad()
def encode_reference_latent(vae: Any, image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) VAE input in [-1, 1] -> the original's reference latent with a diffusers ``AutoencoderKL``:
    (1, 4, H/8, W/8) = ``latent_dist.mean * 0.18215`` (the mean, not a sample)."""
    param = next(vae.parameters())
    return vae.encode(image.to(param.device, param.dtype)).latent_dist.mean * LATENT_SCALE


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """(1, 4, F, h, w) sampler latents -> the original's video, frame by frame with a diffusers ``AutoencoderKL``:
    float32 (1, 3, F, 8h, 8w) in [0, 1]."""
    param = next(vae.parameters())
    raw = to_vae_space(latents)
    frames = [vae.decode(raw[:, :, f].to(param.device, param.dtype)).sample.float() for f in range(raw.shape[2])]
    return (torch.stack(frames, dim=2) / 2 + 0.5).clamp(0, 1)
