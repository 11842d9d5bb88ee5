"""wav2vec2 encoder that emits exactly one feature vector per video frame.

AniPortrait's encoder is a stock ``transformers`` Wav2Vec2Model (wav2vec2-base-960h architecture)
run with one change (reference quirk 7): the conv features are linearly interpolated in time
(``align_corners=True``) to the video frame count *before* the feature projection and the
transformer, so the transformer runs at the video frame rate. This module builds the stock model
and runs that forward through its public sub-modules.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Mapping

import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Config, Wav2Vec2Model

#: the released checkpoints store the positional conv's weight norm with torch<2.1 names ...
RELEASE_WEIGHT_G = "encoder.pos_conv_embed.conv.weight_g"
RELEASE_WEIGHT_V = "encoder.pos_conv_embed.conv.weight_v"
#: ... and torch>=2.1 ``parametrizations.weight_norm`` stores the same tensors under these names
PARAM_WEIGHT_G = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
PARAM_WEIGHT_V = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"


def base_960h_config() -> dict:
    """The facebook/wav2vec2-base-960h config (hidden 768, 12 layers), shipped with the pack."""
    text = resources.files(__package__).joinpath("configs/wav2vec2-base-960h.json").read_text()
    return json.loads(text)


def make_config(overrides: Mapping | None = None) -> Wav2Vec2Config:
    """Wav2Vec2Config from the base-960h values updated with ``overrides``."""
    values = base_960h_config()
    values.update(dict(overrides or {}))
    values.pop("transformers_version", None)
    values.pop("_name_or_path", None)
    values.pop("architectures", None)
    return Wav2Vec2Config(**values)


def config_from_state_dict(sd: Mapping[str, torch.Tensor], prefix: str = "audio_encoder.") -> dict:
    """Infer the wav2vec2 config fields that shape the weights from a release-layout state dict.

    Strides, activation and the head count cannot be read from shapes: strides and activation keep
    the base-960h values and heads = hidden / 64 (12 at base size), as in every wav2vec2-base model.
    """
    def shape(key: str) -> list[int]:
        return list(sd[prefix + key].shape)

    base = base_960h_config()
    conv_dim, conv_kernel = [], []
    i = 0
    while f"{prefix}feature_extractor.conv_layers.{i}.conv.weight" in sd:
        s = shape(f"feature_extractor.conv_layers.{i}.conv.weight")
        conv_dim.append(s[0])
        conv_kernel.append(s[2])
        i += 1
    if not conv_dim:
        return {}
    num_layers = 0
    while f"{prefix}encoder.layers.{num_layers}.attention.q_proj.weight" in sd:
        num_layers += 1
    hidden = shape("feature_projection.projection.weight")[0]
    out = {
        "conv_dim": conv_dim,
        "conv_kernel": conv_kernel,
        "conv_stride": base["conv_stride"][: len(conv_dim)] + [2] * max(0, len(conv_dim) - len(base["conv_stride"])),
        "num_feat_extract_layers": len(conv_dim),
        "conv_bias": f"{prefix}feature_extractor.conv_layers.0.conv.bias" in sd,
        "feat_extract_norm": "layer" if f"{prefix}feature_extractor.conv_layers.1.layer_norm.weight" in sd else "group",
        "hidden_size": hidden,
        "num_attention_heads": max(1, hidden // 64),
        "num_hidden_layers": num_layers,
        "mask_time_prob": base["mask_time_prob"] if f"{prefix}masked_spec_embed" in sd else 0.0,
    }
    if num_layers:
        out["intermediate_size"] = shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0]
    for name in (RELEASE_WEIGHT_V, PARAM_WEIGHT_V):
        if prefix + name in sd:
            v = shape(name)
            out["num_conv_pos_embeddings"] = v[2]
            out["num_conv_pos_embedding_groups"] = hidden // v[1]
    return out


def build_encoder(config: Wav2Vec2Config) -> Wav2Vec2Model:
    """A stock Wav2Vec2Model (eval mode: no SpecAugment, no dropout)."""
    config._attn_implementation = "sdpa"
    return Wav2Vec2Model(config).eval()


def to_module_keys(sd: Mapping[str, torch.Tensor], module_keys: set[str], prefix: str = "audio_encoder.") -> dict:
    """Rename the pos-conv weight-norm tensors of a checkpoint to the names ``module_keys`` uses.

    Explicit mapping (reference quirk 8): ``weight_g`` <-> ``parametrizations.weight.original0`` and
    ``weight_v`` <-> ``original1``; nothing is dropped.
    """
    pairs = [(RELEASE_WEIGHT_G, PARAM_WEIGHT_G), (RELEASE_WEIGHT_V, PARAM_WEIGHT_V)]
    out = dict(sd)
    for release, param in pairs:
        r, p = prefix + release, prefix + param
        if r in out and p in module_keys and r not in module_keys:
            out[p] = out.pop(r)
        elif p in out and r in module_keys and p not in module_keys:
            out[r] = out.pop(p)
    return out


def to_release_keys(sd: Mapping[str, torch.Tensor], prefix: str = "audio_encoder.") -> dict:
    """Rename parametrization-style weight-norm keys to the release's ``weight_g``/``weight_v`` (order kept)."""
    rename = {prefix + PARAM_WEIGHT_G: prefix + RELEASE_WEIGHT_G, prefix + PARAM_WEIGHT_V: prefix + RELEASE_WEIGHT_V}
    return {rename.get(k, k): v for k, v in sd.items()}


