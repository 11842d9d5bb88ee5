"""AniPortrait's PoseGuider: rendered landmark images -> 5 multi-scale features for the video UNet.

Conv stem ``3 -> 3 -> 16 -> 16 -> 32 -> 32 -> 64 -> 64 -> 128`` (each conv followed by BatchNorm + ReLU, three
stride-2 4x4 convs down to H/8), ``final_proj`` 1x1 to C channels times a learnt ``scale``, then four more conv
stages (H/16 C, H/32 2C, H/64 4C, H/64 4C), each followed by a small transformer block (``cross_attn1..4``: in the
released model these run as self-attention + feed-forward only, see below).

Behaviour of the original that this module reproduces or drops, on purpose:

* **BatchNorm** - the original never calls ``.eval()`` on the pose guider, so its BatchNorms normalise with the
  statistics of the current batch (the context window's frames x the CFG copies) and the stored running stats are
  unused (and silently updated). ``batch_norm_mode="batch_stats"`` (default) does exactly that normalisation, but
  never updates the running stats and does not depend on ``module.train()`` / ``.eval()``.
  ``batch_norm_mode="running_stats"`` uses the stored running statistics (classic eval mode; changes outputs a
  lot: the released model was never run that way). Batch statistics depend on the batch: to match the original's
  numbers feed the CFG-duplicated batch (both halves equal) like its pipeline does.
* **Input range** - the original pipeline feeds ``2 * uint8 - 1`` (values in [-1, 509], no /255): see
  :func:`aniportrait_lib.sampling.preprocess.prepare_pose_tensor`.
* **Reference pose** - the original also pushes the reference pose image through the same layers and passes it
  as ``encoder_hidden_states`` to ``cross_attn1..4``, but those blocks have no cross-attention (no
  ``cross_attention_dim``), so it has **no effect on the outputs**; it only moved BatchNorm running stats and made
  64x64 inputs crash (batch-1 BatchNorm on a 1x1 map). ``forward`` accepts ``ref_pose`` for signature
  compatibility and ignores it.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SpatialTransformer

log = logging.getLogger(__name__)

BatchNormMode = Literal["batch_stats", "running_stats"]
_BN_MODES = ("batch_stats", "running_stats")


class PoseBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` (same parameters/buffers) whose statistics source is an explicit mode, not train/eval.

    ``"batch_stats"``: normalise with the biased mean/variance of the current input over ``(N, H, W)``; running
    stats are neither used nor updated. ``"running_stats"``: normalise with ``running_mean``/``running_var``.
    """

    mode: str = "batch_stats"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # weights follow the input: hosts may compute in another dtype than the stored one (manual cast)
        weight, bias = self.weight.to(x), self.bias.to(x)
        if self.mode == "running_stats":
            return F.batch_norm(x, self.running_mean.to(x), self.running_var.to(x), weight, bias, False, 0.0, self.eps)
        if x.shape[0] * x.shape[2] * x.shape[3] == 1:
            # one value per channel: x - mean(x) == 0, output is the bias (torch refuses this case in training)
            return bias.view(1, -1, 1, 1).expand_as(x).clone()
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=1), PoseBatchNorm2d(cout), nn.ReLU()]


