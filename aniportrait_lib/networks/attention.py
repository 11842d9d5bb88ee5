"""Attention of the Lmk2Video UNets: scaled-dot-product attention, the spatial transformer whose
self-attention reads the ReferenceNet's features, and the features' container.

Layout: tokens are ``(N, L, C)`` with frames folded into ``N``; see :mod:`.unet` for the UNet layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

#: SDPA kernels on CUDA launch one block row per (batch x heads); keep below the 65535 grid limit.
_MAX_SDPA_BATCH_HEADS = 32768


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
class ReferenceDone(Exception):
    """Raised inside ReferenceUNet once every reference feature is recorded (the rest of the net is unused)."""


@dataclass
class ReferenceIO:
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

    def _self_attention(self, n: torch.Tensor, frames: int, io: ReferenceIO | None) -> torch.Tensor:
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
                io: ReferenceIO | None = None) -> torch.Tensor:
        """``x (B*frames, N, C)``, ``context (B, L, D)`` -> ``(B*frames, N, C)``."""
        n = self.norm1(x)
        if io is not None and io.record is not None:
            io.record.append(n if io.record_dtype is None else n.to(io.record_dtype))
            if len(io.record) == io.record_total:
                raise ReferenceDone
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
                io: ReferenceIO | None = None) -> torch.Tensor:
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
