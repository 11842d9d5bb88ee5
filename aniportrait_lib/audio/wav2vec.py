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
