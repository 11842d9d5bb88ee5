"""Random-initialised models saved in the exact release key layout, for tests, demos and benchmarks.

Real AniPortrait weights are large downloads; these let the real loading code run end to end (with
meaningless outputs). ``full_size=True`` gives the released architecture with random weights.
"""
from __future__ import annotations

from pathlib import Path

import torch

from aniportrait_lib.networks.positional import sinusoidal_table


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
    from aniportrait_lib.audio import models

    cfg = models.Audio2MeshConfig(wav2vec={} if full_size else dict(TINY_WAV2VEC), latent_dim=512 if full_size else 32)
    model = models.build_audio2mesh(cfg)
    _randomize(model, seed)
    with torch.no_grad():  # keep displacements small (cm) so landmarks stay on the face
        model.out_fn.weight.mul_(0.1)
    return models.release_state_dict(model)


def audio2pose_state_dict(seed: int = 1, full_size: bool = False) -> dict[str, torch.Tensor]:
    from aniportrait_lib.audio import models

    cfg = models.Audio2PoseConfig(wav2vec={} if full_size else dict(TINY_WAV2VEC), latent_dim=512 if full_size else 32)
    model = models.build_audio2pose(cfg)
    _randomize(model, seed)
    sd = models.release_state_dict(model)
    sd["PPE.pe"] = sinusoidal_table(cfg.max_frames, cfg.latent_dim)
    return sd


def save_audio_models(folder: str | Path, seed: int = 0, full_size: bool = False) -> tuple[Path, Path]:
    """Write ``audio2mesh.pt`` and ``audio2pose.pt`` (release layout) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mesh, pose = folder / "audio2mesh.pt", folder / "audio2pose.pt"
    torch.save(audio2mesh_state_dict(seed, full_size), mesh)
    torch.save(audio2pose_state_dict(seed + 1, full_size), pose)
    return mesh, pose


# ------------------------------------------------------------------------------------------------ stage 2
#: a small Lmk2Video UNet that the loaders' inference rules recover from the files alone (SD1.5 head and
#: group counts, 768-d CLIP context so it works with a real sd-image-variations encoder)
SMALL_UNET = {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 1, "cross_attention_dim": 768}
SMALL_POSE_GUIDER = {"noise_latent_channels": 32, "attention_heads": 16, "attention_head_dim": 2}


def _random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, dtype=torch.float32, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """Random tensors for a state-dict shape table (norm weights 1, norm biases 0, int buffers kept at 0)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.zeros(shape, dtype=torch.int64)
        elif k.endswith("running_var"):
            out[k] = torch.ones(shape, dtype=dtype)
        elif k.endswith("running_mean"):
            out[k] = torch.zeros(shape, dtype=dtype)
        elif "norm" in k and k.endswith(".weight") and len(shape) == 1:
            out[k] = torch.ones(shape, dtype=dtype)
        elif "norm" in k and k.endswith(".bias"):
            out[k] = torch.zeros(shape, dtype=dtype)
        else:
            out[k] = (torch.randn(shape, generator=gen) * scale).to(dtype)
    return out


def lmk2video_state_dicts(seed: int = 0, full_size: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """``{reference_unet, denoising_unet, motion_module, pose_guider}`` state dicts in the release layout."""
    from aniportrait_lib.networks import config, pose_guider, unet

    cfg = config.sd15_unet_config()
    pg = {"noise_latent_channels": 320} if full_size else dict(SMALL_POSE_GUIDER)
    if not full_size:
        cfg.update(SMALL_UNET)
    ref = unet.build_reference_unet(cfg, device="meta")
    vid = unet.build_video_unet(cfg, device="meta")
    guide = pose_guider.build_pose_guider(**pg, device="meta")
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    ref_sd = _random_state_dict(shapes(ref), seed)
    vid_sd = _random_state_dict(shapes(vid), seed + 1)
    for k, v in vid_sd.items():  # motion-module position tables are fixed sinusoids, not weights
        if k.endswith("pos_encoder.pe"):
            vid_sd[k] = sinusoidal_table(v.shape[1], v.shape[2])
    pg_sd = _random_state_dict(shapes(guide), seed + 2)
    pg_sd["scale"] = torch.ones(1)
    return {
        "reference_unet": ref_sd,
        "denoising_unet": {k: v for k, v in vid_sd.items() if not unet.is_motion_key(k)},
        "motion_module": {k: v for k, v in vid_sd.items() if unet.is_motion_key(k)},
        "pose_guider": pg_sd,
    }


def save_lmk2video_models(folder: str | Path, seed: int = 0, full_size: bool = False) -> dict[str, Path]:
    """Write the four stage-2 files under their released names into ``folder``."""
    from aniportrait_lib.networks.loading import RELEASED_FILES

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, sd in lmk2video_state_dicts(seed, full_size).items():
        out[role] = folder / RELEASED_FILES[role]
        torch.save(sd, out[role])
    return out


def save_sd_vae(path: str | Path, seed: int = 0) -> Path:
    """A random SD1.5-architecture VAE (diffusers layout, fp16 safetensors) that ComfyUI's VAELoader accepts."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    with torch.device("meta"):
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    sd = _random_state_dict({k: tuple(v.shape) for k, v in vae.state_dict().items()}, seed, torch.float16)
    save_file(sd, str(path))
    return Path(path)


def save_clip_vision_vitl(path: str | Path, seed: int = 0) -> Path:
    """A random CLIP ViT-L/14 vision tower with projection (HF layout, fp16) that ComfyUI's CLIPVisionLoader accepts."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768)
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if "position_ids" not in k}
    sd = _random_state_dict(shapes, seed, torch.float16)
    save_file(sd, str(path))
    return Path(path)