class PoseGuider(nn.Module):
    """The released ``pose_guider.pth`` model (184 keys at ``noise_latent_channels=320``; first key ``scale``).

    Args:
        noise_latent_channels: C, channels of the first feature (= the UNet's ``block_out_channels[0]``).
        attention_heads, attention_head_dim, norm_groups: of the four transformer blocks (the original hard-codes
            16 x 88 and 32 GroupNorm groups; configurable so that tiny test models can be built).
        batch_norm_mode: ``"batch_stats"`` (default, what the original computes) or ``"running_stats"``.
    """

    def __init__(self, noise_latent_channels: int = 320, attention_heads: int = 16, attention_head_dim: int = 88,
                 norm_groups: int = 32, batch_norm_mode: BatchNormMode = "batch_stats"):
        super().__init__()
        c = noise_latent_channels
        self.conv_layers = nn.Sequential(
            *_conv_bn_relu(3, 3, 3, 1), *_conv_bn_relu(3, 16, 4, 2),
            *_conv_bn_relu(16, 16, 3, 1), *_conv_bn_relu(16, 32, 4, 2),
            *_conv_bn_relu(32, 32, 3, 1), *_conv_bn_relu(32, 64, 4, 2),
            *_conv_bn_relu(64, 64, 3, 1), *_conv_bn_relu(64, 128, 3, 1),
        )
        self.final_proj = nn.Conv2d(128, c, kernel_size=1)
        self.conv_layers_1 = nn.Sequential(*_conv_bn_relu(c, c, 3, 1), *_conv_bn_relu(c, c, 3, 2))
        self.conv_layers_2 = nn.Sequential(*_conv_bn_relu(c, c, 3, 1), *_conv_bn_relu(c, 2 * c, 3, 2))
        self.conv_layers_3 = nn.Sequential(*_conv_bn_relu(2 * c, 2 * c, 3, 1), *_conv_bn_relu(2 * c, 4 * c, 3, 2))
        self.conv_layers_4 = nn.Sequential(*_conv_bn_relu(4 * c, 4 * c, 3, 1))

        def block(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, attention_heads, attention_head_dim, norm_groups, cross_attention_dim=None)

        self.cross_attn1 = block(c)
        self.cross_attn2 = block(2 * c)
        self.cross_attn3 = block(4 * c)
        self.cross_attn4 = block(4 * c)
        self.scale = nn.Parameter(torch.full((1,), 2.0))
        self.batch_norm_mode = batch_norm_mode

    @property
    def batch_norm_mode(self) -> str:
        return self._batch_norm_mode

    @batch_norm_mode.setter
    def batch_norm_mode(self, mode: str) -> None:
        if mode not in _BN_MODES:
            raise ValueError(f"batch_norm_mode must be one of {_BN_MODES}, got {mode!r}")
        self._batch_norm_mode = mode
        for m in self.modules():
            if isinstance(m, PoseBatchNorm2d):
                m.mode = mode

    def forward(self, pose: torch.Tensor, ref_pose: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Pose features for the video UNet.

        Args:
            pose: ``(B, 3, F, H, W)`` pose images in the original's input range (``2 * uint8 - 1``, see
                :func:`aniportrait_lib.sampling.preprocess.prepare_pose_tensor`); H, W multiples of 8. In batch-stats mode the statistics are over the whole batch:
                one copy of a window gives the original's (its CFG copies of the window are identical).
            ref_pose: accepted and ignored (it has no effect on the outputs in the original either).

        Returns:
            5 tensors: ``(B, C, F, H/8, W/8)``, ``(B, C, F, H/16, W/16)``, ``(B, 2C, F, H/32, W/32)``,
            ``(B, 4C, F, H/64, W/64)`` twice (stride-2 3x3 convs round odd sizes up).
        """
        del ref_pose
        if pose.ndim != 5:
            raise ValueError(f"pose must be (B, 3, F, H, W), got {tuple(pose.shape)}")
        batch, channels, frames, height, width = pose.shape
        # row-major frames: with one batch row the reshape is a strided view, which convolutions copy at each call
        x = pose.transpose(1, 2).reshape(batch * frames, channels, height, width).contiguous()
        x = x.to(self.scale.dtype)

        def video(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, frames, *t.shape[1:]).transpose(1, 2)

        x = self.final_proj(self.conv_layers(x)) * self.scale
        features = [video(x)]
        for convs, attn in ((self.conv_layers_1, self.cross_attn1), (self.conv_layers_2, self.cross_attn2),
                            (self.conv_layers_3, self.cross_attn3), (self.conv_layers_4, self.cross_attn4)):
            x = attn(convs(x))
            features.append(video(x))
        return features


def build_pose_guider(noise_latent_channels: int = 320, attention_heads: int = 16, attention_head_dim: int = 88,
                      norm_groups: int = 32, batch_norm_mode: BatchNormMode = "batch_stats",
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PoseGuider:
    """A :class:`PoseGuider` (uninitialised weights; ``device='meta'`` allocates nothing).

    Float parameters/buffers are cast to ``dtype``; ``num_batches_tracked`` stays int64.
    """
    with torch.device(device):
        model = PoseGuider(noise_latent_channels, attention_heads, attention_head_dim, norm_groups, batch_norm_mode)
    return model.to(dtype=dtype).eval().requires_grad_(False)
