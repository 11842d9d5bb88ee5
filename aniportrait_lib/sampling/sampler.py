"""Stage-2 sampler: reference photo + pose frames -> video latents (pure torch, no ComfyUI).

Semantics of the original ``Pose2VideoPipeline.__call__`` (``src/pipelines/pipeline_pose2vid_long.py``):

1. CFG is used when ``cfg > 1``: batch rows are ``[uncond, cond]``. The uncond row gets a ZERO CLIP
   embedding AND no reference features (plain self-attention), but the same pose features.
   With ``cfg == 1`` only the cond row is computed.
2. The reference UNet runs ONCE per video (t = 0, CFG batch, CLIP context); its per-block features
   are reused for every step and window.
3. Each DDIM step covers the clip with the uniform, wrap-around context windows
   (:func:`~aniportrait_lib.sampling.context_windows.uniform_context_windows`). Per window the pose guider runs
   on that window's pose frames (CFG-duplicated batch: its BatchNorms use the statistics of the current
   batch, so a frame's pose features depend on its window; the features are the same at every step, so
   by default they are computed at the first step and reused, :mod:`.pose_features`; the frames come from
   a :class:`~aniportrait_lib.sampling.pose_source.PoseFrames` source: held uint8 pose images, or landmarks
   drawn for that window only when its features are computed) and the video UNet
   predicts v for the window. Predictions are summed per frame and divided by the per-frame window count,
   THEN CFG ``uncond + cfg * (cond - uncond)`` is applied and one DDIM step is taken.

The named steps, in order: :func:`check_inputs` -> reference conditioning
(:func:`~aniportrait_lib.sampling.reference.prepare_reference`) -> :func:`estimate_memory` (for the host's
model loader) -> :func:`sample_video` = :func:`plan_windows` + :func:`prepare_conditioning` +
:class:`~aniportrait_lib.sampling.pose_features.PoseFeatureCache` + :func:`denoise`.

Progress, previews and cancelling share one callback, ``progress(done, total, preview_latent=None)``:
called after every window evaluation (``done`` = finished evaluations, 1..total); once per DDIM step it
carries ``preview_latent``, the (1, 4, h, w) middle frame of that step's x0 prediction in sampler scale
(the scaled SD1.5 latent space that latent previewers such as TAESD decode). To cancel, raise from it:
nothing else is checked.

Latent scale: the latents this module takes and returns are VAE latents multiplied by
:data:`LATENT_SCALE` (0.18215), like the original's ``ref_image_latents`` and final latents; decode
with ``vae.decode(latents / LATENT_SCALE)``. Hosts holding raw VAE latents use :func:`to_vae_space` /
:func:`from_vae_space` / :func:`to_frame_batch`.

Differences from the original (deliberate): the latents and the window accumulation stay in float32
whatever the model dtype (the original keeps them in the model dtype, fp16 on CUDA), the initial
noise is drawn on a CPU generator so a seed gives the same video on every device, and without CFG
the window sum is also divided by the per-frame count (the original forgets this when
``guidance_scale <= 1``, which doubles the overlapping frames' predictions).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..data import Landmarks
from .compiling import Backend, compiled_blocks
from .context_windows import frame_coverage, uniform_context_windows
from .pose_features import PoseFeatureCache
from .pose_source import PoseFrames, as_pose_frames
from .reference import LATENT_SCALE
from .scheduler import AniPortraitDDIM, make_scheduler
from ..networks.attention import ReferenceFeatures

logger = logging.getLogger(__name__)

__all__ = [
    "LATENT_SCALE",
    "Progress",
    "check_inputs",
    "check_size",
    "estimate_memory",
    "count_window_evaluations",
    "plan_windows",
    "prepare_conditioning",
    "make_noise",
    "run_reference",
    "Denoiser",
    "denoise",
    "sample_video",
    "encode_reference_latent",
    "decode_latents",
    "to_vae_space",
    "from_vae_space",
    "to_frame_batch",
]

#: ``progress(done, total, preview_latent=None)``; see the module docstring.
Progress = Callable[..., None]


# ----------------------------------------------------------------------------------------------------------------
# latent spaces
# ----------------------------------------------------------------------------------------------------------------
def to_vae_space(latents: torch.Tensor) -> torch.Tensor:
    """Sampler latents (scaled by 0.18215) -> raw VAE latents (ComfyUI ``LATENT`` space)."""
    return latents / LATENT_SCALE


def from_vae_space(latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents (ComfyUI ``LATENT`` space) -> sampler latents (scaled by 0.18215)."""
    return latents * LATENT_SCALE


