"""Random-initialised models saved in the exact release key layout, for tests, demos and benchmarks.

Real AniPortrait weights are large downloads; these let the real loading code run end to end (with
meaningless outputs). ``full_size=True`` gives the released architecture with random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .audio import models

#: a small wav2vec2 (same layer types as wav2vec2-base, fewer/narrower layers)
TINY_WAV2VEC = {
    "conv_dim": [32] * 7,
    "hidden_size": 64,
    "num_attention_heads": 1,
    "num_hidden_layers": 1,
    "intermediate_size": 64,
    "num_conv_pos_embeddings": 4,
    "num_conv_pos_embedding_groups": 4,
}


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def audio2mesh_state_dict(seed: int = 0, full_size: bool = False) -> dict[str, torch.Tensor]:
    cfg = models.Audio2MeshConfig(wav2vec={} if full_size else dict(TINY_WAV2VEC), latent_dim=512 if full_size else 32)
    model = models.build_audio2mesh(cfg)
    _randomize(model, seed)
    with torch.no_grad():  # keep displacements small (cm) so landmarks stay on the face
        model.out_fn.weight.mul_(0.1)
    return models.release_state_dict(model)


def audio2pose_state_dict(seed: int = 1, full_size: bool = False) -> dict[str, torch.Tensor]:
    cfg = models.Audio2PoseConfig(wav2vec={} if full_size else dict(TINY_WAV2VEC), latent_dim=512 if full_size else 32)
    model = models.build_audio2pose(cfg)
    _randomize(model, seed)
    sd = models.release_state_dict(model)
    sd["PPE.pe"] = models.sinusoidal_table(cfg.max_frames, cfg.latent_dim)
    return sd


def save_audio_models(folder: str | Path, seed: int = 0, full_size: bool = False) -> tuple[Path, Path]:
    """Write ``audio2mesh.pt`` and ``audio2pose.pt`` (release layout) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mesh, pose = folder / "audio2mesh.pt", folder / "audio2pose.pt"
    torch.save(audio2mesh_state_dict(seed, full_size), mesh)
    torch.save(audio2pose_state_dict(seed + 1, full_size), pose)
    return mesh, pose
