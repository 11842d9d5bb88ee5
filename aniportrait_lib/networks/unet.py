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

import logging
from typing import Any, Mapping, Sequence

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .attention import ReferenceDone, ReferenceIO, SpatialTransformer
from .config import MotionSettings, UNetSettings, inference_v2_motion_kwargs, sd15_unet_config
from .motion_module import MotionModule

log = logging.getLogger(__name__)



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
                 io: ReferenceIO | None):
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
             frames: int, io: ReferenceIO | None,
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
        io = ReferenceIO(record=record, record_dtype=feature_dtype, record_total=self.num_reference_features)
        try:
            self._run(sample, timestep, encoder_hidden_states, 1, io, None)
        except ReferenceDone:
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
            io = ReferenceIO(features=reference_features, sample_mask=mask)
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
