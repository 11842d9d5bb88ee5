"""AnimateDiff-v2 motion modules of the video UNet: temporal self-attention across frames with a sinusoidal
position table (``VanillaTemporalModule`` of the original).

Layout: ``(B*frames, C, H, W)`` in and out, frames folded into the batch as rows ``b * F + f``.
"""
from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import Attention, _sdpa
from .positional import sinusoidal_table
from .config import MotionSettings


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
