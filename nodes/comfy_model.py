"""AniPortrait's Lmk2Video networks as a core ComfyUI ``MODEL`` (the native path beside the pack's own sampler).

What core sees: a ``comfy.model_base.BaseModel`` with SD1.5's latent format and the original's noise
schedule (diffusers "linear" betas 0.00085..0.012 = core's ``sqrt_linear``, v-prediction, zero terminal SNR),
inside a ``ModelPatcher``. Its ``diffusion_model`` holds the ReferenceNet, the video UNet with motion modules
and the PoseGuider, built from ``comfy.ops`` layers so that ComfyUI casts and offloads them layer by layer
(low-VRAM modes, partial loading) and loads/offloads all three together.

The conditioning (built by the pack's conditioning node) carries, besides the CLIP image embedding as
cross-attention context:

* ``aniportrait_reference_latent``: raw VAE latent of the reference photo (1, 4, h, w);
* ``aniportrait_use_reference``: 1.0 on the positive, 0.0 on the negative (the original's unconditional
  branch runs without reference tokens);
* ``aniportrait_poses``: the clip's pose frames as one ``PoseFrames`` object shared by positive and negative
  (a constant cond: nothing of the size of the video is copied per call).

Latents are video-shaped, (1, 4, frames, h, w) like core's other video models, so core's Context Windows
node runs with ``dim = 2`` (0.3.64's window handler fails on frames laid out as a batch). The handler exposes
the current window as ``transformer_options["context_window"]``; the model picks that window's pose frames
itself, and tells newer cores (``resize_cond_for_context_window``) not to slice its conds. This works whether
or not a core version slices model conds (0.3.64 never slices them; see the README's version notes).

The model evaluation itself (:class:`~aniportrait_lib.sampling.evaluation.Lmk2VideoModel`) is ComfyUI-free and the
same one the pack's own sampler calls; this module only translates ComfyUI's calling convention and conditioning.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.supported_models_base

from ..aniportrait_lib.sampling import compiling, context_windows, sampler

from ..aniportrait_lib.networks import loading
from ..aniportrait_lib.sampling.evaluation import Lmk2VideoModel, ModelCall


REFERENCE_LATENT = "aniportrait_reference_latent"
USE_REFERENCE = "aniportrait_use_reference"
POSES = "aniportrait_poses"
CACHE_WRAPPER_KEY = "aniportrait_reference_cache"
COMPILE_WRAPPER_KEY = "aniportrait_compile"
LATENT_ERROR = ("the AniPortrait model samples video latents (1, 4, frames, h, w), not image latents (batch, 4, h, w): "
                "connect the latent from AniPortrait Video Conditioning (not Empty Latent Image or another image latent).")
NOT_ANIPORTRAIT = ("{node} takes the AniPortrait MODEL: connect AniPortrait Load Video Model{other}.")

#: the original's ``noise_scheduler_kwargs`` in core's terms (core's "linear" is diffusers' "scaled_linear")
SAMPLING_SETTINGS = {"beta_schedule": "sqrt_linear", "linear_start": 0.00085, "linear_end": 0.012, "zsnr": True}


class VideoSD15(comfy.latent_formats.SD15):
    """SD1.5 latents laid out as video (1, 4, frames, h, w). Core's TAESD previewer decodes SD1.5 latents with a
    2-D decoder that cannot take the frame axis (0.3.64), so previews use core's latent-to-RGB previewer, which
    shows the first frame of video latents."""

    taesd_decoder_name = None


class AniPortraitModelConfig(comfy.supported_models_base.BASE):
    """Model config core reads: latent format, schedule, dtypes (the UNet is built by the pack, not by core)."""

    unet_config: dict = {}
    unet_extra_config: dict = {}
    latent_format = VideoSD15
    sampling_settings = SAMPLING_SETTINGS
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]


class DiffusionModel(Lmk2VideoModel):
    """The library's model evaluation with ComfyUI's ``diffusion_model`` calling convention and wrappers."""

    def forward(self, x, timesteps, context=None, control=None, transformer_options={}, **kwargs):
        # DIFFUSION_MODEL wrappers (e.g. core EasyCache) wrap this call, as they wrap core's UNetModel
        wrappers = comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                            transformer_options)
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timesteps, context, control, transformer_options, **kwargs)

    def _forward(self, x, timesteps, context=None, control=None, transformer_options={}, **kwargs):
        poses = kwargs.get(POSES)
        if poses is None:
            raise ValueError("The AniPortrait model needs its conditioning: connect positive and negative from "
                             "AniPortrait Video Conditioning to the sampler.")
        call = ModelCall(x=x, timestep=timesteps, context=context, reference_latent=kwargs[REFERENCE_LATENT],
                            use_reference=kwargs[USE_REFERENCE], poses=poses,
                            frames=window_frames(transformer_options.get("context_window"), poses.num_frames))
        return self.predict(call)


def window_frames(window: Any, total_frames: int) -> list[int] | None:
    """Clip frame indices of core's current context window (None without one: the whole clip).

    Asked of the window itself (``get_tensor`` on the frame indices) rather than read from ``index_list``:
    newer cores may put an extra anchor frame in front of a window's frames.
    """
    if window is None:
        return None
    indices = window.get_tensor(torch.arange(total_frames), dim=0)
    return [int(i) for i in indices.reshape(-1).tolist()]


class AniPortraitModel(comfy.model_base.BaseModel):
    """Core model wrapper: schedule and latent format from :class:`AniPortraitModelConfig`, the networks as
    ``diffusion_model`` (:class:`DiffusionModel`), the AniPortrait conditioning mapped to its inputs."""

    def __init__(self, model_config: AniPortraitModelConfig, networks: DiffusionModel, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.V_PREDICTION, device=device)
        self.diffusion_model = networks

    def resize_cond_for_context_window(self, cond_key, cond_value, window, x_in, device, retain_index_list=[], **kwargs):
        """Newer cores' hook: none of these conds has a frame axis (the pose frames are picked per window by
        the model), so core must not slice them even when a size happens to equal the frame count."""
        if cond_key in (REFERENCE_LATENT, USE_REFERENCE, POSES, "c_crossattn"):
            return cond_value
        return None

    def extra_conds(self, **kwargs):
        out = super().extra_conds(**kwargs)
        if kwargs.get(POSES) is not None:
            reference = self.process_latent_in(kwargs[REFERENCE_LATENT])
            out[REFERENCE_LATENT] = comfy.conds.CONDRegular(reference)
            out[USE_REFERENCE] = comfy.conds.CONDRegular(torch.tensor([float(kwargs.get(USE_REFERENCE, 1.0))]))
            out[POSES] = comfy.conds.CONDConstant(kwargs[POSES])
        return out

    def memory_required(self, input_shape, cond_shapes={}, **kwargs):
        """Bytes of activations for one call on ``input_shape`` = (rows, 4, frames, h, w) (core asks with the rows
        of one call and, under context windows, one window's frames)."""
        shape = [int(s) for s in input_shape]
        if len(shape) != 5:
            raise ValueError(LATENT_ERROR)
        dtype = self.manual_cast_dtype or self.get_dtype()
        return sampler.activation_bytes(shape[0], shape[2], 8 * shape[4], 8 * shape[3], dtype)


def layer_classes(weight_dtype: torch.dtype, compute_dtype: torch.dtype | None) -> dict[type, type]:
    """Core's layer classes for these dtypes (``comfy.ops.pick_operations``), keyed by the torch layer they replace."""
    try:
        ops = comfy.ops.pick_operations(weight_dtype, compute_dtype)
    except TypeError:  # a core whose signature moved: the two namespaces every version has
        ops = comfy.ops.manual_cast if compute_dtype is not None else comfy.ops.disable_weight_init
    return {nn.Linear: ops.Linear, nn.Conv2d: ops.Conv2d, nn.GroupNorm: ops.GroupNorm, nn.LayerNorm: ops.LayerNorm}


def _sampling_run(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: the reference and pose features live for one sampling run."""
    with executor.class_obj.model_patcher.model.diffusion_model.sampling_run():
        return executor(*args, **kwargs)


def load_model(files: dict[str, str], weight_dtype: torch.dtype) -> comfy.model_patcher.ModelPatcher:
    """Load the released Lmk2Video files as a core MODEL (a ModelPatcher on the offload device).

    Args:
        files: ``{"reference_unet", "denoising_unet", "motion_module", "pose_guider"}`` -> path.
        weight_dtype: dtype the weights are stored in; ComfyUI picks the compute dtype (manual cast) for its device.
    """
    load_device, offload = mm.get_torch_device(), mm.unet_offload_device()
    compute = mm.unet_manual_cast(weight_dtype, load_device, AniPortraitModelConfig.supported_inference_dtypes)
    models = loading.load_lmk2video_models(files, device=offload, dtype=weight_dtype,
                                           layer_classes=layer_classes(weight_dtype, compute))
    config = AniPortraitModelConfig({"disable_unet_model_creation": True, "in_channels": 4,
                                     "model_channels": models.config.unet["block_out_channels"][0]})
    config.set_inference_dtype(weight_dtype, compute)
    networks = DiffusionModel(models.reference_unet, models.video_unet, models.pose_guider)
    if hasattr(mm, "archive_model_dtypes"):  # newer cores: dynamic loading reads the stored dtypes from here
        mm.archive_model_dtypes(networks)
    model = AniPortraitModel(config, networks, device=offload)
    # newer cores swap in their dynamic-VRAM patcher as CoreModelPatcher at start-up: read it at call time
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    patcher = patcher_class(model, load_device=load_device, offload_device=offload)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, CACHE_WRAPPER_KEY, _sampling_run)
    return patcher


def with_original_context_windows(model, context_frames: int, context_overlap: int):
    """A clone of ``model`` sampling long videos in the original's context windows, through core's window handler.

    Core's ``looped_uniform`` schedule shifts the windows at every step (it passes the step index to the
    AnimateDiff formula); the original always used the step-0 windows. This installs core's
    ``IndexListContextHandler`` (frames on dim 2, windows averaged with equal weights = the original's sum / count)
    with the original's fixed windows as its schedule.
    """
    import inspect

    import comfy.context_windows as cw

    def original_windows(num_frames, handler, model_options):
        return context_windows.uniform_context_windows(num_frames, handler.context_length, handler.context_overlap)

    options = dict(context_schedule=cw.ContextSchedule("aniportrait_original", original_windows),
                   fuse_method=cw.get_matching_fuse_method(cw.ContextFuseMethods.FLAT), context_length=context_frames,
                   context_overlap=context_overlap, context_stride=1, closed_loop=True, dim=2)
    if "causal_window_fix" in inspect.signature(cw.IndexListContextHandler).parameters:
        options["causal_window_fix"] = False  # newer cores: no extra anchor frame in front of a window
    clone = model.clone()
    clone.model_options["context_handler"] = cw.IndexListContextHandler(**options)
    cw.create_prepare_sampling_wrapper(clone)  # memory estimates for one window, not the whole clip
    return clone


def conditioning(clip_embeds: torch.Tensor, reference_latent: torch.Tensor, poses, use_reference: bool) -> list:
    """One core CONDITIONING entry: CLIP embedding (1, 1, D) as context plus the AniPortrait keys."""
    embeds = clip_embeds.reshape(1, 1, -1)
    if not use_reference:
        embeds = torch.zeros_like(embeds)
    return [[embeds, {REFERENCE_LATENT: reference_latent, USE_REFERENCE: 1.0 if use_reference else 0.0, POSES: poses}]]


def networks_of(model, node: str, other: str = "") -> DiffusionModel:
    """The AniPortrait networks inside a core MODEL; any other model is refused with one sentence naming ``node``."""
    networks = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not isinstance(networks, Lmk2VideoModel):
        raise ValueError(NOT_ANIPORTRAIT.format(node=node, other=other))
    return networks


def with_compiled_blocks(model, backend: str):
    """A clone of the AniPortrait ``model`` whose video-UNet blocks run ``torch.compile``d while it samples (the
    library's :meth:`~..sampling.evaluation.Lmk2VideoModel.compiled`, entered per model call after core loaded the
    weights, as core's own compile wrapper does); the number of compiled blocks."""
    networks = networks_of(model, "AniPortrait Compile Model", " (for other models use core TorchCompileModel)")
    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, COMPILE_WRAPPER_KEY,
                               functools.partial(_compiled_call, backend))
    return clone, len(compiling.compile_targets(networks.video_unet))


def _compiled_call(backend, executor, *args, **kwargs):
    """APPLY_MODEL wrapper: the call runs with the compiled blocks swapped in (and back out afterwards)."""
    with executor.class_obj.diffusion_model.compiled(backend, "bypass AniPortrait Compile Model"):
        return executor(*args, **kwargs)


# ----------------------------------------------------------------------------- the pack's own sampler
def video_conditioning(model, positive: list, negative: list) -> sampler.VideoConditioning:
    """Core CONDITIONING from AniPortrait Video Conditioning -> the library's :class:`~..sampling.sampler.VideoConditioning`
    (first entry of each; the reference latent and the poses are the positive's)."""

    def entry(cond: list, name: str) -> tuple[torch.Tensor, dict]:
        if not cond or POSES not in cond[0][1]:
            raise ValueError(f"{name} must come from AniPortrait Video Conditioning (it carries the reference and "
                             f"the pose frames).")
        return cond[0][0], cond[0][1]

    pos_context, pos = entry(positive, "positive")
    neg_context, neg = entry(negative, "negative")
    if neg[POSES] is not pos[POSES]:
        raise ValueError("positive and negative come from different AniPortrait Video Conditioning nodes: connect "
                         "both outputs of the same node.")
    reference = model.model.process_latent_in(pos[REFERENCE_LATENT])  # raw VAE latent -> sampler scale
    return sampler.VideoConditioning(
        reference_latent=reference, poses=pos[POSES],
        positive=sampler.Branch(pos_context.reshape(1, 1, -1), bool(pos.get(USE_REFERENCE, 1.0) > 0.5)),
        negative=sampler.Branch(neg_context.reshape(1, 1, -1), bool(neg.get(USE_REFERENCE, 0.0) > 0.5)),
    )


def compute_dtype(model) -> torch.dtype:
    """The dtype core runs the model in on its device (the manual-cast dtype when weights are stored in another)."""
    return model.model.manual_cast_dtype or model.model.get_dtype()
