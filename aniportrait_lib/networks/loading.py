"""Configs and strict loaders for the four released Lmk2Video checkpoints.

Files (``.pth``/``.pt``/``.bin`` or ``.safetensors`` with the same keys, fp16 or fp32 tensors):

* ``reference_unet.pth`` -> :class:`~aniportrait_lib.networks.unet.ReferenceUNet` (SD1.5 UNet without
  ``conv_norm_out``/``conv_out``);
* ``denoising_unet.pth`` (every non-motion key of the denoiser) + ``motion_module.pth`` (every key under
  ``motion_modules``, incl. the ``pos_encoder.pe`` tables) -> :class:`~aniportrait_lib.networks.unet.VideoUNet`;
* ``pose_guider.pth`` -> :class:`~aniportrait_lib.networks.pose_guider.PoseGuider`.

Loading is strict (unlike the original, which loaded the denoiser with ``strict=False``): every key each file
should hold must be there with the right shape, nothing else may be, otherwise
:class:`~aniportrait_lib.weights.CheckpointError` names the file, its folder and the first offending keys.

Model sizes are inferred from the state dicts (channels, layers, cross-attention width, PE length, pose-guider
width); what cannot be inferred (attention head counts, GroupNorm group counts) comes from the SD1.5 / AniPortrait
defaults or from an explicit :class:`Lmk2VideoConfig`.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ..weights import CheckpointError, check_state_dict, expect_layout, file_label, read_state_dict
from .layers import LayerClasses, replace_layers
from .pose_guider import PoseGuider, build_pose_guider
from .config import inference_v2_motion_kwargs, sd15_unet_config
from .unet import ReferenceUNet, VideoUNet, build_reference_unet, build_video_unet, is_motion_key

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
StateDict = Mapping[str, torch.Tensor]

#: the released file names, by role
RELEASED_FILES = {
    "reference_unet": "reference_unet.pth",
    "denoising_unet": "denoising_unet.pth",
    "motion_module": "motion_module.pth",
    "pose_guider": "pose_guider.pth",
}


@dataclass
class PoseGuiderConfig:
    """PoseGuider sizes (the original hard-codes heads 16 x 88 and 32 GroupNorm groups for its transformer blocks)."""

    noise_latent_channels: int = 320
    attention_heads: int = 16
    attention_head_dim: int = 88
    norm_groups: int = 32


@dataclass
class Lmk2VideoConfig:
    """Model configs of the Lmk2Video stage.

    ``unet``: diffusers-style ``unet/config.json`` dict shared by both UNets (SD1.5 by default; note SD1.5's
    ``attention_head_dim`` is the number of heads). ``motion``: ``unet_additional_kwargs`` (inference_v2.yaml by
    default; ``motion_module_kwargs.norm_num_groups`` may set the temporal GroupNorm groups, 32 in the original).
    """

    unet: dict[str, Any] = field(default_factory=sd15_unet_config)
    motion: dict[str, Any] = field(default_factory=inference_v2_motion_kwargs)
    pose_guider: PoseGuiderConfig = field(default_factory=PoseGuiderConfig)


@dataclass
class Lmk2VideoModels:
    """The stage-2 model bundle: the three Lmk2Video networks, ready for inference (``requires_grad``
    off, eval mode), their configs and weight dtype.

    ``handles`` are the host's model-management handles for the three networks (in ComfyUI, their
    ModelPatchers), opaque to the library; empty when the library is used on its own.
    """

    reference_unet: ReferenceUNet
    video_unet: VideoUNet
    pose_guider: PoseGuider
    config: Lmk2VideoConfig
    dtype: torch.dtype = torch.float32
    handles: tuple = ()


# ----------------------------------------------------------------------------------------------------------------
# config inference
# ----------------------------------------------------------------------------------------------------------------
def _count(sd: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def infer_unet_config(state_dict: StateDict, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fill channel/layer sizes of a diffusers-style UNet config from a (reference or denoising) UNet state dict.

    Inferred: ``block_out_channels``, ``layers_per_block``, ``in_channels``, ``out_channels`` (when ``conv_out`` is
    present), ``cross_attention_dim``. Head and group counts come from ``base`` (default SD1.5). Returns ``base``
    unchanged where the keys needed are missing (the strict check then reports the real problem).
    """
    cfg = copy.deepcopy(dict(base) if base is not None else sd15_unet_config())
    try:
        n_blocks = _count(state_dict, r"down_blocks\.(\d+)\.")
        boc = [int(state_dict[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(n_blocks)]
        cfg["block_out_channels"] = boc
        cfg["layers_per_block"] = _count(state_dict, r"down_blocks\.0\.resnets\.(\d+)\.")
        cfg["in_channels"] = int(state_dict["conv_in.weight"].shape[1])
        if "conv_out.weight" in state_dict:
            cfg["out_channels"] = int(state_dict["conv_out.weight"].shape[0])
        k = next((k for k in state_dict if k.endswith("attn2.to_k.weight")), None)
        if k is not None:
            cfg["cross_attention_dim"] = int(state_dict[k].shape[1])
        if len(cfg.get("down_block_types", [])) != n_blocks:
            cfg["down_block_types"] = ["CrossAttnDownBlock2D"] * (n_blocks - 1) + ["DownBlock2D"]
            cfg["up_block_types"] = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n_blocks - 1)
        heads = cfg.get("attention_head_dim", 8)
        if isinstance(heads, (list, tuple)) and len(heads) != n_blocks:
            cfg["attention_head_dim"] = heads[0]
    except (KeyError, IndexError) as exc:
        log.debug("could not infer the UNet config from the state dict (%s); using the base config", exc)
    return cfg


def infer_motion_kwargs(motion_state_dict: StateDict, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``unet_additional_kwargs`` with the position-table length and blocks per module read from the keys."""
    cfg = copy.deepcopy(dict(base) if base is not None else inference_v2_motion_kwargs())
    mk = cfg.setdefault("motion_module_kwargs", {})
    pe = next((v for k, v in motion_state_dict.items() if k.endswith("pos_encoder.pe")), None)
    if pe is not None and pe.ndim == 3:
        mk["temporal_position_encoding"] = True
        mk["temporal_position_encoding_max_len"] = int(pe.shape[1])
    n = _count(motion_state_dict, r".*motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\.")
    if n:
        mk["num_transformer_block"] = n
    return cfg


def infer_pose_guider_config(state_dict: StateDict, base: PoseGuiderConfig | None = None) -> PoseGuiderConfig:
    """PoseGuider width from ``final_proj``; the attention width is split with ``base``'s head count."""
    cfg = copy.copy(base) if base is not None else PoseGuiderConfig()
    if "final_proj.weight" in state_dict:
        cfg.noise_latent_channels = int(state_dict["final_proj.weight"].shape[0])
    w = state_dict.get("cross_attn1.proj_in.weight")
    if w is not None:
        inner = int(w.shape[0])
        if inner % cfg.attention_heads == 0:
            cfg.attention_head_dim = inner // cfg.attention_heads
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------
def _read(source: PathLike | StateDict) -> tuple[dict[str, torch.Tensor], PathLike | None]:
    if isinstance(source, Mapping):
        return dict(source), None
    return read_state_dict(source), source


def _assign(module: nn.Module, state_dict: dict[str, torch.Tensor], device: torch.device | str) -> nn.Module:
    """Load a checked state dict into a module built on ``meta`` (cast to its dtypes), then move it to ``device``.

    Tensors are converted one by one and dropped from ``state_dict`` to keep peak host memory low.
    """
    expected = module.state_dict()
    converted = {}
    for key in list(state_dict):
        converted[key] = state_dict.pop(key).to(dtype=expected[key].dtype)
    module.load_state_dict(converted, strict=True, assign=True)
    del converted
    module = module.to(device=device)
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - structural invariant
        raise RuntimeError(f"tensors left uninitialised after loading: {left[:5]}")
    return module.eval().requires_grad_(False)


def _with_layers(model: nn.Module, layer_classes: LayerClasses | None) -> nn.Module:
    return replace_layers(model, layer_classes) if layer_classes else model


def load_reference_unet(source: PathLike | StateDict, config: Mapping[str, Any] | None = None,
                        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        layer_classes: LayerClasses | None = None) -> ReferenceUNet:
    """Load ``reference_unet.pth`` (path or state dict). ``config`` None = inferred from the keys (SD1.5 heads/groups).

    ``layer_classes``: a host's layer types to build the network from (:func:`~.layers.replace_layers`)."""
    sd, path = _read(source)
    expect_layout(sd, "reference_unet", file_label(path, "reference UNet state dict"))
    cfg = dict(config) if config is not None else infer_unet_config(sd)
    model = _with_layers(build_reference_unet(cfg, device="meta", dtype=dtype), layer_classes)
    check_state_dict(model.state_dict(), sd, file_label(path, "reference UNet state dict"), "reference UNet")
    return _assign(model, sd, device)


def load_video_unet(denoising: PathLike | StateDict, motion: PathLike | StateDict,
                    config: Mapping[str, Any] | None = None, motion_kwargs: Mapping[str, Any] | None = None,
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    layer_classes: LayerClasses | None = None) -> VideoUNet:
    """Load the denoiser from ``denoising_unet.pth`` (all non-motion keys) + ``motion_module.pth`` (all motion keys).

    Each file is checked strictly against its own part of the model, so a mistake names the right file (e.g.
    motion-module keys inside ``denoising_unet.pth`` are reported as unexpected there).
    """
    den_sd, den_path = _read(denoising)
    mm_sd, mm_path = _read(motion)
    expect_layout(den_sd, "denoising_unet", file_label(den_path, "denoising UNet state dict"))
    expect_layout(mm_sd, "motion_module", file_label(mm_path, "motion module state dict"))
    cfg = dict(config) if config is not None else infer_unet_config(den_sd)
    mkw = dict(motion_kwargs) if motion_kwargs is not None else infer_motion_kwargs(mm_sd)
    model = _with_layers(build_video_unet(cfg, mkw, device="meta", dtype=dtype), layer_classes)
    expected = model.state_dict()
    check_state_dict({k: v for k, v in expected.items() if not is_motion_key(k)}, den_sd,
                     file_label(den_path, "denoising UNet state dict"), "denoising UNet (without motion modules)")
    check_state_dict({k: v for k, v in expected.items() if is_motion_key(k)}, mm_sd,
                     file_label(mm_path, "motion module state dict"), "motion module")
    den_sd.update(mm_sd)
    mm_sd.clear()
    return _assign(model, den_sd, device)


def load_pose_guider(source: PathLike | StateDict, config: PoseGuiderConfig | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     batch_norm_mode: str = "batch_stats", layer_classes: LayerClasses | None = None) -> PoseGuider:
    """Load ``pose_guider.pth``. ``config`` None = width inferred, heads 16 / groups 32 (the original's)."""
    sd, path = _read(source)
    expect_layout(sd, "pose_guider", file_label(path, "pose guider state dict"))
    cfg = config if config is not None else infer_pose_guider_config(sd)
    model = _with_layers(build_pose_guider(cfg.noise_latent_channels, cfg.attention_heads, cfg.attention_head_dim,
                                           cfg.norm_groups, batch_norm_mode, device="meta", dtype=dtype), layer_classes)
    check_state_dict(model.state_dict(), sd, file_label(path, "pose guider state dict"), "pose guider")
    return _assign(model, sd, device)


def load_lmk2video_models(paths: Mapping[str, PathLike | StateDict], config: Lmk2VideoConfig | None = None,
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                          layer_classes: LayerClasses | None = None) -> Lmk2VideoModels:
    """Load all Lmk2Video networks.

    Args:
        paths: ``{"reference_unet", "denoising_unet", "motion_module", "pose_guider"}`` -> file path (``.pth``,
            ``.pt``, ``.safetensors``) or an already-read state dict.
        config: explicit configs; None = infer sizes from the files (SD1.5 / AniPortrait head and group counts).
        device, dtype: where and in which float dtype the models live (the release ran fp16 on CUDA).
        layer_classes: a host's layer types (e.g. ComfyUI's ``comfy.ops`` classes, so its memory manager can
            cast and offload the networks layer by layer); None = plain ``torch.nn`` layers.
    """
    missing = [k for k in RELEASED_FILES if k not in paths]
    if missing:
        raise CheckpointError(
            "missing Lmk2Video checkpoint(s): " + ", ".join(f"{k} ({RELEASED_FILES[k]})" for k in missing)
        )
    explicit = config is not None
    cfg = copy.deepcopy(config) if explicit else Lmk2VideoConfig()
    reference = load_reference_unet(paths["reference_unet"], cfg.unet if explicit else None, device, dtype,
                                    layer_classes=layer_classes)
    if not explicit:
        # the denoiser shares the reference UNet's architecture: reuse its (inferred) config
        cfg.unet = infer_unet_config(reference.state_dict(), cfg.unet)
    video = load_video_unet(paths["denoising_unet"], paths["motion_module"], cfg.unet,
                            cfg.motion if explicit else None, device, dtype, layer_classes=layer_classes)
    pose = load_pose_guider(paths["pose_guider"], cfg.pose_guider if explicit else None, device, dtype,
                            layer_classes=layer_classes)
    if not explicit:
        cfg.pose_guider = PoseGuiderConfig(pose.final_proj.out_channels, pose.cross_attn1.transformer_blocks[0].attn1.heads,
                                           pose.cross_attn1.proj_in.out_channels
                                           // pose.cross_attn1.transformer_blocks[0].attn1.heads)
    c = pose.final_proj.out_channels
    # pose features are added after conv_in and after each down block: widths C, C, 2C, 4C, 4C
    boc = list(video.settings.block_out_channels)
    if [boc[0], *boc] != [c, c, 2 * c, 4 * c, 4 * c][: len(boc) + 1]:
        raise CheckpointError(
            f"the pose guider's feature widths ({c}, {c}, {2 * c}, {4 * c}, {4 * c}) do not match the denoising "
            f"UNet's block widths {boc}: the pose guider and UNet checkpoints do not belong together"
        )
    return Lmk2VideoModels(reference, video, pose, cfg, dtype)
