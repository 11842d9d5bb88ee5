"""Audio2Mesh and Audio2Pose with the released checkpoints' exact key layout.

* Audio2Mesh: wav2vec2 (frame-rate) -> Linear(768, 512) -> Linear(512, 1404): per-frame vertex
  displacements of the 468-point face mesh (cm).
* Audio2Pose: wav2vec2 -> Linear(768, 512) as memory; an 8-layer post-LN transformer decoder over the
  previous poses with an ALiBi-biased causal self-attention and a cross-attention that lets pose
  step i see only audio frame i; a speaking-style embedding; Linear(512, 6) output (euler degrees +
  translation). The original recomputes the whole prefix for every frame; :meth:`Audio2Pose.generate`
  decodes incrementally with a key/value cache (same maths, O(T) work per frame instead of O(T^2)).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import weights
from ..networks.positional import sinusoidal_table
from . import wav2vec

log = logging.getLogger(__name__)

#: number of speaking-style ids of the released Audio2Pose
NUM_STYLE_IDS = 100
#: positional-encoding length: the longest chunk Audio2Pose can decode in one go (frames)
MAX_POSE_FRAMES = 600


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes (1/2 ... 1/256 for 8 heads), FaceFormer's construction for any head count."""
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return torch.tensor(power_of_two(num_heads))
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = alibi_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.cat([torch.tensor(power_of_two(closest)), extra])


class _PositionalTable(nn.Module):
    """Holds the ``pe`` buffer under the release name ``PPE.pe``."""

    def __init__(self, dim: int, length: int = MAX_POSE_FRAMES):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(length, dim))


@dataclass
class Audio2MeshConfig:
    wav2vec: dict
    latent_dim: int = 512
    out_dim: int = 1404


@dataclass
class Audio2PoseConfig:
    wav2vec: dict
    latent_dim: int = 512
    out_dim: int = 6
    num_layers: int = 8
    num_heads: int = 8
    num_ids: int = NUM_STYLE_IDS
    max_frames: int = MAX_POSE_FRAMES


class Audio2Mesh(nn.Module):
    """Audio -> per-frame mesh displacements. Keys: ``audio_encoder.*``, ``in_fn``, ``out_fn``."""

    def __init__(self, config: Audio2MeshConfig):
        super().__init__()
        self.config = config
        self.audio_encoder = wav2vec.build_encoder(wav2vec.make_config(config.wav2vec))
        hidden = self.audio_encoder.config.hidden_size
        self.in_fn = nn.Linear(hidden, config.latent_dim)
        self.out_fn = nn.Linear(config.latent_dim, config.out_dim)

    def forward(self, input_values: torch.Tensor, num_frames: int, window: tuple[int, int] | None = None, on_window=None) -> torch.Tensor:
        """``(B, N)`` normalised 16 kHz samples -> ``(B, T, out_dim)`` displacements (cm, flattened 468x3).

        ``window=(frames, overlap)``: encode in overlapping, cross-faded windows of that many frames
        (:func:`wav2vec.encode_windowed`, bounded memory); ``None``: the original whole-clip pass.
        """
        if window is None:
            hidden = wav2vec.encode_at_frame_rate(self.audio_encoder, input_values, num_frames)
        else:
            hidden = wav2vec.encode_windowed(self.audio_encoder, input_values, num_frames, window[0], window[1], on_window)
        return self.out_fn(self.in_fn(hidden))


