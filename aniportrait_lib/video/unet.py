"""The two UNets of AniPortrait's Lmk2Video stage: the ReferenceNet and the video denoiser.

Both are Stable-Diffusion-1.5-style UNets written from diffusers building blocks
(:class:`~diffusers.models.resnet.ResnetBlock2D`, :class:`~diffusers.models.attention.FeedForward`,
:class:`~diffusers.models.embeddings.Timesteps` / ``TimestepEmbedding``, ``Downsample2D`` / ``Upsample2D``)
plus the AniPortrait-specific parts written here:

* :class:`ReferenceUNet` - the SD1.5 UNet2D without ``conv_norm_out``/``conv_out`` (key layout of the released
  ``reference_unet.pth``). It runs **once per video** at timestep 0 on the reference latent and returns the
  normed hidden states (``norm1`` output) entering self-attention of each spatial transformer block
  ("reference features"). Nothing is kept inside the module: the features are returned and passed to the
  denoiser explicitly (the original kept them in hook "banks" on the modules).
* :class:`VideoUNet` - the denoising UNet inflated to video (key layout of ``denoising_unet.pth`` +
  ``motion_module.pth``): every spatial layer works per frame (frames are folded into the batch), the
  self-attention of each spatial transformer block attends to ``concat(own tokens, reference tokens of that
  block)`` (own tokens first), AnimateDiff-v2 motion modules (temporal transformers with a sinusoidal position
  table) follow each resnet/attention pair, and the PoseGuider features are added after ``conv_in`` (k=0) and
  after down block k-1 (k=1..4).

Layout conventions: a video tensor is ``(B, C, F, H, W)``; inside the network frames are folded into the batch as
rows ``r = b * F + f`` (``"b c f h w -> (b f) c h w"``). Reference feature ``i`` pairs with the ``i``-th spatial
transformer block in execution order (down blocks, mid block, up blocks); both UNets expose the block names
(:meth:`ReferenceUNet.spatial_block_names`), which are identical, which is how the original paired them too (it
sorted both block lists by channel width, stably, and zipped them; for two UNets of the same architecture that
pairs same-named blocks).

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from ..positional import sinusoidal_table

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: SDPA kernels on CUDA launch one block row per (batch x heads); keep below the 65535 grid limit.
_MAX_SDPA_BATCH_HEADS = 32768


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


# --------------------------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------------------------
def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention on ``(N, Lq, heads*d)`` queries and ``(N, Lk, heads*d)`` keys/values -> ``(N, Lq, heads*d)``."""
    n, lq, inner = q.shape
    d = inner // heads
    q = q.view(n, lq, heads, d).transpose(1, 2)
    k = k.view(n, k.shape[1], heads, d).transpose(1, 2)
    v = v.view(n, v.shape[1], heads, d).transpose(1, 2)
    step = max(1, _MAX_SDPA_BATCH_HEADS // heads)
    if n <= step:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = torch.cat(
            [F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step]) for i in range(0, n, step)]
        )
    return out.transpose(1, 2).reshape(n, lq, inner)


class Attention(nn.Module):
    """Multi-head attention with the diffusers/SD key layout (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).

    Written here rather than taken from ``diffusers.models.attention_processor.Attention`` because AniPortrait
    needs key/value inputs that differ per row (own tokens + reference tokens) and a stable parameter layout
    across diffusers versions; the maths is the same (scale ``dim_head ** -0.5``, SDPA).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, kv_dim: int | None = None, bias: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x (N, L, query_dim)``, ``context (N, Lk, kv_dim)`` or None (self-attention) -> ``(N, L, query_dim)``."""
        ctx = x if context is None else context
        out = _sdpa(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads)
        return self.to_out[0](out)


# --------------------------------------------------------------------------------------------------------------
# spatial transformer (per frame) with reference self-attention
# --------------------------------------------------------------------------------------------------------------
class _ReferenceDone(Exception):
    """Raised inside ReferenceUNet once every reference feature is recorded (the rest of the net is unused)."""