def to_frame_batch(latents: torch.Tensor) -> torch.Tensor:
    """Sampler video latents (1, 4, F, h, w) -> raw VAE latents (F, 4, h, w), one row per frame (the layout
    of an image model's latent batch: ComfyUI's VAE Decode turns it into F images)."""
    return to_vae_space(latents)[0].permute(1, 0, 2, 3).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# step 1: check inputs
# ----------------------------------------------------------------------------------------------------------------
def check_inputs(width: int, height: int, num_frames: int, steps: int, cfg: float, context_frames: int,
                 context_overlap: int) -> None:
    """Refuse settings the sampler cannot run, with one sentence that says what to change.

    Args:
        width, height: video size in pixels (multiples of 8: the VAE and UNets work at 1/8 size).
        num_frames: number of pose frames (= output frames).
        steps: DDIM steps. cfg: guidance scale (>= 1). context_frames, context_overlap: window length/overlap.
    Raises:
        ValueError.
    """
    check_size(width, height, num_frames)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}.")
    if not np.isfinite(cfg) or cfg < 1.0:
        raise ValueError(f"cfg must be a finite number >= 1.0 (1.0 disables guidance), got {cfg}.")
    if context_frames < 1:
        raise ValueError(f"context_frames must be at least 1, got {context_frames}.")
    if not 0 <= context_overlap < context_frames:
        raise ValueError(f"context_overlap ({context_overlap}) must be 0 or more and smaller than context_frames "
                         f"({context_frames}): lower context_overlap or raise context_frames.")


def check_size(width: int, height: int, num_frames: int) -> None:
    """Refuse a video size the VAE cannot encode or an empty pose input (ValueError, one sentence)."""
    if width % 8 or height % 8:
        raise ValueError(f"width and height must be multiples of 8 (got {width}x{height}): the VAE works at 1/8 "
                         f"size, so use e.g. {max(8, width // 8 * 8)}x{max(8, height // 8 * 8)}.")
    if width < 8 or height < 8:
        raise ValueError(f"width and height must be at least 8 pixels (got {width}x{height}).")
    if num_frames < 1:
        raise ValueError("pose_images holds no frames; connect at least one pose image (one per output frame).")


def _check_conditioning(ref_latent: torch.Tensor, clip_embeds: torch.Tensor) -> torch.Tensor:
    """Shape checks of the reference conditioning; returns ``clip_embeds`` as (1, D) ((1, 1, D) is squeezed)."""
    clip_embeds = torch.as_tensor(clip_embeds)
    if clip_embeds.ndim == 3 and clip_embeds.shape[1] == 1:
        clip_embeds = clip_embeds[:, 0]
    if ref_latent.ndim != 4 or ref_latent.shape[0] != 1 or ref_latent.shape[1] != 4:
        raise ValueError(f"ref_latent must have shape (1, 4, H/8, W/8), got {tuple(ref_latent.shape)}.")
    if clip_embeds.ndim != 2 or clip_embeds.shape[0] != 1:
        raise ValueError(
            f"clip_embeds must have shape (1, D) (the CLIP image_embeds), got {tuple(clip_embeds.shape)}."
        )
    return clip_embeds


