"""Adapter between aniportrait_lib modules and ComfyUI model management (the only place that does it)."""
from __future__ import annotations

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils


def patcher_for(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Wrap a module (built on the offload device) so ComfyUI's VRAM manager loads/offloads it."""
    module.to(mm.unet_offload_device())
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def load_for_inference(*patchers: comfy.model_patcher.ModelPatcher, memory_required: int = 0) -> torch.device:
    """Move the models to the compute device (freeing others' VRAM as needed); return that device."""
    # force_full_load: our modules are plain torch layers, not comfy.ops ones that can run partially offloaded
    mm.load_models_gpu(list(patchers), memory_required=memory_required, force_full_load=True)
    return patchers[0].load_device


def progress(total: int, node_id=None):
    """A callback ``(done, total)`` driving ComfyUI's progress bar; every update is also a cancel point."""
    bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def update(done: int, total_now: int | None = None, preview=None) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total_now, preview)

    return update
