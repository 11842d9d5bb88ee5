"""Stage-2 sampler: reference photo + pose frames -> video latents (pure torch, no ComfyUI).

Semantics of the original ``Pose2VideoPipeline.__call__`` (``src/pipelines/pipeline_pose2vid_long.py``):

1. CFG is used when ``cfg > 1``: batch rows are ``[uncond, cond]``. The uncond row gets a ZERO CLIP
   embedding AND no reference features (plain self-attention), but the same pose features.
   With ``cfg == 1`` only the cond row is computed.
2. The reference UNet runs ONCE per video (t = 0, CFG batch, CLIP context); its per-block features
   are reused for every step and window.
3. Each DDIM step covers the clip with the uniform, wrap-around context windows
   (:func:`~aniportrait_lib.video.context.uniform_context_windows`). Per window the pose guider runs on
   that window's pose frames (CFG-duplicated batch: its BatchNorms use the statistics of the current
   batch, so a frame's pose features depend on its window; the features are the same at every step, so
   by default they are computed at the first step and reused) and the video UNet predicts v for the
   window. Predictions are summed per frame and divided by the per-frame window count, THEN CFG
   ``uncond + cfg * (cond - uncond)`` is applied and one DDIM step is taken.

Latent scale: the latents this module takes and returns are VAE latents multiplied by
:data:`LATENT_SCALE` (0.18215), like the original's ``ref_image_latents`` and final latents; decode
with ``vae.decode(latents / LATENT_SCALE)``. ComfyUI's ``LATENT`` holds raw VAE latents, see
:func:`to_vae_space` / :func:`from_vae_space`.

Differences from the original (deliberate): the latents and the window accumulation stay in float32
whatever the model dtype (the original keeps them in the model dtype, fp16 on CUDA), the initial
noise is drawn on a CPU generator so a seed gives the same video on every device, and without CFG
the window sum is also divided by the per-frame count (the original forgets this when
``guidance_scale <= 1``, which doubles the overlapping frames' predictions).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from .context_windows import frame_coverage, uniform_context_windows
from .preprocess import prepare_pose_tensor, to_uint8_frames
from .scheduler import AniPortraitDDIM, make_scheduler

logger = logging.getLogger(__name__)

__all__ = [
    "LATENT_SCALE",
    "SamplingInterrupted",
    "make_noise",
    "run_reference",
    "sample_video",
    "encode_reference_latent",
    "decode_latents",
    "to_vae_space",
    "from_vae_space",
]

#: SD1.5 VAE scaling factor, hard-coded by the original pipeline.
LATENT_SCALE = 0.18215

#: ``callback(step_index, total, latents_preview)``; see :func:`sample_video`.
ProgressCallback = Callable[[int, int, torch.Tensor], None]


class SamplingInterrupted(RuntimeError):
    """Raised when ``interrupt_check`` returns True during sampling."""


def to_vae_space(latents: torch.Tensor) -> torch.Tensor:
    """Sampler latents (scaled by 0.18215) -> raw VAE latents (ComfyUI ``LATENT`` space)."""
    return latents / LATENT_SCALE


def from_vae_space(latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents (ComfyUI ``LATENT`` space) -> sampler latents (scaled by 0.18215)."""
    return latents * LATENT_SCALE


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
def encode_reference_latent(vae: Any, image: torch.Tensor) -> torch.Tensor:
    """Reference image -> sampler latent with a diffusers ``AutoencoderKL``.

    Args:
        vae: diffusers AutoencoderKL (``encode(x).latent_dist.mean``).
        image: (1, 3, H, W) in [-1, 1] (see :func:`~aniportrait_lib.video.preprocess.vae_preprocess`).

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


def _model_dtype(module: torch.nn.Module, fallback: torch.dtype) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return fallback


@torch.no_grad()
def run_reference(
    reference_unet: torch.nn.Module,
    ref_latent: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
) -> Any:
    """Run the ReferenceNet once at t = 0 and return its per-block reference features.

    Args:
        reference_unet: :class:`~aniportrait_lib.video.unet.ReferenceUNet` (``forward(sample,
            encoder_hidden_states, timestep)``; it returns the features cast to float16 like the original's
            reference banks).
        ref_latent: (B, 4, h, w) sampler-space reference latents (B = 2 with CFG: repeated).
        encoder_hidden_states: (B, 1, D) CLIP context (row 0 zeros with CFG).
    """
    timestep = torch.zeros((), dtype=torch.int64, device=ref_latent.device)
    return reference_unet(ref_latent, encoder_hidden_states, timestep=timestep)


def _validate_inputs(
    ref_latent: torch.Tensor,
    clip_embeds: torch.Tensor,
    num_frames: int,
    pose_hw: tuple[int, int],
    steps: int,
    cfg: float,
) -> None:
    if ref_latent.ndim != 4 or ref_latent.shape[0] != 1 or ref_latent.shape[1] != 4:
        raise ValueError(
            f"ref_latent must have shape (1, 4, H/8, W/8), got {tuple(ref_latent.shape)}."
        )
    if clip_embeds.ndim != 2 or clip_embeds.shape[0] != 1:
        raise ValueError(
            f"clip_embeds must have shape (1, D) (the CLIP image_embeds), got {tuple(clip_embeds.shape)}."
        )
    if num_frames < 1:
        raise ValueError("pose_images holds no frames; the video needs at least 1 pose frame.")
    ph, pw = pose_hw
    if ph < 1 or pw < 1:
        raise ValueError(f"The pose images are {pw}x{ph}; they need at least one pixel.")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}.")
    if not np.isfinite(cfg) or cfg < 1.0:
        raise ValueError(f"cfg must be a finite number >= 1.0 (1.0 disables guidance), got {cfg}.")


@torch.no_grad()
def sample_video(
    models: Any,
    ref_latent: torch.Tensor,
    clip_embeds: torch.Tensor,
    pose_images: Union[np.ndarray, torch.Tensor],
    *,
    steps: int = 25,
    cfg: float = 3.5,
    seed: Union[int, torch.Generator] = 42,
    context_frames: int = 16,
    context_overlap: int = 4,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    callback: Optional[ProgressCallback] = None,
    interrupt_check: Optional[Callable[[], Optional[bool]]] = None,
    noise: Optional[torch.Tensor] = None,
    scheduler: Optional[AniPortraitDDIM] = None,
    cache_pose_features: bool = True,
    pose_cache_budget_bytes: int = 1 << 30,
    cache_overflow_device: Union[str, torch.device] = "cpu",
) -> torch.Tensor:
    """Denoise a video conditioned on a reference latent, a CLIP embedding and pose frames.

    Args:
        models: object with ``reference_unet``, ``video_unet`` and ``pose_guider`` modules (e.g.
            ``Lmk2VideoModels``), already on ``device``. Their train/eval modes are left as they are
            (the pose guider's ``batch_norm_mode='batch_stats'`` reproduces the original's train-mode BatchNorm).
        ref_latent: (1, 4, H/8, W/8) reference VAE latent mean, ALREADY multiplied by 0.18215.
        clip_embeds: (1, D) CLIP ``image_embeds`` of the reference photo.
        pose_images: (F, H, W, 3) rendered pose frames, channels as stored (BGR-as-RGB), uint8 values
            (frames of another size than the latent's 8x are resized, nearest neighbour, like the original)
            (or float 0..1); H, W must equal 8x the latent size.
        steps: DDIM steps (>= 1).
        cfg: classifier-free guidance scale; 1.0 disables the uncond branch entirely.
        seed: integer seed (CPU generator, device independent) or a ``torch.Generator``.
        context_frames, context_overlap: context-window length and overlap in frames.
        device: compute device (default: the video UNet's parameter device, else ``ref_latent``'s).
        dtype: model input dtype (default: the video UNet's parameter dtype). Latents and the window
            accumulation stay float32.
        callback: ``callback(step_index, total, latents_preview)`` after every window evaluation;
            ``step_index`` counts finished window evaluations (1..total), ``total = steps * windows``;
            ``latents_preview`` (1, 4, F, h, w) is the x0 prediction of the last finished DDIM step
            (the current noisy latents before the first step finishes).
        interrupt_check: called before every window evaluation; it may raise (ComfyUI's
            ``throw_exception_if_processing_interrupted``) or return True to raise
            :class:`SamplingInterrupted`.
        noise: optional initial noise (1, 4, F, h, w) instead of drawing it from ``seed``.
        scheduler: optional scheduler instance (default: :func:`make_scheduler`).
        cache_pose_features: compute each window's pose features once and reuse them at every step
            (exact: the pose guider sees the same batch each step; costs one (1, C_k, f, h_k, w_k) set of
            feature maps per window, about 63 MB per window at 512x512 in fp16). False recomputes them
            per step like the original.
        pose_cache_budget_bytes: device memory the pose-feature cache may use; windows beyond it are
            cached on ``cache_overflow_device`` (host memory) and copied back when used, so VRAM does
            not grow with the video length.

    Returns:
        float32 latents (1, 4, F, H/8, W/8) on ``device``, in sampler scale (raw VAE latents * 0.18215).
    """
    reference_unet = models.reference_unet
    video_unet = models.video_unet
    pose_guider = models.pose_guider
    if device is None:
        device = next((q.device for q in video_unet.parameters()), ref_latent.device)
    device = torch.device(device)
    if dtype is None:
        dtype = _model_dtype(video_unet, torch.float32)

    clip_embeds = torch.as_tensor(clip_embeds)
    if clip_embeds.ndim == 3 and clip_embeds.shape[1] == 1:
        clip_embeds = clip_embeds[:, 0]
    num_frames = int(pose_images.shape[0]) if hasattr(pose_images, "shape") else 0
    if hasattr(pose_images, "ndim") and pose_images.ndim != 4:
        raise ValueError(f"pose_images must have shape (F, H, W, 3), got {tuple(pose_images.shape)}.")
    _validate_inputs(ref_latent, clip_embeds, num_frames, tuple(pose_images.shape[1:3]), steps, float(cfg))
    steps = int(steps)
    cfg = float(cfg)
    do_cfg = cfg > 1.0
    n_batch = 2 if do_cfg else 1

    windows = uniform_context_windows(num_frames, context_frames, context_overlap)
    counts = frame_coverage(windows, num_frames)
    if min(counts) < 1:  # cannot happen with the closed-loop schedule; guards future schedules
        raise ValueError("The context windows leave some frames uncovered.")
    total = steps * len(windows)

    sched = scheduler if scheduler is not None else make_scheduler()
    timesteps = sched.set_timesteps(steps)

    h, w = int(ref_latent.shape[2]), int(ref_latent.shape[3])
    shape = (1, 4, num_frames, h, w)
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}.")
        latents = noise.to(device=device, dtype=torch.float32)
    else:
        latents = make_noise(shape, seed, device)
    latents = latents * sched.init_noise_sigma

    # Conditioning: rows [uncond, cond] with CFG, [cond] without.
    cond_states = clip_embeds.to(device=device, dtype=dtype).unsqueeze(1)  # (1, 1, D)
    if do_cfg:
        encoder_hidden_states = torch.cat([torch.zeros_like(cond_states), cond_states], dim=0)
        reference_mask = torch.tensor([False, True])  # CPU: the UNet reads it on the host, no device sync
    else:
        encoder_hidden_states = cond_states
        reference_mask = torch.tensor([True])

    # The pose video stays on the CPU as uint8 (1.5 MB/frame at 512x512 instead of 3 MB of fp16 on the GPU);
    # each window's frames are converted on the device when its pose features are computed.
    pose_u8 = torch.from_numpy(np.ascontiguousarray(to_uint8_frames(pose_images)))  # (F, H, W, 3)

    logger.info(
        "AniPortrait sampling: %d frames %dx%d, %d steps, cfg %.3g, %d context windows of <= %d frames",
        num_frames, 8 * w, 8 * h, steps, cfg, len(windows), context_frames,
    )

    ref_in = ref_latent.to(device=device, dtype=dtype).repeat(n_batch, 1, 1, 1)
    reference_features = run_reference(reference_unet, ref_in, encoder_hidden_states)
    # only the cond row reads reference tokens (the uncond row runs plain self-attention): keep that row,
    # so the UNet projects keys/values of one reference row instead of two at every call
    reference_features = [f[-1:] for f in reference_features]

    counter = torch.tensor(counts, device=device, dtype=torch.float32).view(1, 1, num_frames, 1, 1)
    window_cpu = [torch.tensor(win, dtype=torch.long) for win in windows]
    window_index = [win.to(device) for win in window_cpu]
    # The pose guider's input for a window is the same at every step, so its output is too: compute it once
    # per window (the first step) and reuse it (one copy of the identical CFG rows is kept).
    pose_cache: dict[int, list[torch.Tensor]] = {}
    cache_bytes_left = pose_cache_budget_bytes
    preview = latents
    done = 0
    for t in timesteps.tolist():
        t_tensor = torch.tensor(t, dtype=torch.int64, device=device)
        noise_pred = torch.zeros((n_batch, *latents.shape[1:]), device=device, dtype=torch.float32)
        for wi, idx in enumerate(window_index):
            if interrupt_check is not None and interrupt_check():
                raise SamplingInterrupted("Sampling was interrupted.")
            model_in = latents.index_select(2, idx).to(dtype).repeat(n_batch, 1, 1, 1, 1)
            if wi in pose_cache:
                pose_features = [f.to(device, non_blocking=True).expand(n_batch, *f.shape[1:]) for f in pose_cache[wi]]
            else:
                frames = pose_u8.index_select(0, window_cpu[wi]).to(device, non_blocking=True)
                pose_in = prepare_pose_tensor(frames, 8 * h, 8 * w).to(dtype).repeat(n_batch, 1, 1, 1, 1)
                pose_features = _run_pose_guider(pose_guider, pose_in)
                if cache_pose_features:
                    kept = _compact_rows(pose_features)
                    size = sum(f.numel() * f.element_size() for f in kept)
                    if size > cache_bytes_left:  # long videos: park the rest of the cache in host memory
                        kept = [f.to(cache_overflow_device) for f in kept]
                    else:
                        cache_bytes_left -= size
                    pose_cache[wi] = kept
            pred = video_unet(
                model_in,
                t_tensor,
                encoder_hidden_states,
                pose_features,
                reference_features,
                reference_mask,
            )
            noise_pred.index_add_(2, idx, pred.float())
            done += 1
            if callback is not None:
                callback(done, total, preview)
        noise_pred = noise_pred / counter
        if do_cfg:
            uncond, cond = noise_pred.chunk(2)
            guided = uncond + cfg * (cond - uncond)
        else:
            guided = noise_pred
        out = sched.step(guided, t, latents)
        latents = out.prev_sample
        preview = out.pred_original_sample
    return latents


def _compact_rows(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Keep one row of batch-duplicated features (rows bitwise equal), else the features unchanged."""
    if all(f.shape[0] == 1 or all(torch.equal(f[0], f[r]) for r in range(1, f.shape[0])) for f in features):
        return [f[:1] for f in features]
    return list(features)


def _run_pose_guider(pose_guider: torch.nn.Module, pose_in: torch.Tensor) -> list[torch.Tensor]:
    """PoseGuider on one window (B, 3, f, H, W); turns the train-mode BatchNorm crash into a clear error."""
    try:
        return pose_guider(pose_in)
    except ValueError as err:
        if "more than 1 value per channel" in str(err):
            raise ValueError(
                "The pose guider's batch-statistics BatchNorm needs more than one value per channel: "
                "use a larger width/height (> 64 px) or more frames."
            ) from err
        raise