@dataclass
class _DecodeState:
    """What the KV-cached Audio2Pose decoder keeps between frames.

    ``k_cache``/``v_cache``: ``(layers, B, heads, T, head_dim)`` self-attention keys/values so far;
    ``cross``: per layer ``(B, T, d)`` cross-attention outputs (pose step i attends to audio frame i only,
    so its cross-attention does not depend on the query: ``out_proj(W_v m_i + b_v)``, precomputed);
    ``slopes`` ``(1, heads, 1)`` ALiBi slopes (bias of query i over key j <= i is ``-slope * (i - j)``),
    ``distance`` ``(T,)`` frame indices.
    """

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    cross: list
    slopes: torch.Tensor
    distance: torch.Tensor

    @classmethod
    def empty(cls, model: "Audio2Pose", memory: torch.Tensor, num_frames: int) -> "_DecodeState":
        bsz, _, d = memory.shape
        layers = list(model.transformer_decoder.layers)
        heads = model.config.num_heads
        cross = []
        for layer in layers:
            mha = layer.multihead_attn
            cross.append(mha.out_proj(F.linear(memory, mha.in_proj_weight[2 * d :], mha.in_proj_bias[2 * d :])))
        k_cache = memory.new_zeros(len(layers), bsz, heads, num_frames, d // heads)
        slopes = alibi_slopes(heads).to(memory.device, memory.dtype).view(1, heads, 1)
        distance = torch.arange(num_frames, device=memory.device, dtype=memory.dtype)
        return cls(k_cache, torch.zeros_like(k_cache), cross, slopes, distance)


class Audio2Pose(nn.Module):
    """Audio -> head pose sequence, autoregressive. Keys as the release (``PPE.pe``, ``transformer_decoder.layers.N``...)."""

    def __init__(self, config: Audio2PoseConfig):
        super().__init__()
        self.config = config
        d = config.latent_dim
        self.audio_encoder = wav2vec.build_encoder(wav2vec.make_config(config.wav2vec))
        hidden = self.audio_encoder.config.hidden_size
        self.pose_map = nn.Linear(config.out_dim, d)
        self.in_fn = nn.Linear(hidden, d)
        self.PPE = _PositionalTable(d, config.max_frames)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=config.num_heads, dim_feedforward=2 * d, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=config.num_layers)
        self.pose_map_r = nn.Linear(d, config.out_dim)
        self.id_embed = nn.Embedding(config.num_ids, d)

    def encode_audio(self, input_values: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``(B, N)`` samples -> decoder memory ``(B, T, latent)``."""
        return self.in_fn(wav2vec.encode_at_frame_rate(self.audio_encoder, input_values, num_frames))

    def generate(
        self,
        input_values: torch.Tensor,
        num_frames: int,
        style_id: int | torch.Tensor,
        on_frame: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Decode ``num_frames`` poses, one frame at a time with a key/value cache.

        Equivalent to the original's ``infer`` (full recompute per frame; the last pass's output).
        Args:
            input_values: ``(B, N)`` normalised 16 kHz samples of this chunk.
            num_frames: poses to produce (<= ``max_frames``).
            style_id: speaking-style id in ``[0, num_ids)`` (int or ``(B,)`` long tensor).
            on_frame: called with the number of frames decoded so far (progress; may raise to cancel).
        Returns:
            ``(B, T, 6)`` raw poses: euler xyz (degrees) + translation.
        """
        cfg = self.config
        if not 1 <= num_frames <= cfg.max_frames:
            raise ValueError(f"Audio2Pose decodes 1..{cfg.max_frames} frames per chunk, got {num_frames}")
        memory = self.encode_audio(input_values, num_frames)  # (B, T, d)
        bsz, _, d = memory.shape
        style = self._style_embedding(style_id, bsz, memory.device)  # (B, d)
        pe = self.PPE.pe[0, :num_frames].to(memory.dtype)  # (T, d)
        state = _DecodeState.empty(self, memory, num_frames)
        token = self.pose_map(memory.new_zeros(bsz, cfg.out_dim)) + pe[0] + style  # (B, d)
        outputs = []
        for i in range(num_frames):
            pose = self.pose_map_r(self._decode_step(token, i, state))  # (B, 6)
            outputs.append(pose)
            if on_frame is not None:
                on_frame(i + 1)
            if i + 1 < num_frames:
                token = self.pose_map(pose) + pe[i + 1] + style
        return torch.stack(outputs, dim=1)

    def generate_batched(
        self,
        memory: torch.Tensor,
        lengths: list[int],
        style_id: int | torch.Tensor,
        on_step: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Decode several independent sequences (e.g. the 5 s chunks of a clip) as one batch.

        The same maths as :meth:`generate` per sequence (the sequences never see each other), so the
        decode runs ``max(lengths)`` steps whatever the number of sequences. Sequence ``b`` uses
        ``memory[b, :lengths[b]]``; once a sequence is complete it leaves the batch (sequences are
        processed longest first), so padding costs nothing.
        Args:
            memory: ``(B, T_max, d)`` decoder memory (:meth:`encode_audio` of each sequence, zero-padded).
            lengths: frames of each sequence, each in ``1..max_frames``.
            style_id: speaking-style id (int or ``(B,)`` long tensor).
            on_step: called with the number of frames decoded so far over all sequences.
        Returns:
            ``(B, T_max, 6)`` raw poses; rows past a sequence's length are zero.
        """
        cfg = self.config
        bsz, t_max, _ = memory.shape
        if len(lengths) != bsz or not all(1 <= n <= cfg.max_frames for n in lengths) or max(lengths) != t_max:
            raise ValueError(f"Audio2Pose decodes 1..{cfg.max_frames} frames per sequence; got lengths {lengths} for memory {tuple(memory.shape)}")
        order = sorted(range(bsz), key=lambda b: -lengths[b])
        inverse = [0] * bsz
        for pos, b in enumerate(order):
            inverse[b] = pos
        lens = [lengths[b] for b in order]
        memory = memory[order]
        style = self._style_embedding(style_id, bsz, memory.device)
        if style.shape[0] == bsz and torch.is_tensor(style_id) and style_id.numel() == bsz:
            style = style[order]
        pe = self.PPE.pe[0, :t_max].to(memory.dtype)
        state = _DecodeState.empty(self, memory, t_max)
        out = memory.new_zeros(bsz, t_max, cfg.out_dim)
        token = self.pose_map(memory.new_zeros(bsz, cfg.out_dim)) + pe[0] + style
        done = 0
        for i in range(t_max):
            n = sum(1 for length in lens if length > i)  # lens is non-increasing: the first n still decode
            pose = self.pose_map_r(self._decode_step(token[:n], i, state))  # (n, 6)
            out[:n, i] = pose
            done += n
            if on_step is not None:
                on_step(done)
            if i + 1 < t_max:
                token = self.pose_map(pose) + pe[i + 1] + style[:n]
        return out[inverse]

    def _style_embedding(self, style_id: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        ids = torch.as_tensor(style_id, device=device, dtype=torch.long).reshape(-1).expand(batch)
        if ((ids < 0) | (ids >= self.config.num_ids)).any():
            raise ValueError(f"style id must be in 0..{self.config.num_ids - 1}, got {ids.tolist()}")
        return self.id_embed(ids)

    def _decode_step(self, x: torch.Tensor, i: int, state: "_DecodeState") -> torch.Tensor:
        """Frame ``i`` through every decoder layer (post-norm, as ``nn.TransformerDecoderLayer``): ``(B, d)``.

        ``x`` may hold only the first ``B <= state batch`` rows (the sequences still decoding).
        """
        bsz, d = x.shape
        heads, head_dim = state.k_cache.shape[2], state.k_cache.shape[4]
        bias = -state.slopes * (i - state.distance[: i + 1]).view(1, 1, -1)  # (1, H, i+1)
        for li, layer in enumerate(self.transformer_decoder.layers):
            sa = layer.self_attn
            q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).view(bsz, 3, heads, head_dim).unbind(1)
            state.k_cache[li, :bsz, :, i] = k
            state.v_cache[li, :bsz, :, i] = v
            keys = state.k_cache[li, :bsz, :, : i + 1]  # (B, H, i+1, hd)
            scores = torch.einsum("bhd,bhjd->bhj", q * (1.0 / math.sqrt(head_dim)), keys) + bias
            attn = torch.softmax(scores, dim=-1)
            ctx = torch.einsum("bhj,bhjd->bhd", attn, state.v_cache[li, :bsz, :, : i + 1]).reshape(bsz, d)
            x = layer.norm1(x + sa.out_proj(ctx))
            x = layer.norm2(x + state.cross[li][:bsz, i])
            x = layer.norm3(x + layer.linear2(F.relu(layer.linear1(x))))
        return x

    def generate_full_recompute(self, input_values: torch.Tensor, num_frames: int, style_id: int) -> torch.Tensor:
        """The original algorithm: one full ``nn.TransformerDecoder`` pass over the whole prefix per frame.

        O(T^2) work; kept as the reference :meth:`generate` is tested and benchmarked against.
        Returns ``(1, T, 6)``.
        """
        memory = self.encode_audio(input_values, num_frames)
        style = self.id_embed(torch.tensor([style_id], device=memory.device)).unsqueeze(1)
        slopes = alibi_slopes(self.config.num_heads).to(memory.device)
        i, j = torch.meshgrid(torch.arange(num_frames), torch.arange(num_frames), indexing="ij")
        causal = j <= i
        tgt_bias = (slopes.view(-1, 1, 1) * torch.where(causal, -(i - j).float(), torch.zeros(()))
                    + torch.where(causal, 0.0, float("-inf"))).to(memory.device)
        emb = self.pose_map(memory.new_zeros(1, 1, self.config.out_dim))
        for _ in range(num_frames):
            inp = emb + self.PPE.pe[:, : emb.shape[1]] + style
            n = inp.shape[1]
            memory_mask = torch.ones(n, num_frames, dtype=torch.bool, device=memory.device)
            memory_mask[torch.arange(n), torch.arange(n)] = False  # pose step k sees audio frame k only
            out = self.pose_map_r(self.transformer_decoder(inp, memory, tgt_mask=tgt_bias[:, :n, :n], memory_mask=memory_mask))
            emb = torch.cat([emb, self.pose_map(out[:, -1:])], 1)
        return out

def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    n = 0
    while pattern.format(n) in sd:
        n += 1
    return n


def audio2mesh_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> Audio2MeshConfig:
    """Infer the Audio2Mesh sizes from a release-layout state dict (falls back to the release sizes)."""
    cfg = Audio2MeshConfig(wav2vec=wav2vec.config_from_state_dict(sd))
    if "in_fn.weight" in sd:
        cfg.latent_dim = sd["in_fn.weight"].shape[0]
    return cfg


def audio2pose_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> Audio2PoseConfig:
    """Infer the Audio2Pose sizes from a release-layout state dict (heads stay 8: the original hard-codes it)."""
    cfg = Audio2PoseConfig(wav2vec=wav2vec.config_from_state_dict(sd))
    if "in_fn.weight" in sd:
        cfg.latent_dim = sd["in_fn.weight"].shape[0]
    layers = _count(sd, "transformer_decoder.layers.{}.norm1.weight")
    if layers:
        cfg.num_layers = layers
    if "id_embed.weight" in sd:
        cfg.num_ids = sd["id_embed.weight"].shape[0]
    if "PPE.pe" in sd:
        cfg.max_frames = sd["PPE.pe"].shape[1]
    return cfg


def release_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the release key layout (``weight_g``/``weight_v``)."""
    return wav2vec.to_release_keys(model.state_dict())


def build_audio2mesh(config: Audio2MeshConfig, device: torch.device | str = "cpu") -> Audio2Mesh:
    with torch.device(device):
        return Audio2Mesh(config).eval()


def build_audio2pose(config: Audio2PoseConfig, device: torch.device | str = "cpu") -> Audio2Pose:
    with torch.device(device):
        return Audio2Pose(config).eval()


def _load(builder, config_fn, sd: Mapping[str, torch.Tensor], path, what: str, layout: str) -> nn.Module:
    weights.expect_layout(sd, layout, weights.file_label(path))
    try:
        model = builder(config_fn(sd), device="meta")
    except Exception as exc:  # nonsense shapes in a wrong file make the constructor fail
        log.warning("%s: building %s failed: %s", weights.file_label(path), what, exc)
        raise weights.CheckpointError(
            f"{weights.file_label(path)} does not look like an {what} checkpoint: pick the released file."
        ) from None
    expected = release_state_dict(model)
    weights.check_state_dict(expected, sd, weights.file_label(path), what)
    module_sd = wav2vec.to_module_keys(sd, set(model.state_dict()))
    model.load_state_dict({k: v.float() for k, v in module_sd.items()}, strict=True, assign=True)
    return model.float().eval()


def load_audio2mesh(sd: Mapping[str, torch.Tensor], path: str | Path | None = None) -> Audio2Mesh:
    """Build an Audio2Mesh from a release-layout state dict (fp16 or fp32 tensors), strictly."""
    return _load(build_audio2mesh, audio2mesh_config_from_state_dict, sd, path, "Audio2Mesh (audio2mesh.pt)", "audio2mesh")


def load_audio2pose(sd: Mapping[str, torch.Tensor], path: str | Path | None = None) -> Audio2Pose:
    """Build an Audio2Pose from a release-layout state dict (fp16 or fp32 tensors), strictly."""
    return _load(build_audio2pose, audio2pose_config_from_state_dict, sd, path, "Audio2Pose (audio2pose.pt)", "audio2pose")
