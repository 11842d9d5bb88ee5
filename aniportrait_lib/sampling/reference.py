"""Reference-photo conditioning of the stage-2 sampler: VAE latent and CLIP image embedding.

The encoders are passed in as callables so the host chooses the models (ComfyUI's core ``VAE`` and
``CLIP_VISION``, or diffusers/transformers ones); this module does what the original did around them:
the PIL resizes (:mod:`.preprocess`), the latent scaling, and the shape checks that tell a user which
model is the wrong one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import preprocess
from .preprocess import ImageLike

__all__ = ["Reference", "prepare_reference", "encode_reference", "embed_reference", "LATENT_SCALE"]

#: SD1.5 VAE scaling factor, hard-coded by the original pipeline.
LATENT_SCALE = 0.18215
#: channels and spatial downscale of the SD1.5 VAE latent the UNets were trained on
LATENT_CHANNELS, LATENT_DOWNSCALE = 4, 8

VAE_ERROR = "the VAE is not an SD1.5 VAE (4 latent channels, 8x downscale); load sd-vae-ft-mse."

#: ``encode_vae(pixels) -> latent``: pixels float32 (1, H, W, 3) in [0, 1] -> raw VAE latent mean (1, 4, H/8, W/8)
EncodeVae = Callable[[torch.Tensor], torch.Tensor]
#: ``encode_clip(pixels) -> image_embeds``: pixels float32 (1, 224, 224, 3) in [0, 1] -> (1, D) projected embeds
EncodeClip = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Reference:
    """The sampler's reference conditioning.

    Attributes:
        latent: (1, 4, H/8, W/8) VAE latent mean ALREADY multiplied by :data:`LATENT_SCALE` (sampler scale).
        clip_embeds: (1, D) CLIP ``image_embeds`` (D = the UNets' ``cross_attention_dim``, 768).
    """

    latent: torch.Tensor
    clip_embeds: torch.Tensor


def encode_reference(image: ImageLike, width: int, height: int, encode_vae: EncodeVae) -> torch.Tensor:
    """Reference photo -> (1, 4, height/8, width/8) sampler-scale latent (raw VAE latent * 0.18215).

    The photo is LANCZOS-resized to (width, height) like the original and handed to ``encode_vae`` as
    float (1, height, width, 3) in [0, 1]; the VAE must return the latent MEAN (the original does not sample).
    Raises ValueError when the latent is not SD1.5-shaped (4 channels, 1/8 size): the UNets cannot read it, or
    holds NaN/inf (a VAE with broken weights: one such value would spread into every frame of the video).
    """
    # float32: newer ComfyUI may hand back fp16 (--fp16-intermediates); the sampler keeps latents in fp32
    raw = encode_vae(preprocess.reference_pixels(image, width, height)).float()
    expected = (1, LATENT_CHANNELS, int(height) // LATENT_DOWNSCALE, int(width) // LATENT_DOWNSCALE)
    if tuple(raw.shape) != expected:
        raise ValueError(VAE_ERROR)
    if not bool(torch.isfinite(raw).all()):  # caught here, not as a NaN video after the whole sampling run
        raise ValueError("the VAE encoded the reference photo to NaN/inf values: its weights are broken; load "
                         "sd-vae-ft-mse again (or another working SD1.5 VAE).")
    return raw * LATENT_SCALE


def embed_reference(image: ImageLike, encode_clip: EncodeClip, context_dim: int) -> torch.Tensor:
    """Reference photo -> (1, context_dim) CLIP image embedding.

    The photo is BICUBIC-resized to 224x224 like the original and handed to ``encode_clip`` as float
    (1, 224, 224, 3) in [0, 1] (the encoder applies the CLIP mean/std). A (1, 1, D) answer is squeezed.
    Raises ValueError naming the right encoder when D is not the UNets' cross-attention width.
    """
    embeds = encode_clip(preprocess.clip_pixels(image)).float()
    if embeds.ndim == 3 and embeds.shape[1] == 1:
        embeds = embeds[:, 0]
    if embeds.ndim != 2 or embeds.shape[0] != 1 or embeds.shape[-1] != context_dim:
        raise ValueError(
            f"the CLIP vision model gives {embeds.shape[-1]}-d image embeddings but the AniPortrait UNets "
            f"expect {context_dim}-d: load the image encoder of lambdalabs/sd-image-variations-diffusers "
            f"(CLIP ViT-L/14 with projection)."
        )
    return embeds


def prepare_reference(image: ImageLike, width: int, height: int, encode_vae: EncodeVae, encode_clip: EncodeClip,
                      context_dim: int) -> Reference:
    """Reference photo -> :class:`Reference` (latent for the ReferenceNet, embedding for cross-attention).

    Args:
        image: the RGB reference photo: uint8 (H, W, 3), PIL, or float (H, W, 3) in [0, 1]; any size.
        width, height: video size in pixels (multiples of 8).
        encode_vae, encode_clip: the host's encoders, see :data:`EncodeVae` / :data:`EncodeClip`.
        context_dim: the UNets' ``cross_attention_dim`` (768 for AniPortrait).
    """
    latent = encode_reference(image, width, height, encode_vae)
    return Reference(latent=latent, clip_embeds=embed_reference(image, encode_clip, context_dim))
