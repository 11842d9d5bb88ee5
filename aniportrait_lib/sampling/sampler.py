"""The pack's own sampler: the original's DDIM over context windows, calling :class:`~.evaluation.Lmk2VideoModel`.

Semantics of the original ``Pose2VideoPipeline.__call__`` (``src/pipelines/pipeline_pose2vid_long.py``):

1. CFG is used when ``cfg > 1``: the model rows are ``[negative, positive]``. The negative branch of the original
   gets a ZERO CLIP embedding AND no reference features (plain self-attention), but the same pose features.
   With ``cfg == 1`` only the positive rows are computed.
2. The ReferenceNet runs ONCE per video (t = 0, CLIP context); its per-block features are reused for every step
   and window (:meth:`~.evaluation.Lmk2VideoModel.sampling_run`).
3. Each DDIM step covers the clip with the uniform, wrap-around context windows
   (:func:`~.context_windows.uniform_context_windows`), ``window_batch`` windows per model call. Per window the
   pose guider runs on that window's pose frames (computed at the first step and reused) and the video UNet
   predicts v. Predictions are summed per frame and divided by the per-frame window count, THEN CFG
   ``uncond + cfg * (cond - uncond)`` is applied and one DDIM step is taken.

The one entry point is :func:`sample_video`: :func:`check_inputs` -> :func:`estimate_memory` -> the host's
``load`` (pre-flight, weights onto the device) -> noise -> :func:`denoise` over :func:`plan_windows`.
:func:`sample_latent` returns the same in the host's latent space (raw VAE latents).

Progress, previews and cancelling share one callback, ``progress(done, total, preview_latent=None)``:
called after every window evaluation (``done`` = finished evaluations, 1..total); once per DDIM step it
carries ``preview_latent``, the (1, 4, h, w) middle frame of that step's x0 prediction in sampler scale
(the scaled SD1.5 latent space that latent previewers such as TAESD decode). To cancel, raise from it:
nothing else is checked.

Latent scale: the latents this module works in are VAE latents multiplied by :data:`LATENT_SCALE` (0.18215),
like the original's ``ref_image_latents`` and final latents; :func:`to_vae_space` converts.

Differences from the original (deliberate): the latents and the window accumulation stay in float32
whatever the model dtype (the original keeps them in the model dtype, fp16 on CUDA), the initial
noise is drawn on a CPU generator so a seed gives the same video on every device, and without CFG
the window sum is also divided by the per-frame count (the original forgets this when
``guidance_scale <= 1``, which doubles the overlapping frames' predictions).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .compiling import Backend
from .context_windows import frame_coverage, uniform_context_windows
from .evaluation import Lmk2VideoModel, ModelCall
from .pose_source import PoseFrames, as_pose_frames
from .reference import LATENT_SCALE
from .scheduler import AniPortraitDDIM, make_scheduler

logger = logging.getLogger(__name__)

__all__ = [
    "LATENT_SCALE", "Progress", "Branch", "VideoConditioning", "check_inputs", "check_size", "activation_bytes",
    "check_latent", "estimate_memory", "plan_windows", "window_groups", "make_noise", "denoise",
    "sample_video", "sample_latent", "to_vae_space",
]

#: ``progress(done, total, preview_latent=None)``; see the module docstring.
Progress = Callable[..., None]
#: ``load(activation_bytes) -> device``: the host's pre-flight check and weight loading before sampling
Load = Callable[[int], torch.device]


# ----------------------------------------------------------------------------------------------------------------
# latent spaces
# ----------------------------------------------------------------------------------------------------------------
def to_vae_space(latents: torch.Tensor) -> torch.Tensor:
    """Sampler latents (scaled by 0.18215) -> raw VAE latents (ComfyUI ``LATENT`` space)."""
    return latents / LATENT_SCALE


# ----------------------------------------------------------------------------------------------------------------
# conditioning
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Branch:
    """One CFG branch: what its model rows read besides the latents and the pose features.

    Attributes:
        context: (1, L, D) CLIP context (the reference's image embedding; zeros for the original's negative).
        use_reference: whether its rows attend to the reference features (False: the original's negative).
    """

    context: torch.Tensor
    use_reference: bool


@dataclass
class VideoConditioning:
    """Everything the video is conditioned on.

    Attributes:
        reference_latent: (1, 4, h, w) sampler-scale reference latent (VAE latent mean * 0.18215).
        poses: the clip's pose frames (one output frame each).
        positive, negative: the two CFG branches (the negative is not evaluated when ``cfg == 1``).
    """

    reference_latent: torch.Tensor
    poses: PoseFrames
    positive: Branch
    negative: Branch

    @classmethod
    def of_reference(cls, reference_latent: torch.Tensor, clip_embeds: torch.Tensor,
                     poses: Union[PoseFrames, np.ndarray, torch.Tensor, object]) -> "VideoConditioning":
        """The original's conditioning: positive = the CLIP embedding with the reference, negative = zeros without.

        Args:
            reference_latent: (1, 4, h, w) sampler scale. clip_embeds: (1, D) or (1, 1, D) CLIP ``image_embeds``.
            poses: pose frames (uint8 (F, H, W, 3), landmarks or any :class:`~.pose_source.PoseFrames`).
        """
        clip_embeds = torch.as_tensor(clip_embeds)
        if clip_embeds.shape[0] != 1 or clip_embeds.ndim not in (2, 3) or clip_embeds.numel() != clip_embeds.shape[-1]:
            raise ValueError(f"clip_embeds must have shape (1, D) (the CLIP image_embeds), got {tuple(clip_embeds.shape)}.")
        context = clip_embeds.reshape(1, 1, -1)
        if reference_latent.ndim != 4 or reference_latent.shape[0] != 1 or reference_latent.shape[1] != 4:
            raise ValueError(f"the reference latent must have shape (1, 4, H/8, W/8), got {tuple(reference_latent.shape)}.")
        return cls(reference_latent, as_pose_frames(poses), Branch(context, True),
                   Branch(torch.zeros_like(context), False))

    def branches(self, cfg: float) -> list[Branch]:
        """The model rows' branches in order: [negative, positive] with guidance, [positive] without."""
        return [self.negative, self.positive] if cfg > 1.0 else [self.positive]


# ----------------------------------------------------------------------------------------------------------------
# step 1: check inputs
# ----------------------------------------------------------------------------------------------------------------
def check_inputs(width: int, height: int, num_frames: int, steps: int, cfg: float, context_frames: int,
                 context_overlap: int, window_batch: int = 1) -> None:
    """Refuse settings the sampler cannot run, with one sentence that says what to change.

    Args:
        width, height: video size in pixels (multiples of 8: the VAE and UNets work at 1/8 size).
        num_frames: number of pose frames (= output frames).
        steps: DDIM steps. cfg: guidance scale (>= 1). context_frames, context_overlap: window length/overlap.
        window_batch: context windows per model call (>= 1).
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
    if int(window_batch) < 1:
        raise ValueError(f"window_batch must be at least 1, got {window_batch}.")


def check_latent(latent: torch.Tensor, conditioning: VideoConditioning) -> None:
    """Refuse a starting latent that is not the empty video latent of this conditioning (ValueError, one sentence):
    the sampler starts from noise, so the latent only sets the video's length and size."""
    frames = conditioning.poses.num_frames
    h, w = (int(s) for s in conditioning.reference_latent.shape[-2:])
    if latent.ndim != 5 or tuple(latent.shape) != (1, 4, frames, h, w):
        raise ValueError(f"latent_image has shape {tuple(latent.shape)} but the conditioning makes (1, 4, {frames}, {h}, "
                         f"{w}): connect the latent of the same AniPortrait Video Conditioning node.")
    if bool(latent.any()):
        raise ValueError("AniPortrait Sampler starts from noise and ignores a latent's content: connect the empty latent "
                         "of AniPortrait Video Conditioning (to refine a video, use KSampler with denoise below 1).")


def check_size(width: int, height: int, num_frames: int) -> None:
    """Refuse a video size the VAE cannot encode or an empty pose input (ValueError, one sentence)."""
    if width % 8 or height % 8:
        raise ValueError(f"width and height must be multiples of 8 (got {width}x{height}): the VAE works at 1/8 "
                         f"size, so use e.g. {max(8, width // 8 * 8)}x{max(8, height // 8 * 8)}.")
    if width < 8 or height < 8:
        raise ValueError(f"width and height must be at least 8 pixels (got {width}x{height}).")
    if num_frames < 1:
        raise ValueError("the pose input holds no frames; connect at least one pose image (one per output frame).")


# ----------------------------------------------------------------------------------------------------------------
# memory estimate, windows
# ----------------------------------------------------------------------------------------------------------------
def activation_bytes(rows: int, frames: int, width: int, height: int, dtype: torch.dtype) -> int:
    """Bytes of activations of one video-UNet call on ``rows`` windows of ``frames`` frames at ``width`` x ``height``
    pixels, besides the weights: rows x frames x the UNet's widest feature maps (320 channels at 1/8 size) x a factor
    64 for the attention/ResNet intermediates alive at once."""
    elem = torch.finfo(dtype).bits // 8
    return int(rows * frames * (height // 8) * (width // 8) * 320 * 64 * elem)


def estimate_memory(num_frames: int, width: int, height: int, cfg: float, context_frames: int,
                    dtype: torch.dtype, window_batch: int = 1, context_overlap: int = 4) -> int:
    """Bytes of activations the sampler's largest model call needs (for the host's model loader):
    :func:`activation_bytes` of CFG rows x windows per call, each ``min(num_frames, context_frames)`` long."""
    windows = max(1, min(int(window_batch), len(uniform_context_windows(num_frames, context_frames, context_overlap))))
    rows = (2 if cfg > 1.0 else 1) * windows
    return activation_bytes(rows, min(num_frames, context_frames), width, height, dtype)


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


# ----------------------------------------------------------------------------------------------------------------
# noise
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
# denoise loop
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """What every step of one run reads, on the compute device in the model dtype: the model, its rows'
    conditioning per branch (:meth:`VideoConditioning.branches`) and the windows.

    Attributes:
        contexts: (B, L, D) CLIP context of each branch. use_reference: CPU (B,) 1.0 where the branch reads the
            reference. reference_latent: (1, 4, h, w) sampler scale. poses: the pose frames.
    """

    model: Lmk2VideoModel
    contexts: torch.Tensor
    use_reference: torch.Tensor
    reference_latent: torch.Tensor
    poses: PoseFrames
    plan: WindowPlan
    groups: list[list[int]]
    dtype: torch.dtype

    @classmethod
    def prepare(cls, model: Lmk2VideoModel, conditioning: VideoConditioning, cfg: float, plan: WindowPlan,
                window_batch: int, device: torch.device, dtype: torch.dtype) -> "_Run":
        branches = conditioning.branches(cfg)
        return cls(model, torch.cat([b.context for b in branches]).to(device, dtype),
                   torch.tensor([float(b.use_reference) for b in branches]),
                   conditioning.reference_latent.to(device, dtype), conditioning.poses, plan,
                   window_groups(plan, window_batch), dtype)

    @property
    def rows(self) -> int:
        """Branches per window: 2 with guidance, else 1."""
        return int(self.contexts.shape[0])


def _predict_group(run: _Run, latents: torch.Tensor, t: torch.Tensor, group: list[int]) -> torch.Tensor:
    """v prediction of the windows in ``group`` in one model call: (B, n, 4, f, h, w) for B branches, n windows.

    Rows go in as [negative windows..., positive windows...]."""
    rows, n = run.rows, len(group)
    windows = torch.cat([latents.index_select(2, run.plan.index[wi]) for wi in group])  # (n, 4, f, h, w)
    call = ModelCall(
        x=windows.to(run.dtype).repeat(rows, 1, 1, 1, 1), timestep=t,
        context=run.contexts.repeat_interleave(n, 0), reference_latent=run.reference_latent.expand(rows * n, -1, -1, -1),
        use_reference=run.use_reference.repeat_interleave(n), poses=run.poses,
        frames=[run.plan.frames[wi] for wi in group] * rows,
    )
    pred = run.model.predict(call)
    return pred.view(rows, n, *pred.shape[1:])


def _predict_step(run: _Run, latents: torch.Tensor, t: int, on_window: Callable[[bool], None]) -> torch.Tensor:
    """Window-averaged v prediction of one step: float32 (B, 4, F, h, w), rows as :meth:`VideoConditioning.branches`.

    ``on_window(last)`` is called after each window evaluation (``last`` for the step's final window).
    """
    t_tensor = torch.tensor(t, dtype=torch.int64, device=latents.device)
    noise_pred = torch.zeros((run.rows, *latents.shape[1:]), device=latents.device, dtype=torch.float32)
    n_windows = len(run.plan.index)
    for group in run.groups:
        pred = _predict_group(run, latents, t_tensor, group)
        for j, wi in enumerate(group):
            noise_pred.index_add_(2, run.plan.index[wi], pred[:, j].float())
            on_window(wi == n_windows - 1)
    return noise_pred / run.plan.counts


def _guide(noise_pred: torch.Tensor, cfg: float) -> torch.Tensor:
    """CFG ``uncond + cfg * (cond - uncond)`` on rows [negative, positive]; a single row is returned as it is."""
    if noise_pred.shape[0] == 1:
        return noise_pred
    uncond, cond = noise_pred.chunk(2)
    return uncond + cfg * (cond - uncond)


def denoise(run: _Run, latents: torch.Tensor, scheduler: AniPortraitDDIM, timesteps: Sequence[int], cfg: float,
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

        guided = _guide(_predict_step(run, latents, t, on_window), cfg)
        out = scheduler.step(guided, t, latents)
        latents = out.prev_sample
        if progress is not None:
            x0 = out.pred_original_sample
            progress(done, total, x0[:, :, x0.shape[2] // 2])
    return latents


# ----------------------------------------------------------------------------------------------------------------
# the whole sampler
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_video(
    model: Lmk2VideoModel, conditioning: VideoConditioning, *,
    steps: int = 25, cfg: float = 3.5, seed: Union[int, torch.Generator] = 42, context_frames: int = 16,
    context_overlap: int = 4, window_batch: int = 1, compile_backend: Optional[Backend] = None,
    load: Optional[Load] = None, dtype: Optional[torch.dtype] = None, progress: Optional[Progress] = None,
    noise: Optional[torch.Tensor] = None, scheduler: Optional[AniPortraitDDIM] = None,
    latent: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Denoise a video conditioned on a reference and pose frames: check, estimate, load, sample.

    Args:
        model: the networks (their train/eval modes are left as they are: the pose guider's
            ``batch_norm_mode='batch_stats'`` reproduces the original's train-mode BatchNorm).
        conditioning: reference latent, pose frames and the two branches (:meth:`VideoConditioning.of_reference`
            for the original's). Pose frames of another size than 8x the latent's are resized, nearest
            neighbour, like the original.
        steps: DDIM steps (>= 1). cfg: guidance scale; 1.0 skips the negative branch entirely.
        seed: integer seed (CPU generator, device independent) or a ``torch.Generator``.
        context_frames, context_overlap: context-window length and overlap in frames.
        window_batch: context windows per model call (>= 1): more use the device better at that many times the
            activation memory; the result is the same up to float rounding.
        compile_backend: ``torch.compile`` backend for the video UNet's heavy blocks during this run
            (:meth:`~.evaluation.Lmk2VideoModel.compiled`), or None.
        load: ``load(activation_bytes) -> device``: the host's pre-flight check and weight loading, given the
            :func:`estimate_memory` of this run; default: the video UNet's parameter device.
        dtype: model input dtype (default: the video UNet's parameter dtype); latents stay float32.
        progress: ``progress(done, total, preview_latent=None)`` (module docstring); it cancels by raising.
        noise: optional initial noise (1, 4, F, h, w) instead of drawing it from ``seed``.
        scheduler: optional scheduler instance (default: :func:`make_scheduler`).
        latent: the host's empty video latent, checked against the conditioning (:func:`check_latent`).

    Returns:
        float32 latents (1, 4, F, H/8, W/8) on the compute device, in sampler scale (raw VAE latents * 0.18215).
    """
    poses, cfg = conditioning.poses, float(cfg)
    h, w = int(conditioning.reference_latent.shape[2]), int(conditioning.reference_latent.shape[3])
    check_inputs(8 * w, 8 * h, poses.num_frames, steps, cfg, context_frames, context_overlap, window_batch)
    if latent is not None:
        check_latent(latent, conditioning)
    dtype = dtype if dtype is not None else model.dtype
    memory = estimate_memory(poses.num_frames, 8 * w, 8 * h, cfg, context_frames, dtype, window_batch, context_overlap)
    device = load(memory) if load is not None else model.device

    plan = plan_windows(poses.num_frames, context_frames, context_overlap, device)
    sched = scheduler if scheduler is not None else make_scheduler()
    timesteps = sched.set_timesteps(int(steps)).tolist()
    latents = _initial_latents((1, 4, poses.num_frames, h, w), seed, noise, device, sched.init_noise_sigma)
    logger.info("AniPortrait sampling: %d frames %dx%d, %d steps, cfg %.3g, %d context windows of <= %d frames",
                poses.num_frames, 8 * w, 8 * h, len(timesteps), cfg, len(plan.index), context_frames)
    run = _Run.prepare(model, conditioning, cfg, plan, int(window_batch), device, dtype)
    with model.sampling_run(), model.compiled(compile_backend):
        return denoise(run, latents, sched, timesteps, cfg, progress)


def sample_latent(model: Lmk2VideoModel, conditioning: VideoConditioning, **settings) -> torch.Tensor:
    """:func:`sample_video` in the host's latent space: raw VAE latents (1, 4, F, h, w), float32."""
    return to_vae_space(sample_video(model, conditioning, **settings))