@dataclass
class _ReferenceIO:
    """Per-call reference plumbing (never stored on a module).

    Recording (ReferenceUNet): ``record`` collects each block's norm1 output, cast to ``record_dtype``.
    Reading (VideoUNet): ``features[i]`` (``(B or 1, L_i, C_i)``) is used by the i-th block; ``sample_mask`` ``(B,)``
    (host bool tensor) says which samples use them.
    """

    record: list[torch.Tensor] | None = None
    record_dtype: torch.dtype | None = None
    record_total: int = 0
    features: Sequence[torch.Tensor] | None = None
    sample_mask: torch.Tensor | None = None
    index: int = 0

    def take(self) -> tuple[int, torch.Tensor] | None:
        """The next block's ``(index, feature)``, or None without reference features."""
        if self.features is None:
            return None
        if self.index >= len(self.features):
            raise ValueError(f"got {len(self.features)} reference features, the UNet has more spatial blocks")
        self.index += 1
        return self.index - 1, self.features[self.index - 1]

    def keys_values(self, index: int, ref: torch.Tensor, attn: "Attention", like: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index``'s reference keys/values ``(B or 1, L, heads*d)`` in ``like``'s device and dtype:
        projected once per sampling run when the features are a :class:`ReferenceFeatures`, else per call."""
        if isinstance(self.features, ReferenceFeatures):
            return self.features.keys_values(index, attn, like)
        ref = ref.to(device=like.device, dtype=like.dtype)
        return attn.to_k(ref), attn.to_v(ref)


class ReferenceFeatures(list):
    """The ReferenceNet's per-block features (``(B or 1, L_i, C_i)`` tensors, a list) that also keep each
    block's projected reference keys and values once computed.

    The reference tokens are the same at every step and window of a sampling run (the ReferenceNet runs once,
    at t = 0), and so are their ``to_k``/``to_v`` projections: keeping them saves two projections per block and
    model call. Build one per sampling run (the projections belong to the weights of that run); the extra
    memory is twice the features' size in the compute dtype (about 50 MB at 512x512 fp16).
    """

    def __init__(self, features: Sequence[torch.Tensor]) -> None:
        super().__init__(features)
        self._projected: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keys_values(self, index: int, attn: "Attention", like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index``'s ``(to_k(ref), to_v(ref))`` on ``like``'s device and dtype (computed on first use)."""
        kept = self._projected.get(index)
        if kept is None or kept[0].dtype != like.dtype or kept[0].device != like.device:
            ref = self[index].to(device=like.device, dtype=like.dtype)
            kept = (attn.to_k(ref), attn.to_v(ref))
            self._projected[index] = kept
        return kept


def _runs(mask: torch.Tensor) -> list[tuple[int, int, bool]]:
    """``[(start, stop, value)]`` runs of equal values in a 1-D host bool tensor."""
    values = [bool(v) for v in mask.tolist()]
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, values[start]))
            start = i
    return runs


