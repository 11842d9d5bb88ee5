"""The one place where the pack meets ComfyUI's runtime.

Model folders (``models/aniportrait`` and its ``pose_templates`` sub-folder, both reachable through
``extra_model_paths.yaml``), core IMAGE <-> uint8 conversion, ModelPatchers and loading, progress bars
(which are also cancel points), latent previews, the note shown on a node, and how errors reach
the user. Nodes call these; ``aniportrait_lib`` never imports ComfyUI.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import numpy as np
import torch
from comfy_api.latest import io, ui

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths

from ..aniportrait_lib import imaging, weights

log = logging.getLogger("aniportrait")

MODEL_FOLDER = "aniportrait"
TEMPLATE_FOLDER = "aniportrait_pose_templates"
#: the largest video size any node accepts (the sampler's limit; stage 1 follows it)
MAX_SIZE = 2048
MIN_SIZE = 64


# ----------------------------------------------------------------------------- model folders


def register_folders() -> None:
    """Register ``models/aniportrait`` and ``models/aniportrait/pose_templates`` (idempotent)."""
    known = folder_paths.folder_names_and_paths
    if MODEL_FOLDER not in known:
        folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    if TEMPLATE_FOLDER not in known:
        folder_paths.add_model_folder_path(TEMPLATE_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER, "pose_templates"))


def list_model_files(*extensions: str) -> list[str]:
    register_folders()
    names = folder_paths.get_filename_list(MODEL_FOLDER)
    return [n for n in names if not extensions or n.lower().endswith(extensions)]


def list_template_files() -> list[str]:
    register_folders()
    return [n for n in folder_paths.get_filename_list(TEMPLATE_FOLDER) if n.lower().endswith(".npy")]


def model_folders() -> list[str]:
    register_folders()
    return list(folder_paths.get_folder_paths(MODEL_FOLDER))


def resolve_model_file(file_name: str, what: str) -> str:
    """Full path of ``file_name`` in the aniportrait folders; an error naming the folders otherwise."""
    register_folders()
    if not file_name:
        raise weights.CheckpointError(f"no {what} file selected. Put it in one of: {', '.join(model_folders())} and refresh the node list.")
    path = folder_paths.get_full_path(MODEL_FOLDER, file_name)
    return path if path is not None else str(weights.find_model_file(file_name, model_folders(), what))


def resolve_template_file(file_name: str) -> str:
    register_folders()
    path = folder_paths.get_full_path(TEMPLATE_FOLDER, file_name) if file_name else None
    if path is None:
        raise ValueError(f"pose template '{file_name}' was not found. Searched: {', '.join(folder_paths.get_folder_paths(TEMPLATE_FOLDER))}")
    return path


# ----------------------------------------------------------------------------- images


def image_batch_to_uint8(images: torch.Tensor, what: str) -> np.ndarray:
    """core IMAGE ``(N, H, W, C)`` float 0..1 -> uint8 ``(N, H, W, 3)`` (the pack's one image policy)."""
    return imaging.frames_to_uint8(images, what)


def uint8_to_image_batch(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> core IMAGE on ComfyUI's intermediate device."""
    return imaging.uint8_to_float(frames, mm.intermediate_device())


def image_batch_to_levels(images: torch.Tensor, what: str) -> np.ndarray:
    """core IMAGE -> float32 pixel levels (0..255 scale), unrounded: for steps that resample again."""
    return imaging.frames_to_levels(images, what)


def levels_to_image_batch(levels: np.ndarray) -> torch.Tensor:
    """float32 pixel levels (0..255 scale) -> core IMAGE, keeping a resampler's small overshoot."""
    return imaging.levels_to_float(levels, mm.intermediate_device())


def first_image_uint8(images: torch.Tensor, what: str) -> tuple[np.ndarray, str | None]:
    """The first image of a core IMAGE batch as uint8 ``(H, W, 3)``, and a note when more were given."""
    first, note = imaging.first_image(images, what)
    return imaging.frames_to_uint8(first, what)[0], note


# ----------------------------------------------------------------------------- models


def patcher_for(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Wrap a module (moved to the offload device) so ComfyUI's VRAM manager loads/offloads it."""
    module.to(mm.unet_offload_device())
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def load_for_inference(*patchers: comfy.model_patcher.ModelPatcher, memory_required: int = 0,
                       partial: bool = False) -> torch.device:
    """Move the models to the compute device (freeing others' VRAM as needed); return that device.

    ``partial``: the models are built from ``comfy.ops`` layers, so ComfyUI may load only part of them when VRAM is
    short (``--lowvram``) and stream the rest per layer; plain torch layers need a full load.
    """
    mm.load_models_gpu(list(patchers), memory_required=memory_required, force_full_load=not partial)
    return patchers[0].load_device


def sampler_loader(model: comfy.model_patcher.ModelPatcher, **sizes: Any) -> Callable[[int], torch.device]:
    """The pack sampler's ``load(activation_bytes)``: the pre-flight memory check for a run of ``sizes``
    (:func:`check_memory`'s ``sampler`` step), then ``model`` onto the compute device (partial loads allowed)."""

    def load(memory_required: int) -> torch.device:
        check_memory("sampler", models=(model,), dtype=model.model.manual_cast_dtype or model.model.get_dtype(), **sizes)
        return load_for_inference(model, memory_required=memory_required, partial=True)

    return load


def offload_device() -> torch.device:
    return mm.unet_offload_device()


def pick_weight_dtype(choice: torch.dtype | None) -> torch.dtype:
    """``choice``, or ComfyUI's for this device (fp16/bf16 on CUDA, fp32 on CPU) when None.

    Launch flags such as ``--fp8_e4m3fn-unet`` or ``--fp64-unet`` can make ComfyUI answer fp8/fp64,
    which plain torch layers cannot run; those fall back to fp16 (where supported) or fp32.
    """
    if choice is not None:
        return choice
    dtype = mm.unet_dtype(supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        dtype = torch.float16 if mm.should_use_fp16() else torch.float32
    return dtype


def to_output_device(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(mm.intermediate_device())


# ----------------------------------------------------------------------------- progress, cancel, previews

#: the library's one callback signature: ``progress(done, total, preview_latent=None)``
Progress = Callable[..., None]


def progress(total: int, with_previews: bool = False) -> Progress:
    """A library progress callback driving ComfyUI's progress bar; every call is also a cancel point.

    With ``with_previews`` a ``(1, 4, h, w)`` SD1.5 latent passed as the third argument is shown as
    the node's preview through core's latent previewer (when previews are on).
    """
    bar = comfy.utils.ProgressBar(total)
    previewer = _latent_previewer() if with_previews else None

    def update(done: int, total_now: int | None = None, preview_latent: torch.Tensor | None = None) -> None:
        mm.throw_exception_if_processing_interrupted()
        preview = None
        if previewer is not None and preview_latent is not None:
            preview = previewer.decode_latent_to_preview_image("JPEG", preview_latent)
        bar.update_absolute(done, total_now, preview)

    return update


def _latent_previewer():
    """Core's latent previewer for SD1.5 latents on the compute device (None when previews are off)."""
    try:
        import latent_preview
        from comfy import latent_formats

        return latent_preview.get_previewer(mm.get_torch_device(), latent_formats.SD15())
    except Exception:  # previews are a nicety; never fail work over them
        log.debug("AniPortrait: no latent previewer", exc_info=True)
        return None


# ----------------------------------------------------------------------------- what the user sees


def output(*values: Any, notes: list[str | None] | tuple = ()) -> io.NodeOutput:
    """``io.NodeOutput(*values)`` with the non-empty notes shown as the node's text and logged."""
    text = [n for n in notes if n]
    for line in text:
        log.info("AniPortrait: %s", line)
    return io.NodeOutput(*values, ui=ui.PreviewText("\n".join(text)) if text else None)


def user_errors(execute: Callable) -> Callable:
    """Decorator for ``execute``: errors meant for the user reach ComfyUI as a plain ``ValueError``.

    ComfyUI shows an exception's module path as its type; for the pack's own classes that is the
    install path (``custom_nodes.x.aniportrait_lib...NoFaceError``). The message is kept as is.
    """

    @functools.wraps(execute)
    def wrapper(*args, **kwargs):
        try:
            return execute(*args, **kwargs)
        except (ValueError, weights.CheckpointError) as exc:
            if type(exc) in (ValueError,):
                raise
            raise ValueError(str(exc)) from exc

    return wrapper


# ----------------------------------------------------------------------------- memory pre-flight, temp files, video


def free_ram_bytes() -> int | None:
    """Host memory available now (psutil), None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def free_vram_bytes() -> int | None:
    """Device memory a node can get on ComfyUI's compute device (free + what torch holds, which ComfyUI can
    free by offloading models); None on the CPU or when unknown."""
    dev = mm.get_torch_device()
    if getattr(dev, "type", "cpu") != "cuda":
        return None
    try:
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev))
    except Exception:
        return None


def check_memory(step: str, **sizes: Any) -> None:
    """Pre-flight: refuse at once (ValueError with the estimate and advice) when ``step`` will not fit."""
    from ..aniportrait_lib import preflight

    on_gpu = getattr(mm.get_torch_device(), "type", "cpu") == "cuda"
    need = preflight.estimate(step, on_gpu, **sizes)
    preflight.check(need.ram, free_ram_bytes(), need.what, need.advice, "RAM")
    if on_gpu and need.vram:
        preflight.check(need.vram, free_vram_bytes(), need.what, need.advice, "VRAM")


def temp_directory() -> str:
    path = folder_paths.get_temp_directory()
    os.makedirs(path, exist_ok=True)
    return path


def video_from_file(path: str):
    """A core VIDEO (``VideoFromFile``) reading ``path``."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(path)


def decode_bytes_per_frame(vae, latent_h: int, latent_w: int) -> int:
    """Core's estimate of one frame's decode intermediates for this VAE."""
    try:
        return int(vae.memory_used_decode((1, 4, latent_h, latent_w), vae.vae_dtype))
    except Exception:
        return 2178 * latent_h * latent_w * 64 * 4