# ----------------------------------------------------------------------------------------------------------------
# memory estimate, windows
# ----------------------------------------------------------------------------------------------------------------
def estimate_memory(num_frames: int, width: int, height: int, cfg: float, context_frames: int,
                    dtype: torch.dtype, window_batch: int = 1, context_overlap: int = 4) -> int:
    """Bytes of activations one video-UNet call needs, besides the weights (for the host's model loader).

    Activations dominate at video sizes: CFG batch x windows per call x window length x the UNet's widest
    feature maps (320 channels at 1/8 size) x a factor 64 for the attention/ResNet intermediates alive at once.
    """
    windows = max(1, min(int(window_batch), len(uniform_context_windows(num_frames, context_frames, context_overlap))))
    batch = (2 if cfg > 1.0 else 1) * windows
    elem = torch.finfo(dtype).bits // 8
    return int(batch * min(num_frames, context_frames) * (height // 8) * (width // 8) * 320 * 64 * elem)


def count_window_evaluations(num_frames: int, steps: int, context_frames: int, context_overlap: int) -> int:
    """``steps x windows``: the ``total`` the progress callback counts to."""
    return int(steps) * len(uniform_context_windows(num_frames, context_frames, context_overlap))


@dataclass
class WindowPlan:
    """The context windows of one video.

    Attributes:
        frames: per window, its CPU long tensor of frame indices (wrap-around windows are not sorted).
        index: the same indices on the compute device (for ``index_select`` / ``index_add_``).
        counts: float32 (1, 1, F, 1, 1) on the device: how many windows cover each frame.
    """

    frames: list[torch.Tensor]
    index: list[torch.Tensor]
    counts: torch.Tensor


def plan_windows(num_frames: int, context_frames: int, context_overlap: int, device: torch.device) -> WindowPlan:
    """The uniform closed-loop windows (the original's ``uniform`` schedule, stride 1) and their coverage."""
    windows = uniform_context_windows(num_frames, context_frames, context_overlap)
    counts = frame_coverage(windows, num_frames)
    if min(counts) < 1:  # cannot happen with the closed-loop schedule; guards future schedules
        raise ValueError("The context windows leave some frames uncovered.")
    frames = [torch.tensor(win, dtype=torch.long) for win in windows]
    counter = torch.tensor(counts, device=device, dtype=torch.float32).view(1, 1, num_frames, 1, 1)
    return WindowPlan(frames=frames, index=[f.to(device) for f in frames], counts=counter)


# ----------------------------------------------------------------------------------------------------------------
# noise, conditioning
# ----------------------------------------------------------------------------------------------------------------
def make_noise(
    shape: Sequence[int],
    seed: Union[int, torch.Generator],
    device: Union[str, torch.device] = "cpu",
) -> torch.Tensor:
    """Initial noise, float32, identical on every device for the same seed.

    Args:
        shape: e.g. (1, 4, F, h, w).
        seed: an integer seed (a fresh ``torch.Generator('cpu').manual_seed(seed)`` is used; this gives
            the same numbers as the original's ``torch.manual_seed(seed)`` global generator) or a
            generator (noise is drawn on the generator's device).
        device: where the returned tensor lives.
    """
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        seed = int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}.")
        generator = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn(tuple(int(s) for s in shape), generator=generator, device=generator.device,
                        dtype=torch.float32)
    return noise.to(device)


@torch.no_grad()
def run_reference(
    reference_unet: torch.nn.Module,
    ref_latent: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
) -> Any:
    """Run the ReferenceNet once at t = 0 and return its per-block reference features.

    Args:
        reference_unet: :class:`~aniportrait_lib.networks.unet.ReferenceUNet` (``forward(sample,
            encoder_hidden_states, timestep)``; it returns the features cast to float16 like the original's
            reference banks).
        ref_latent: (B, 4, h, w) sampler-space reference latents (B = 2 with CFG: repeated).
        encoder_hidden_states: (B, 1, D) CLIP context (row 0 zeros with CFG).
    """
    timestep = torch.zeros((), dtype=torch.int64, device=ref_latent.device)
    return reference_unet(ref_latent, encoder_hidden_states, timestep=timestep)


@dataclass
class Conditioning:
    """What every video-UNet call reads besides the latents and the pose features.

    Attributes:
        states: (B, 1, D) CLIP context in the model dtype; rows [zeros, embeds] with CFG, [embeds] without.
        reference_features: the ReferenceNet's per-block features, cond row only (the uncond row runs plain
            self-attention), which keep their projected keys/values for the whole run.
        reference_mask: CPU bool (B,): which rows read the reference features (on the host: no device sync).
    """

    states: torch.Tensor
    reference_features: ReferenceFeatures
    reference_mask: torch.Tensor

    @property
    def batch(self) -> int:
        return int(self.states.shape[0])


@torch.no_grad()
def prepare_conditioning(reference_unet: torch.nn.Module, ref_latent: torch.Tensor, clip_embeds: torch.Tensor,
                         guidance: bool, device: torch.device, dtype: torch.dtype) -> Conditioning:
    """CFG batch of the CLIP context and the reference features (the ReferenceNet's one run per video).

    Args:
        ref_latent: (1, 4, h, w) sampler-scale reference latent. clip_embeds: (1, D).
        guidance: True for CFG (batch rows [uncond, cond]).
    """
    cond_states = clip_embeds.to(device=device, dtype=dtype).unsqueeze(1)  # (1, 1, D)
    if guidance:
        states = torch.cat([torch.zeros_like(cond_states), cond_states], dim=0)
        mask = torch.tensor([False, True])
    else:
        states, mask = cond_states, torch.tensor([True])
    ref_in = ref_latent.to(device=device, dtype=dtype).repeat(states.shape[0], 1, 1, 1)
    features = run_reference(reference_unet, ref_in, states)
    return Conditioning(states=states, reference_features=ReferenceFeatures([f[-1:] for f in features]), reference_mask=mask)


# ----------------------------------------------------------------------------------------------------------------
# denoise loop
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Denoiser:
    """Everything one DDIM step needs (built by :func:`sample_video`).

    ``window_batch``: how many context windows of equal length go through the video UNet in one call.
    """

    video_unet: torch.nn.Module
    cond: Conditioning
    plan: WindowPlan
    poses: PoseFeatureCache
    dtype: torch.dtype
    cfg: float
    window_batch: int = 1

    @cached_property
    def groups(self) -> list[list[int]]:
        """:func:`window_groups` of the plan, the same at every step."""
        return window_groups(self.plan, self.window_batch)


def window_groups(plan: WindowPlan, window_batch: int) -> list[list[int]]:
    """Window numbers in groups of at most ``window_batch`` consecutive windows of the same length."""
    groups: list[list[int]] = []
    for wi, frames in enumerate(plan.frames):
        last = groups[-1] if groups else None
        if last is not None and len(last) < window_batch and plan.frames[last[0]].numel() == frames.numel():
            last.append(wi)
        else:
            groups.append([wi])
    return groups


def _predict_group(run: Denoiser, latents: torch.Tensor, t_tensor: torch.Tensor, group: list[int]) -> torch.Tensor:
    """v prediction of the windows in ``group`` in one UNet call: (B, n, 4, f, h, w) for B CFG rows, n windows.

    Rows go in as [uncond windows..., cond windows...], so the reference mask has two runs whatever ``n``.
    """
    n_batch, n = run.cond.batch, len(group)
    windows = torch.cat([latents.index_select(2, run.plan.index[wi]) for wi in group])  # (n, 4, f, h, w)
    model_in = windows.to(run.dtype).repeat(n_batch, 1, 1, 1, 1)
    per_window = [run.poses.features(wi, run.plan.frames[wi]) for wi in group]  # each (B, C_k, f, H_k, W_k)
    pose_features = [torch.stack([feats[k] for feats in per_window], 1).flatten(0, 1) if n > 1 else per_window[0][k]
                     for k in range(len(per_window[0]))]  # rows [b0 w0, b0 w1, ..., b1 w0, ...]
    states = run.cond.states.repeat_interleave(n, 0)
    mask = run.cond.reference_mask.repeat_interleave(n, 0)
    pred = run.video_unet(model_in, t_tensor, states, pose_features, run.cond.reference_features, mask)
    return pred.view(n_batch, n, *pred.shape[1:])


def _predict_step(run: Denoiser, latents: torch.Tensor, t: int, on_window: Callable[[bool], None]) -> torch.Tensor:
    """Window-averaged v prediction of one step: float32 (B, 4, F, h, w), rows as in ``run.cond``.

    ``on_window(last)`` is called after each window evaluation (``last`` for the step's final window).
    """
    t_tensor = torch.tensor(t, dtype=torch.int64, device=latents.device)
    noise_pred = torch.zeros((run.cond.batch, *latents.shape[1:]), device=latents.device, dtype=torch.float32)
    n_windows = len(run.plan.index)
    for group in run.groups:
        pred = _predict_group(run, latents, t_tensor, group)
        for j, wi in enumerate(group):
            noise_pred.index_add_(2, run.plan.index[wi], pred[:, j].float())
            on_window(wi == n_windows - 1)
    return noise_pred / run.plan.counts


def _guide(noise_pred: torch.Tensor, cfg: float) -> torch.Tensor:
    """CFG ``uncond + cfg * (cond - uncond)`` on rows [uncond, cond]; a single row is returned as it is."""
    if noise_pred.shape[0] == 1:
        return noise_pred
    uncond, cond = noise_pred.chunk(2)
    return uncond + cfg * (cond - uncond)


def denoise(run: Denoiser, latents: torch.Tensor, scheduler: AniPortraitDDIM, timesteps: Sequence[int],
            progress: Optional[Progress] = None) -> torch.Tensor:
    """The DDIM loop over ``timesteps``: float32 (1, 4, F, h, w) noisy latents -> denoised latents.

    ``progress(done, total)`` follows every window evaluation; the last one of each step is reported after
    the scheduler step, with the middle frame of that step's x0 prediction as ``preview_latent``.
    """
    total = len(timesteps) * len(run.plan.index)
    done = 0
    for t in timesteps:
        def on_window(last: bool) -> None:
            nonlocal done
            done += 1
            if progress is not None and not last:
                progress(done, total)

        guided = _guide(_predict_step(run, latents, t, on_window), run.cfg)
        out = scheduler.step(guided, t, latents)
        latents = out.prev_sample
        if progress is not None:
            x0 = out.pred_original_sample
            progress(done, total, x0[:, :, x0.shape[2] // 2])
    return latents


def _initial_latents(shape: tuple[int, ...], seed: Union[int, torch.Generator], noise: Optional[torch.Tensor],
                     device: torch.device, sigma: float) -> torch.Tensor:
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}.")
        latents = noise.to(device=device, dtype=torch.float32)
    else:
        latents = make_noise(shape, seed, device)
    return latents * sigma


# ----------------------------------------------------------------------------------------------------------------
# the whole sampler
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_video(
    models: Any, ref_latent: torch.Tensor, clip_embeds: torch.Tensor,
    pose_images: Union[np.ndarray, torch.Tensor, PoseFrames, Landmarks], *,
    steps: int = 25, cfg: float = 3.5, seed: Union[int, torch.Generator] = 42, context_frames: int = 16,
    context_overlap: int = 4, device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None,
    progress: Optional[Progress] = None, noise: Optional[torch.Tensor] = None,
    scheduler: Optional[AniPortraitDDIM] = None, cache_pose_features: bool = True,
    pose_cache_budget_bytes: int = 1 << 30, cache_overflow_device: Union[str, torch.device] = "cpu",
    window_batch: int = 1, compile_backend: Optional[Backend] = None,
) -> torch.Tensor:
    """Denoise a video conditioned on a reference latent, a CLIP embedding and pose frames.

    Args:
        models: object with ``reference_unet``, ``video_unet`` and ``pose_guider`` modules (e.g.
            ``Lmk2VideoModels``), already on ``device``. Their train/eval modes are left as they are
            (the pose guider's ``batch_norm_mode='batch_stats'`` reproduces the original's train-mode BatchNorm).
        ref_latent: (1, 4, H/8, W/8) reference VAE latent mean, ALREADY multiplied by 0.18215.
        clip_embeds: (1, D) (or (1, 1, D)) CLIP ``image_embeds`` of the reference photo.
        pose_images: the pose frames: (F, H, W, 3) rendered pose images, channels as stored (BGR-as-RGB), uint8
            (or float 0..1); or :class:`~aniportrait_lib.data.Landmarks` (points (F, N, 2) pixels), drawn one
            window at a time when that window's pose features are first computed (same frames, same latents,
            without holding every pose image); or any :class:`~aniportrait_lib.sampling.pose_source.PoseFrames`.
            Frames of another size than 8x the latent's are resized, nearest neighbour, like the original.
        steps: DDIM steps (>= 1). cfg: guidance scale; 1.0 disables the uncond branch entirely.
        seed: integer seed (CPU generator, device independent) or a ``torch.Generator``.
        context_frames, context_overlap: context-window length and overlap in frames.
        device: compute device (default: the video UNet's parameter device, else ``ref_latent``'s).
        dtype: model input dtype (default: the video UNet's parameter dtype); latents stay float32.
        progress: ``progress(done, total, preview_latent=None)`` (module docstring); it cancels by raising.
        noise: optional initial noise (1, 4, F, h, w) instead of drawing it from ``seed``.
        scheduler: optional scheduler instance (default: :func:`make_scheduler`).
        cache_pose_features, pose_cache_budget_bytes, cache_overflow_device: see
            :class:`~aniportrait_lib.sampling.pose_features.PoseFeatureCache` (False recomputes per step, like
            the original; the numbers are the same).
        window_batch: context windows per video-UNet call (>= 1). More windows per call use the device better
            at the cost of that many times the activation memory; the result is the same up to float rounding.
        compile_backend: ``torch.compile`` backend for the video UNet's heavy blocks during this run
            (:func:`~.compiling.compiled_blocks`: the first run of a size compiles, later ones reuse it), or None.

    Returns:
        float32 latents (1, 4, F, H/8, W/8) on ``device``, in sampler scale (raw VAE latents * 0.18215).
    """
    video_unet = models.video_unet
    device = torch.device(device if device is not None else
                          next((q.device for q in video_unet.parameters()), ref_latent.device))
    dtype = dtype if dtype is not None else _model_dtype(video_unet, torch.float32)
    clip_embeds = _check_conditioning(ref_latent, clip_embeds)
    poses = as_pose_frames(pose_images)  # host side: uint8 frames, or landmarks drawn per window
    h, w = int(ref_latent.shape[2]), int(ref_latent.shape[3])
    check_inputs(8 * w, 8 * h, poses.num_frames, steps, float(cfg), context_frames, context_overlap)
    cfg, num_frames = float(cfg), poses.num_frames

    plan = plan_windows(num_frames, context_frames, context_overlap, device)
    sched = scheduler if scheduler is not None else make_scheduler()
    timesteps = sched.set_timesteps(int(steps)).tolist()
    latents = _initial_latents((1, 4, num_frames, h, w), seed, noise, device, sched.init_noise_sigma)
    logger.info("AniPortrait sampling: %d frames %dx%d, %d steps, cfg %.3g, %d context windows of <= %d frames",
                num_frames, 8 * w, 8 * h, len(timesteps), cfg, len(plan.index), context_frames)

    cond = prepare_conditioning(models.reference_unet, ref_latent, clip_embeds, cfg > 1.0, device, dtype)
    pose_cache = PoseFeatureCache(models.pose_guider, poses, (8 * h, 8 * w), cond.batch, device, dtype,
                                  cache_pose_features, pose_cache_budget_bytes, cache_overflow_device)
    if int(window_batch) < 1:
        raise ValueError(f"window_batch must be at least 1, got {window_batch}.")
    run = Denoiser(video_unet, cond, plan, pose_cache, dtype, cfg, int(window_batch))
    with compiled_blocks(video_unet, compile_backend) if compile_backend else contextlib.nullcontext():
        return denoise(run, latents, sched, timesteps, progress)


def _model_dtype(module: torch.nn.Module, fallback: torch.dtype) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return fallback


# ----------------------------------------------------------------------------------------------------------------
# diffusers VAE helpers (golden tests, scripts)
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_reference_latent(vae: Any, image: torch.Tensor) -> torch.Tensor:
    """Reference image -> sampler latent with a diffusers ``AutoencoderKL``.

    Args:
        vae: diffusers AutoencoderKL (``encode(x).latent_dist.mean``).
        image: (1, 3, H, W) in [-1, 1] (see :func:`~aniportrait_lib.sampling.preprocess.vae_preprocess`).

    Returns:
        (1, 4, H/8, W/8) = ``latent_dist.mean * 0.18215`` (the mean, not a sample, as the original).
    """
    param = next(vae.parameters())
    return vae.encode(image.to(param.device, param.dtype)).latent_dist.mean * LATENT_SCALE


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Sampler latents -> video frame by frame with a diffusers ``AutoencoderKL``.

    Args:
        vae: diffusers AutoencoderKL.
        latents: (1, 4, F, h, w) sampler latents (scaled by 0.18215).

    Returns:
        float32 (1, 3, F, 8h, 8w) in [0, 1]: ``(vae.decode(latents / 0.18215).sample / 2 + 0.5).clamp(0, 1)``.
    """
    param = next(vae.parameters())
    raw = to_vae_space(latents)
    frames = []
    for f in range(raw.shape[2]):
        x = vae.decode(raw[:, :, f].to(param.device, param.dtype)).sample
        frames.append(x.float())
    video = torch.stack(frames, dim=2)
    return (video / 2 + 0.5).clamp(0, 1)