class TransformerBlock(nn.Module):
    """``BasicTransformerBlock`` (SD1.5 / ReferenceNet / PoseGuider) and the denoiser's
    ``TemporalBasicTransformerBlock`` (same parameters): norm1 -> self-attn, norm2 -> cross-attn (if
    ``cross_attention_dim``), norm3 -> GEGLU feed-forward, each with a residual.

    ``video_layout`` only changes the parameter registration order (state-dict order of the released
    ``denoising_unet.pth``: attn1, norm1, attn2, norm2, ff, norm3).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int | None,
                 video_layout: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        make_attn1 = lambda: Attention(dim, heads, dim_head)  # noqa: E731
        make_attn2 = lambda: Attention(dim, heads, dim_head, kv_dim=cross_attention_dim)  # noqa: E731
        if video_layout:
            self.attn1 = make_attn1()
            self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
            if cross_attention_dim is not None:
                self.attn2 = make_attn2()
                self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
            self.ff = FeedForward(dim, activation_fn="geglu")
            self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        else:
            self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
            self.attn1 = make_attn1()
            if cross_attention_dim is not None:
                self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
                self.attn2 = make_attn2()
            self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
            self.ff = FeedForward(dim, activation_fn="geglu")
        if cross_attention_dim is None:
            self.attn2 = None
            self.norm2 = None

    def _self_attention(self, n: torch.Tensor, frames: int, io: _ReferenceIO | None) -> torch.Tensor:
        """Self-attention of ``n (B*frames, N, C)``; rows of samples with reference use own + reference keys."""
        taken = io.take() if io is not None else None
        attn = self.attn1
        if taken is None:
            return attn(n)
        index, ref = taken
        rows, tokens, _ = n.shape
        batch = rows // frames
        if ref.shape[0] not in (1, batch):
            raise ValueError(f"reference feature batch {ref.shape[0]} does not match sample batch {batch}")
        if ref.shape[-1] != n.shape[-1]:
            raise ValueError(f"reference feature has {ref.shape[-1]} channels, block expects {n.shape[-1]}")
        use = io.sample_mask if io.sample_mask is not None else torch.ones(batch, dtype=torch.bool)
        if use.numel() != batch:
            raise ValueError(f"reference_mask has {use.numel()} entries, sample batch is {batch}")
        if not bool(use.any()):
            return attn(n)
        q, k, v = attn.to_q(n), attn.to_k(n), attn.to_v(n)
        k_ref, v_ref = io.keys_values(index, ref, attn, n)
        # runs of consecutive samples with the same mask value (CFG [uncond, cond]: two runs), sliced without copies
        outs = []
        for first, stop, with_ref in _runs(use):
            r0, r1 = first * frames, stop * frames
            qs, ks, vs = q[r0:r1], k[r0:r1], v[r0:r1]
            if with_ref:
                if ref.shape[0] == 1:
                    kr, vr = k_ref.expand(r1 - r0, -1, -1), v_ref.expand(r1 - r0, -1, -1)
                else:
                    kr = k_ref[first:stop].repeat_interleave(frames, 0)
                    vr = v_ref[first:stop].repeat_interleave(frames, 0)
                ks, vs = torch.cat([ks, kr], 1), torch.cat([vs, vr], 1)  # own tokens first
            outs.append(_sdpa(qs, ks, vs, attn.heads))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return attn.to_out[0](out)

    def _cross_attention(self, n: torch.Tensor, context: torch.Tensor, frames: int) -> torch.Tensor:
        """Cross-attention of ``n (B*frames, N, C)`` to ``context (B, L, D)`` (shared by the frames of a sample)."""
        attn = self.attn2
        if context.shape[1] == 1:
            # a single key: softmax is exactly 1, the output is the value for every query token
            out = attn.to_out[0](attn.to_v(context))
            return out.repeat_interleave(frames, 0) if frames > 1 else out
        if frames > 1:
            context = context.repeat_interleave(frames, 0)
        return attn(n, context)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, frames: int = 1,
                io: _ReferenceIO | None = None) -> torch.Tensor:
        """``x (B*frames, N, C)``, ``context (B, L, D)`` -> ``(B*frames, N, C)``."""
        n = self.norm1(x)
        if io is not None and io.record is not None:
            io.record.append(n if io.record_dtype is None else n.to(io.record_dtype))
            if len(io.record) == io.record_total:
                raise _ReferenceDone
            x = x + self.attn1(n)
        else:
            x = x + self._self_attention(n, frames, io)
        if self.attn2 is not None:
            if context is None:
                raise ValueError("this block needs encoder_hidden_states")
            x = x + self._cross_attention(self.norm2(x), context, frames)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """``Transformer2DModel`` / ``Transformer3DModel`` (conv projections): GroupNorm(eps 1e-6) -> 1x1 conv ->
    transformer blocks on ``H*W`` tokens -> 1x1 conv, plus the input (residual). Works per frame."""

    def __init__(self, channels: int, heads: int, dim_head: int, groups: int, cross_attention_dim: int | None,
                 num_layers: int = 1, video_layout: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, dim_head, cross_attention_dim, video_layout) for _ in range(num_layers)]
        )
        self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, frames: int = 1,
                io: _ReferenceIO | None = None) -> torch.Tensor:
        """``x (B*frames, C, H, W)`` -> same shape."""
        rows, _, height, width = x.shape
        h = self.proj_in(self.norm(x))
        inner = h.shape[1]
        # row-major tokens: a permuted view would make every LayerNorm copy it and every residual sum keep its layout
        h = h.permute(0, 2, 3, 1).reshape(rows, height * width, inner).contiguous()
        for block in self.transformer_blocks:
            h = block(h, context, frames, io)
        h = h.reshape(rows, height, width, inner).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x


# --------------------------------------------------------------------------------------------------------------
# motion module (AnimateDiff v2)
# --------------------------------------------------------------------------------------------------------------
class PositionalEncoding(nn.Module):
    """Sinusoidal table ``pe (1, max_len, dim)`` (persistent buffer, stored in ``motion_module.pth``)."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, F, dim)`` + ``pe[:, :F]``."""
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(
                f"the motion module handles at most {self.pe.shape[1]} frames at once, got {frames}; "
                f"use context windows of at most {self.pe.shape[1]} frames"
            )
        # .to(x): a host that offloads per layer may leave this parameter-free module's buffer on the CPU
        return x + self.pe[:, :frames].to(device=x.device, dtype=x.dtype)