def encode_at_frame_rate(encoder: Wav2Vec2Model, input_values: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Run wav2vec2 with the conv features resampled to ``num_frames`` before the transformer.

    Args:
        encoder: stock Wav2Vec2Model.
        input_values: ``(B, N)`` normalised 16 kHz samples.
        num_frames: video frames to produce (``T``).
    Returns:
        ``(B, T, hidden)`` last hidden state.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    conv = encoder.feature_extractor(input_values)  # (B, C, T_conv)
    conv = F.interpolate(conv, size=num_frames, mode="linear", align_corners=True)
    hidden, _ = encoder.feature_projection(conv.transpose(1, 2))
    return encoder.encoder(hidden).last_hidden_state


# ---------------------------------------------------------------- long clips in bounded memory
#: final conv frames (50 per second of 16 kHz audio) per piece of the streamed conv stack (~5 s)
CONV_PIECE_FRAMES = 256


def _conv_geometry(encoder: Wav2Vec2Model) -> tuple[int, int]:
    """(total stride, receptive field) in samples of the conv feature extractor."""
    stride, field = 1, 1
    for layer in encoder.feature_extractor.conv_layers:
        k, s = layer.conv.kernel_size[0], layer.conv.stride[0]
        field += (k - 1) * stride
        stride *= s
    return stride, field


def _conv_out_len(encoder: Wav2Vec2Model, num_samples: int) -> int:
    n = num_samples
    for layer in encoder.feature_extractor.conv_layers:
        n = (n - layer.conv.kernel_size[0]) // layer.conv.stride[0] + 1
    return n


def conv_features_streamed(encoder: Wav2Vec2Model, input_values: torch.Tensor, piece_frames: int = CONV_PIECE_FRAMES) -> torch.Tensor:
    """``encoder.feature_extractor(input_values)`` computed piece by piece: memory independent of the length.

    The conv stack is local (receptive field 400 samples, stride 320) except the GroupNorm of its first
    layer in wav2vec2-base, which normalises every channel over the whole clip: its per-channel mean and
    variance are accumulated in a first pass over the clip (float64), then every piece of samples runs
    through the stack with those statistics. Equal to the whole-clip pass up to float rounding; the
    whole-clip pass keeps ~3 copies of the first layer's ``512 x N/5`` output (~16 MB per second of audio).
    Returns ``(B, C, T_conv)``.
    """
    layers = list(encoder.feature_extractor.conv_layers)
    first = layers[0]
    norm = getattr(first, "layer_norm", None)
    group = isinstance(norm, torch.nn.GroupNorm)
    if group and norm.num_groups != norm.num_channels:
        return encoder.feature_extractor(input_values)
    stride, field = _conv_geometry(encoder)
    total = _conv_out_len(encoder, input_values.shape[1])
    if total < 1:
        return encoder.feature_extractor(input_values)
    x = input_values[:, None]
    mean = inv_std = None
    if group:
        k0, s0 = first.conv.kernel_size[0], first.conv.stride[0]
        n0 = (input_values.shape[1] - k0) // s0 + 1
        step = piece_frames * (stride // s0)
        acc = acc2 = None
        for a in range(0, n0, step):
            b = min(a + step, n0)
            y = first.conv(x[:, :, a * s0 : (b - 1) * s0 + k0]).double()
            s1, s2 = y.sum(-1), (y * y).sum(-1)
            acc = s1 if acc is None else acc + s1
            acc2 = s2 if acc2 is None else acc2 + s2
        mean = acc / n0
        var = (acc2 / n0 - mean * mean).clamp_min(0)
        scale = (1.0 / torch.sqrt(var + norm.eps)).float() * norm.weight
        mean = mean.float()[..., None]
        inv_std = scale[..., None]
    pieces = []
    for a in range(0, total, piece_frames):
        b = min(a + piece_frames, total)
        h = x[:, :, a * stride : (b - 1) * stride + field]
        if group:
            h = first.activation((first.conv(h) - mean) * inv_std + norm.bias[:, None])
            rest = layers[1:]
        else:
            rest = layers
        for layer in rest:
            h = layer(h)
        pieces.append(h)
    return torch.cat(pieces, dim=-1)


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Frame windows ``[a, b)`` of ``window`` frames covering ``[0, num_frames)``, evenly spaced, each
    overlapping the next by at least ``overlap`` frames (one window when the clip fits)."""
    if window < 2 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 2 frames and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if num_frames <= window:
        return [(0, num_frames)]
    n = -(-(num_frames - overlap) // (window - overlap))
    n = max(n, 2)
    starts = [round(k * (num_frames - window) / (n - 1)) for k in range(n)]
    return [(s, s + window) for s in starts]


def encode_windowed(
    encoder: Wav2Vec2Model,
    input_values: torch.Tensor,
    num_frames: int,
    window_frames: int,
    overlap_frames: int,
    on_window=None,
) -> torch.Tensor:
    """:func:`encode_at_frame_rate` for long clips, in memory that does not grow with the length.

    The conv features are computed exactly (:func:`conv_features_streamed`) and resampled to
    ``num_frames`` over the whole clip as the original does; only the transformer (whose attention is
    O(T^2) over the clip) runs on windows of ``window_frames`` frames overlapping by at least
    ``overlap_frames``; in each overlap the two windows' outputs are cross-faded linearly.
    ``on_window(a, b)`` is called with each window's frame range before it is encoded (tests, progress).
    Returns ``(B, T, hidden)``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    conv = conv_features_streamed(encoder, input_values)
    conv = F.interpolate(conv, size=num_frames, mode="linear", align_corners=True)
    windows = plan_windows(num_frames, window_frames, overlap_frames)
    out = None
    total_w = torch.zeros(num_frames, dtype=conv.dtype, device=conv.device)
    for k, (a, b) in enumerate(windows):
        if on_window is not None:
            on_window(a, b)
        hidden, _ = encoder.feature_projection(conv[:, :, a:b].transpose(1, 2))
        h = encoder.encoder(hidden).last_hidden_state  # (B, b - a, hidden)
        if out is None:
            out = h.new_zeros(h.shape[0], num_frames, h.shape[2])
        w = torch.ones(b - a, dtype=h.dtype, device=h.device)
        if k > 0:  # ramp up over the overlap with the previous window
            ov = windows[k - 1][1] - a
            if ov > 0:
                w[:ov] = (torch.arange(ov, dtype=h.dtype, device=h.device) + 0.5) / ov
        if k + 1 < len(windows):  # ramp down over the overlap with the next window
            ov = b - windows[k + 1][0]
            if ov > 0:
                w[b - a - ov :] = torch.minimum(w[b - a - ov :], (ov - 0.5 - torch.arange(ov, dtype=h.dtype, device=h.device)) / ov)
        out[:, a:b] += h * w[None, :, None]
        total_w[a:b] += w
    return out / total_w[None, :, None]
