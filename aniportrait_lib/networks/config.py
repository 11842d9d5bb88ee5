"""Configuration of the Lmk2Video UNets: the SD1.5 UNet settings and the AnimateDiff-v2 motion-module options,
read from the configs shipped beside this module (the original's ``unet/config.json`` and ``inference_v2.yaml``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# --------------------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetSettings:
    """The parts of a diffusers ``UNet2DConditionModel`` config that shape the AniPortrait UNets.

    ``attention_heads`` is SD1.5's ``attention_head_dim`` config value, which diffusers (and the original) use as
    the NUMBER of heads per block (head dim = channels // heads).
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_heads: tuple[int, ...] = (8, 8, 8, 8)
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    down_has_attention: tuple[bool, ...] = (True, True, True, False)
    up_has_attention: tuple[bool, ...] = (False, True, True, True)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "UNetSettings":
        """Read a diffusers-style ``unet/config.json`` dict (SD1.5 layout; 2D or 3D block type names)."""
        boc = tuple(int(c) for c in config.get("block_out_channels", cls.block_out_channels))
        n = len(boc)
        heads = config.get("attention_head_dim", 8)
        heads = tuple(int(h) for h in heads) if isinstance(heads, (list, tuple)) else (int(heads),) * n
        down_types = list(config.get("down_block_types", ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"]))
        up_types = list(config.get("up_block_types", ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1)))
        for key, bad in (("use_linear_projection", True), ("dual_cross_attention", True),
                         ("center_input_sample", True), ("only_cross_attention", True),
                         ("upcast_attention", True)):
            if config.get(key, False) == bad:
                raise NotImplementedError(f"UNet config option {key}={bad} is not supported")
        if config.get("class_embed_type") or config.get("num_class_embeds") or config.get("addition_embed_type"):
            raise NotImplementedError("class / addition embeddings are not supported")
        if config.get("resnet_time_scale_shift", "default") != "default":
            raise NotImplementedError("resnet_time_scale_shift other than 'default' is not supported")
        if config.get("act_fn", "silu") != "silu":
            raise NotImplementedError("only act_fn 'silu' is supported")
        if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") not in (
            "UNetMidBlock2DCrossAttn", "UNetMidBlock3DCrossAttn"
        ):
            raise NotImplementedError(f"mid block type {config.get('mid_block_type')} is not supported")
        if len(down_types) != n or len(up_types) != n or len(heads) != n:
            raise ValueError("block_out_channels, attention_head_dim and the block type lists must have equal length")
        for t in down_types + up_types:
            if t not in ("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock3D", "DownBlock3D",
                         "CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock3D", "UpBlock3D"):
                raise NotImplementedError(f"block type {t} is not supported")
        return cls(
            in_channels=int(config.get("in_channels", 4)),
            out_channels=int(config.get("out_channels", 4)),
            block_out_channels=boc,
            layers_per_block=int(config.get("layers_per_block", 2)),
            attention_heads=heads,
            cross_attention_dim=int(config.get("cross_attention_dim", 768)),
            norm_num_groups=int(config.get("norm_num_groups", 32)),
            norm_eps=float(config.get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
            freq_shift=int(config.get("freq_shift", 0)),
            downsample_padding=int(config.get("downsample_padding", 1)),
            mid_block_scale_factor=float(config.get("mid_block_scale_factor", 1.0)),
            down_has_attention=tuple(t.startswith("CrossAttn") for t in down_types),
            up_has_attention=tuple(t.startswith("CrossAttn") for t in up_types),
        )


@dataclass(frozen=True)
class MotionSettings:
    """AnimateDiff-v2 motion-module options (``unet_additional_kwargs`` of ``configs/inference/inference_v2.yaml``).

    ``norm_num_groups`` (read from ``motion_module_kwargs["norm_num_groups"]``, default 32) is an extension: the
    original hard-codes 32 groups for the temporal transformer's GroupNorm; tiny test models need fewer.
    """

    resolutions: tuple[int, ...] = (1, 2, 4, 8)
    mid_block: bool = True
    decoder_only: bool = False
    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: tuple[str, ...] = ("Temporal_Self", "Temporal_Self")
    temporal_position_encoding: bool = True
    max_len: int = 32
    dim_div: int = 1
    norm_num_groups: int = 32

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any] | None) -> "MotionSettings | None":
        """Parse ``unet_additional_kwargs``; None (or ``use_motion_module: false``) means no motion modules."""
        if kwargs is None or not kwargs.get("use_motion_module", False):
            return None
        if kwargs.get("unet_use_cross_frame_attention") or kwargs.get("unet_use_temporal_attention"):
            raise NotImplementedError("unet_use_cross_frame_attention / unet_use_temporal_attention are not supported")
        if kwargs.get("motion_module_type", "Vanilla") != "Vanilla":
            raise NotImplementedError(f"motion module type {kwargs.get('motion_module_type')} is not supported")
        mk = dict(kwargs.get("motion_module_kwargs", {}))
        types = tuple(mk.get("attention_block_types", ("Temporal_Self", "Temporal_Self")))
        if any(t != "Temporal_Self" for t in types):
            raise NotImplementedError(f"motion attention block types {types} are not supported (only Temporal_Self)")
        if mk.get("cross_frame_attention_mode") is not None:
            raise NotImplementedError("cross_frame_attention_mode is not supported")
        return cls(
            resolutions=tuple(int(r) for r in kwargs.get("motion_module_resolutions", (1, 2, 4, 8))),
            mid_block=bool(kwargs.get("motion_module_mid_block", False)),
            decoder_only=bool(kwargs.get("motion_module_decoder_only", False)),
            num_attention_heads=int(mk.get("num_attention_heads", 8)),
            num_transformer_block=int(mk.get("num_transformer_block", 2)),
            attention_block_types=types,
            temporal_position_encoding=bool(mk.get("temporal_position_encoding", False)),
            max_len=int(mk.get("temporal_position_encoding_max_len", 24)),
            dim_div=int(mk.get("temporal_attention_dim_div", 1)),
            norm_num_groups=int(mk.get("norm_num_groups", 32)),
        )


def sd15_unet_config() -> dict[str, Any]:
    """The SD1.5 ``unet/config.json`` (runwayml/stable-diffusion-v1-5) shipped in ``configs/sd15_unet.json``."""
    return json.loads((CONFIG_DIR / "sd15_unet.json").read_text())


def inference_v2_motion_kwargs() -> dict[str, Any]:
    """``unet_additional_kwargs`` of the original ``configs/inference/inference_v2.yaml`` (PE length 32)."""
    return json.loads((CONFIG_DIR / "unet_additional_kwargs.json").read_text())