class TemporalAttention(Attention):
    """Self-attention across frames (``VersatileAttention``, mode ``Temporal``) with a position table."""

    def __init__(self, dim: int, heads: int, dim_head: int, max_len: int, position_encoding: bool):
        super().__init__(dim, heads, dim_head)
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def forward_frames(self, n: torch.Tensor, frames: int) -> torch.Tensor:
        """``n (B*frames, N, C)`` (normed) -> attention across frames for every token, same shape."""
        rows, tokens, channels = n.shape
        batch = rows // frames
        seq = n.reshape(batch, frames, tokens, channels).transpose(1, 2).reshape(batch * tokens, frames, channels)
        if self.pos_encoder is not None:
            seq = self.pos_encoder(seq)
        out = self.to_out[0](_sdpa(self.to_q(seq), self.to_k(seq), self.to_v(seq), self.heads))
        return out.reshape(batch, tokens, frames, channels).transpose(1, 2).reshape(rows, tokens, channels)


class TemporalTransformerBlock(nn.Module):
    """Temporal attention blocks (each pre-LayerNorm + residual) then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, settings: MotionSettings):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, dim_head, settings.max_len, settings.temporal_position_encoding)
             for _ in settings.attention_block_types]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in settings.attention_block_types])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = x + attn.forward_frames(norm(x), frames)
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    """``TemporalTransformer3DModel``: per-frame GroupNorm(eps 1e-6) -> Linear -> blocks -> Linear, + input."""

    def __init__(self, channels: int, settings: MotionSettings):
        super().__init__()
        heads = settings.num_attention_heads
        dim_head = channels // heads // settings.dim_div
        inner = heads * dim_head
        self.norm = nn.GroupNorm(settings.norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, dim_head, settings) for _ in range(settings.num_transformer_block)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x (B*frames, C, H, W)`` -> same shape."""
        rows, channels, height, width = x.shape
        # row-major tokens: on the permuted view a Linear runs as a batched matmul against its weight repeated
        # per row (full-size CPU: 120 ms instead of a few ms at 1280 channels)
        h = self.norm(x).permute(0, 2, 3, 1).reshape(rows, height * width, channels).contiguous()
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, frames)
        h = self.proj_out(h)
        # x first: an elementwise op lays its result out like its first input, and a channels-last result here
        # made every later convolution copy its weights to channels-last on each call (the original calls
        # .contiguous() on h instead, an extra copy)
        return x + h.reshape(rows, height, width, channels).permute(0, 3, 1, 2)


class MotionModule(nn.Module):
    """``VanillaTemporalModule`` (AnimateDiff v2): a temporal transformer with a residual connection."""

    def __init__(self, channels: int, settings: MotionSettings):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, settings)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``x (B*frames, C, H, W)`` -> same shape."""
        return self.temporal_transformer(x, frames)


# --------------------------------------------------------------------------------------------------------------
# UNet blocks (frames folded into the batch)
# --------------------------------------------------------------------------------------------------------------
def _resnet(cin: int, cout: int, temb: int, s: UNetSettings, scale: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=cin, out_channels=cout, temb_channels=temb, eps=s.norm_eps, groups=s.norm_num_groups,
        dropout=0.0, time_embedding_norm="default", non_linearity="silu", output_scale_factor=scale, pre_norm=True,
    )


def _attention(ch: int, heads: int, s: UNetSettings, video: bool) -> SpatialTransformer:
    return SpatialTransformer(ch, heads, ch // heads, s.norm_num_groups, s.cross_attention_dim, video_layout=video)


class _UNetCallState:
    """What every block needs besides the hidden states (one per forward call)."""

    def __init__(self, temb: torch.Tensor, encoder_hidden_states: torch.Tensor, frames: int,
                 io: _ReferenceIO | None):
        self.temb = temb
        self.encoder_hidden_states = encoder_hidden_states
        self.frames = frames
        self.io = io


class DownBlock(nn.Module):
    """``CrossAttnDownBlock{2D,3D}`` / ``DownBlock{2D,3D}``: (resnet -> [attention] -> [motion]) x layers, downsample."""

    def __init__(self, cin: int, cout: int, temb: int, heads: int, has_attention: bool, add_downsample: bool,
                 s: UNetSettings, motion: MotionSettings | None, video: bool):
        super().__init__()
        n = s.layers_per_block
        if has_attention:
            self.attentions = nn.ModuleList([_attention(cout, heads, s, video) for _ in range(n)])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList([_resnet(cin if i == 0 else cout, cout, temb, s) for i in range(n)])
        self.motion_modules = (
            nn.ModuleList([MotionModule(cout, motion) for _ in range(n)]) if motion is not None else None
        )
        self.downsamplers = (
            nn.ModuleList([Downsample2D(cout, use_conv=True, out_channels=cout, padding=s.downsample_padding,
                                        name="op")])
            if add_downsample else None
        )

    def forward(self, x: torch.Tensor, c: _UNetCallState) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, c.temb)
            if self.attentions is not None:
                x = self.attentions[i](x, c.encoder_hidden_states, c.frames, c.io)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x, c.frames)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """``UNetMidBlock{2D,3D}CrossAttn``: resnet, then (attention -> [motion] -> resnet)."""

    def __init__(self, ch: int, temb: int, heads: int, s: UNetSettings, motion: MotionSettings | None,
                 video: bool):
        super().__init__()
        self.attentions = nn.ModuleList([_attention(ch, heads, s, video)])
        self.resnets = nn.ModuleList([_resnet(ch, ch, temb, s, s.mid_block_scale_factor) for _ in range(2)])
        self.motion_modules = nn.ModuleList([MotionModule(ch, motion)]) if motion is not None else None

    def forward(self, x: torch.Tensor, c: _UNetCallState) -> torch.Tensor:
        x = self.resnets[0](x, c.temb)
        for i, attn in enumerate(self.attentions):
            x = attn(x, c.encoder_hidden_states, c.frames, c.io)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x, c.frames)
            x = self.resnets[i + 1](x, c.temb)
        return x


class UpBlock(nn.Module):
    """``CrossAttnUpBlock{2D,3D}`` / ``UpBlock{2D,3D}``: (concat skip -> resnet -> [attention] -> [motion]) x
    (layers+1), then nearest 2x upsample + conv (to the next skip's size)."""

    def __init__(self, cin: int, cout: int, prev: int, temb: int, heads: int, has_attention: bool,
                 add_upsample: bool, s: UNetSettings, motion: MotionSettings | None, video: bool):
        super().__init__()
        n = s.layers_per_block + 1
        if has_attention:
            self.attentions = nn.ModuleList([_attention(cout, heads, s, video) for _ in range(n)])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList(
            [_resnet((prev if i == 0 else cout) + (cin if i == n - 1 else cout), cout, temb, s) for i in range(n)]
        )
        self.motion_modules = (
            nn.ModuleList([MotionModule(cout, motion) for _ in range(n)]) if motion is not None else None
        )
        self.upsamplers = (
            nn.ModuleList([Upsample2D(cout, use_conv=True, out_channels=cout)]) if add_upsample else None
        )

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], c: _UNetCallState,
                upsample_size: Sequence[int] | None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), c.temb)
            if self.attentions is not None:
                x = self.attentions[i](x, c.encoder_hidden_states, c.frames, c.io)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x, c.frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class _UNetCore(nn.Module):
    """Shared SD1.5 UNet body. Parameter names follow diffusers / the original (mid_block registered last)."""

    def __init__(self, settings: UNetSettings, motion: MotionSettings | None, output_head: bool, video: bool):
        super().__init__()
        s = settings
        self.settings = s
        self.motion_settings = motion
        boc = s.block_out_channels
        n = len(boc)
        temb = boc[0] * 4
        self.conv_in = nn.Conv2d(s.in_channels, boc[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(boc[0], s.flip_sin_to_cos, s.freq_shift)
        self.time_embedding = TimestepEmbedding(boc[0], temb)

        def motion_at(res: int, decoder: bool) -> MotionSettings | None:
            if motion is None or res not in motion.resolutions or (motion.decoder_only and not decoder):
                return None
            return motion

        self.down_blocks = nn.ModuleList()
        for i in range(n):
            self.down_blocks.append(DownBlock(
                boc[i - 1] if i > 0 else boc[0], boc[i], temb, s.attention_heads[i], s.down_has_attention[i],
                i < n - 1, s, motion_at(2 ** i, False), video,
            ))
        rev = list(reversed(boc))
        rev_heads = list(reversed(s.attention_heads))
        self.up_blocks = nn.ModuleList()
        for i in range(n):
            self.up_blocks.append(UpBlock(
                rev[min(i + 1, n - 1)], rev[i], rev[i - 1] if i > 0 else rev[0], temb, rev_heads[i],
                s.up_has_attention[i], i < n - 1, s, motion_at(2 ** (n - 1 - i), True), video,
            ))
        self.mid_block = MidBlock(
            boc[-1], temb, s.attention_heads[-1], s,
            motion if (motion is not None and motion.mid_block) else None, video,
        )
        if output_head:
            self.conv_norm_out = nn.GroupNorm(s.norm_num_groups, boc[0], eps=s.norm_eps)
            self.conv_act = nn.SiLU()
            self.conv_out = nn.Conv2d(boc[0], s.out_channels, kernel_size=3, padding=1)
        else:
            self.conv_norm_out = None
            self.conv_act = None
            self.conv_out = None

    def spatial_block_names(self) -> list[str]:
        """Names of the spatial transformer blocks in execution order (down blocks, mid block, up blocks)."""
        names = []
        for prefix, blocks in (("down_blocks", list(enumerate(self.down_blocks))), ("mid_block", [(None, self.mid_block)]),
                               ("up_blocks", list(enumerate(self.up_blocks)))):
            for bi, block in blocks:
                if block.attentions is None:
                    continue
                head = prefix if bi is None else f"{prefix}.{bi}"
                for ai, attn in enumerate(block.attentions):
                    for ti in range(len(attn.transformer_blocks)):
                        names.append(f"{head}.attentions.{ai}.transformer_blocks.{ti}")
        return names

    def _time_embedding(self, timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        if not torch.is_tensor(timestep):
            dtype = torch.float64 if isinstance(timestep, float) else torch.int64
            timestep = torch.tensor([timestep], dtype=dtype, device=device)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(device)
        else:
            timestep = timestep.to(device)
        t_emb = self.time_proj(timestep.expand(batch))
        dtype = self.time_embedding.linear_1.weight.dtype
        return self.time_embedding(t_emb.to(dtype))

    def _run(self, x: torch.Tensor, timestep: torch.Tensor | float | int, encoder_hidden_states: torch.Tensor,
             frames: int, io: _ReferenceIO | None,
             pose_features: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """``x (B*frames, C_in, h, w)`` -> body output before the head ``(B*frames, C0, h, w)``."""
        batch = x.shape[0] // frames
        temb = self._time_embedding(timestep, batch, x.device)
        if frames > 1:
            temb = temb.repeat_interleave(frames, 0)
        c = _UNetCallState(temb, encoder_hidden_states.to(x.dtype), frames, io)
        x = self.conv_in(x)
        if pose_features is not None:
            x = x + pose_features[0]
        skips = [x]
        for k, block in enumerate(self.down_blocks):
            x, res = block(x, c)
            if pose_features is not None:
                x = x + pose_features[k + 1]
            skips.extend(res)
        x = self.mid_block(x, c)
        for block in self.up_blocks:
            n = len(block.resnets)
            res = skips[-n:]
            del skips[-n:]
            size = tuple(skips[-1].shape[-2:]) if (block.upsamplers is not None and skips) else None
            x = block(x, res, c, size)
        return x


# --------------------------------------------------------------------------------------------------------------
# public models
# --------------------------------------------------------------------------------------------------------------
class ReferenceUNet(_UNetCore):
    """AniPortrait's ReferenceNet: an SD1.5 UNet2D without ``conv_norm_out``/``conv_out``.

    Key layout = released ``reference_unet.pth`` (682 keys at SD1.5 size). ``forward`` returns the reference
    features for :class:`VideoUNet`; the UNet output itself is never computed (the original discarded it).
    """

    def __init__(self, config: Mapping[str, Any] | UNetSettings | None = None):
        settings = config if isinstance(config, UNetSettings) else UNetSettings.from_config(
            config if config is not None else sd15_unet_config()
        )
        super().__init__(settings, None, output_head=False, video=False)

    @property
    def num_reference_features(self) -> int:
        return len(self.spatial_block_names())

    def forward(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep: torch.Tensor | float | int = 0,
                feature_dtype: torch.dtype | None = torch.float16) -> list[torch.Tensor]:
        """Record the reference features.

        Args:
            sample: ``(B, 4, h, w)`` reference latent (``latent_dist.mean * 0.18215``).
            encoder_hidden_states: ``(B, L, D)`` cross-attention context (CLIP image embeds, ``L = 1``).
            timestep: the original always uses 0.
            feature_dtype: dtype the features are returned in. Default ``torch.float16`` reproduces the original,
                whose ``ReferenceAttentionControl.update()`` casts every bank to float16 even in fp32 runs (the
                denoiser then promotes them back); ``None`` keeps the compute dtype.

        Returns:
            one tensor ``(B, h_i * w_i, C_i)`` per spatial transformer block (16 at SD1.5 size), in the order of
            :meth:`spatial_block_names` = the order :meth:`VideoUNet.forward` consumes them.
        """
        if sample.ndim != 4:
            raise ValueError(f"reference sample must be (B, C, h, w), got {tuple(sample.shape)}")
        record: list[torch.Tensor] = []
        io = _ReferenceIO(record=record, record_dtype=feature_dtype, record_total=self.num_reference_features)
        try:
            self._run(sample, timestep, encoder_hidden_states, 1, io, None)
        except _ReferenceDone:
            pass
        if len(record) != io.record_total:  # pragma: no cover - structural invariant
            raise RuntimeError(f"recorded {len(record)} reference features, expected {io.record_total}")
        return record


class VideoUNet(_UNetCore):
    """AniPortrait's denoising UNet inflated to video (``UNet3DConditionModel`` of the original).

    Key layout = released ``denoising_unet.pth`` (non-motion keys, 686 at SD1.5 size) + ``motion_module.pth``
    (588 keys incl. the ``pos_encoder.pe`` buffers). Conv kernels keep their 2D shapes; frames are folded into the
    batch for every spatial layer.
    """

    def __init__(self, config: Mapping[str, Any] | UNetSettings | None = None,
                 motion_kwargs: Mapping[str, Any] | MotionSettings | None = None):
        settings = config if isinstance(config, UNetSettings) else UNetSettings.from_config(
            config if config is not None else sd15_unet_config()
        )
        motion = motion_kwargs if isinstance(motion_kwargs, MotionSettings) or motion_kwargs is None \
            else MotionSettings.from_kwargs(motion_kwargs)
        super().__init__(settings, motion, output_head=True, video=True)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int,
                encoder_hidden_states: torch.Tensor, pose_features: Sequence[torch.Tensor] | None = None,
                reference_features: Sequence[torch.Tensor] | None = None,
                reference_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise (v-prediction for AniPortrait) of one context window.

        Args:
            sample: ``(B, 4, F, h, w)`` latents (F <= the motion modules' position-table length, 32).
            timestep: scalar (int/float/0-d tensor) or ``(B,)``.
            encoder_hidden_states: ``(B, L, D)`` (CLIP image embeds ``(B, 1, 768)``; zeros for the uncond half).
            pose_features: the 5 PoseGuider maps ``(B, C_k, F, h_k, w_k)`` (k=0 added after ``conv_in``, k=1..4
                after down block k-1) or None.
            reference_features: :meth:`ReferenceUNet.forward` output (each ``(B or 1, L_i, C_i)``, any float dtype:
                cast to the compute dtype here) or None (plain self-attention everywhere).
            reference_mask: ``(B,)`` bool; samples with False use plain self-attention without reference tokens
                (how the original runs the unconditional CFG half). None = every sample uses the references.

        Returns:
            ``(B, out_channels, F, h, w)``.
        """
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, C, F, h, w), got {tuple(sample.shape)}")
        batch, channels, frames, height, width = sample.shape
        if self.motion_settings is not None and self.motion_settings.temporal_position_encoding \
                and frames > self.motion_settings.max_len:
            raise ValueError(f"at most {self.motion_settings.max_len} frames per call, got {frames}")
        x = sample.transpose(1, 2).reshape(batch * frames, channels, height, width)
        pose = None
        if pose_features is not None:
            if len(pose_features) != len(self.down_blocks) + 1:
                raise ValueError(f"expected {len(self.down_blocks) + 1} pose feature maps, got {len(pose_features)}")
            pose = [p.to(x.dtype).transpose(1, 2).reshape(batch * frames, *p.shape[1:2], *p.shape[3:])
                    for p in pose_features]
        io = None
        if reference_features is not None:
            expected = len(self.spatial_block_names())
            if len(reference_features) != expected:
                raise ValueError(f"expected {expected} reference features, got {len(reference_features)}")
            mask = None
            if reference_mask is not None:  # one host copy per call, not one per block
                mask = torch.as_tensor(reference_mask).detach().to("cpu", torch.bool).reshape(-1)
            io = _ReferenceIO(features=reference_features, sample_mask=mask)
        x = self._run(x, timestep, encoder_hidden_states, frames, io, pose)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return x.reshape(batch, frames, *x.shape[1:]).transpose(1, 2)


# --------------------------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------------------------
def _build(factory, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    with torch.device(device):
        model = factory()
    return model.to(dtype=dtype).eval().requires_grad_(False)


def build_reference_unet(config: Mapping[str, Any] | None = None, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> ReferenceUNet:
    """A :class:`ReferenceUNet` (uninitialised weights; ``device='meta'`` allocates nothing).

    ``config``: diffusers-style UNet config dict; None = SD1.5 (``configs/sd15_unet.json``).
    """
    return _build(lambda: ReferenceUNet(config), device, dtype)


def build_video_unet(config: Mapping[str, Any] | None = None, motion_kwargs: Mapping[str, Any] | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> VideoUNet:
    """A :class:`VideoUNet` (uninitialised weights; ``device='meta'`` allocates nothing).

    ``config``: diffusers-style UNet config dict (None = SD1.5); ``motion_kwargs``: ``unet_additional_kwargs``
    (None = inference_v2.yaml's, motion modules with a 32-frame position table).
    """
    motion = motion_kwargs if motion_kwargs is not None else inference_v2_motion_kwargs()
    return _build(lambda: VideoUNet(config, motion), device, dtype)


def is_motion_key(key: str) -> bool:
    """True for keys stored in ``motion_module.pth`` (everything under a ``motion_modules`` container)."""
    return ".motion_modules." in key or key.startswith("motion_modules.")
