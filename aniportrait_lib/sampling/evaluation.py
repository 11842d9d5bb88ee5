"""The Lmk2Video networks as one denoiser that a host's sampler calls per model evaluation.

The pack's own sampler (:mod:`.sampler`) drives the loop itself. A host sampler (ComfyUI's KSampler with its
samplers, schedulers, context windows and caches) drives it instead and calls the network once per model
evaluation with a batch of frames; :class:`VideoDenoiser` turns such a call into the AniPortrait computation:

* the batch holds one row per conditioning chunk, each a window of ``f`` frames (with CFG a host typically
  sends ``[cond, uncond]`` or ``[uncond, cond]`` rows of the same frames);
* the ReferenceNet runs once per distinct reference (latent + CLIP context) at t = 0 and its features are
  kept until :meth:`VideoDenoiser.reset` (the host calls it when a sampling run ends), so every step and every
  window reuses them, as in the original;
* chunks whose ``use_reference`` is 0 (the original's unconditional branch) attend without reference tokens;
* the PoseGuider runs on the frames of the current window (its batch-statistics BatchNorm sees exactly those
  frames, as in the original), drawn from a :class:`~.pose_source.PoseFrames` source only when needed and
  kept per window within a memory budget (:class:`~.pose_features.PoseFeatureCache`);
* the video UNet predicts v for every chunk; the result has the layout of the input.

Shapes: ``x (chunks, 4, f, h, w)`` sampler-scale latents (VAE latents * 0.18215) in the model dtype, the
layout of core's video latents (frames on dim 2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from .pose_features import PoseFeatureCache
from .pose_source import PoseFrames
from .sampler import run_reference
from ..networks.attention import ReferenceFeatures

__all__ = ["VideoDenoiser", "DenoiserCall"]

#: ``torch.compiler.disable`` (torch >= 2.1): keeps host-side Python out of compiled graphs; a no-op before that
_outside_compiled_graphs = getattr(getattr(torch, "compiler", None), "disable", lambda function: function)


@dataclass
class DenoiserCall:
    """One model evaluation, as the host hands it over.

    Attributes:
        x: (chunks, 4, f, h, w) noisy latents at the model's input scale, model dtype (one row per conditioning
            chunk; with CFG a host typically sends the cond and uncond chunks of the same frames).
        timestep: (chunks,) or scalar training timestep(s) (0..999, may be fractional).
        context: (chunks, L, D) CLIP context (the chunk's image embedding; zeros for the unconditional branch).
        reference_latent: (chunks, 4, h, w) sampler-scale reference latent.
        use_reference: (chunks,) 1 where the chunk reads the reference features, 0 where it runs plain
            self-attention (the original's unconditional branch).
        poses: the clip's pose frames (all frames of the clip).
        frames: the clip frame index of each of the f frames (a context window); None = frames 0..f-1,
            which must then be the whole clip.
    """

    x: torch.Tensor
    timestep: torch.Tensor
    context: torch.Tensor
    reference_latent: torch.Tensor
    use_reference: torch.Tensor
    poses: PoseFrames
    frames: Optional[Sequence[int]] = None


@dataclass
class _ReferenceEntry:
    latent: torch.Tensor
    context: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


class VideoDenoiser(nn.Module):
    """ReferenceNet + PoseGuider + video UNet behind one ``predict(call) -> v`` (see the module docstring).

    Args:
        reference_unet, video_unet, pose_guider: the loaded networks (:mod:`.loading`).
        pose_cache_bytes: memory the per-window pose features may take on the compute device, and as much again
            on the host; windows beyond both are computed again when they come back (same numbers).
    """

    def __init__(self, reference_unet: nn.Module, video_unet: nn.Module, pose_guider: nn.Module,
                 pose_cache_bytes: int = 1 << 30) -> None:
        super().__init__()
        self.reference_unet, self.video_unet, self.pose_guider = reference_unet, video_unet, pose_guider
        self.pose_cache_bytes = int(pose_cache_bytes)
        self._references: list[_ReferenceEntry] = []
        self._pose_caches: dict[tuple, PoseFeatureCache] = {}
        self.reference_runs = 0  # ReferenceNet evaluations since construction (for tests and logs)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (the video UNet's first parameter)."""
        return next(self.video_unet.parameters()).dtype

    def reset(self) -> None:
        """Forget the reference and pose features (call when a sampling run ends)."""
        self._references.clear()
        self._pose_caches.clear()

    # ------------------------------------------------------------------------------------------------ steps
    def _frames_of(self, call: DenoiserCall, frames_per_chunk: int) -> torch.Tensor:
        """CPU long tensor of the clip frames in this call, checked against the latent and the pose source."""
        total = call.poses.num_frames
        if call.frames is None:
            if frames_per_chunk != total:
                raise ValueError(
                    f"the latent has {frames_per_chunk} frames but the pose input has {total}: make the empty "
                    f"latent with the same AniPortrait conditioning node, one latent per pose frame."
                )
            return torch.arange(total)
        frames = torch.as_tensor(list(call.frames), dtype=torch.long)
        if frames.numel() != frames_per_chunk:
            raise ValueError(f"the context window lists {frames.numel()} frames but the model got {frames_per_chunk}.")
        if int(frames.max()) >= total:
            raise ValueError(
                f"the context window reaches frame {int(frames.max())} but the pose input has {total} frames: make "
                f"the empty latent with the same AniPortrait conditioning node."
            )
        return frames

    def _pose_features(self, poses: PoseFrames, frames: torch.Tensor, size: tuple[int, int],
                       device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """PoseGuider features of one window, one batch row: list of (1, C_k, f, h_k, w_k)."""
        key = (id(poses), size, str(device), dtype)
        cache = self._pose_caches.get(key)
        if cache is None or cache.poses is not poses:
            cache = PoseFeatureCache(self.pose_guider, poses, size, 1, device, dtype, True,
                                     self.pose_cache_bytes, "cpu", self.pose_cache_bytes)
            self._pose_caches[key] = cache
        return cache.features(tuple(frames.tolist()), frames)

    def _reference_features(self, latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """ReferenceNet features (one row each) for one reference latent (1, 4, h, w) and context (1, L, D),
        computed at most once per distinct pair until :meth:`reset`."""
        for entry in self._references:
            if entry.latent.shape == latent.shape and entry.context.shape == context.shape \
                    and torch.equal(entry.latent, latent) and torch.equal(entry.context, context):
                return entry.features
        features = run_reference(self.reference_unet, latent, context)
        self.reference_runs += 1
        self._references.append(_ReferenceEntry(latent.clone(), context.clone(), ReferenceFeatures(features)))
        return self._references[-1].features

    def _reference_for_chunks(self, call: DenoiserCall, use: torch.Tensor) -> Optional[list[torch.Tensor]]:
        """Features for the chunks that read the reference: one row when they share one reference (the usual
        case), else one row per chunk (rows of chunks without reference are never read)."""
        if not bool(use.any()):
            return None
        chosen = [c for c in range(use.numel()) if bool(use[c])]
        per_chunk = {c: self._reference_features(call.reference_latent[c:c + 1], call.context[c:c + 1]) for c in chosen}
        if len({id(f) for f in per_chunk.values()}) == 1:
            return per_chunk[chosen[0]]
        fallback = per_chunk[chosen[0]]
        return [torch.cat([per_chunk.get(c, fallback)[i] for c in range(use.numel())]) for i in range(len(fallback))]

    # ------------------------------------------------------------------------------------------------ call
    @_outside_compiled_graphs
    def prepare(self, call: DenoiserCall) -> tuple:
        """The video UNet's arguments for ``call``: host-side work (pose frames drawn and cached, the reference
        cache looked up, masks read back), kept out of ``torch.compile`` graphs so that compiling the model
        (e.g. core's TorchCompileModel) compiles the networks and leaves this plain Python."""
        x = call.x
        if x.ndim != 5:
            raise ValueError(f"the AniPortrait model takes video latents (batch, 4, frames, h, w), got shape "
                             f"{tuple(x.shape)}: make the latent with AniPortrait Video Conditioning.")
        chunks, f, h, w = int(x.shape[0]), int(x.shape[2]), int(x.shape[3]), int(x.shape[4])
        frames = self._frames_of(call, f)
        use = call.use_reference.reshape(chunks, -1)[:, 0].detach().to("cpu").float() > 0.5
        timestep = torch.as_tensor(call.timestep, device=x.device).reshape(-1)
        pose = self._pose_features(call.poses, frames, (8 * h, 8 * w), x.device, x.dtype)
        pose = [p.expand(chunks, *p.shape[1:]) for p in pose]
        reference = self._reference_for_chunks(call, use)
        return x, timestep, call.context, pose, reference, use if reference is not None else None

    @torch.no_grad()
    def predict(self, call: DenoiserCall) -> torch.Tensor:
        """v prediction for every chunk of ``call.x``: (chunks, 4, f, h, w), dtype of the video UNet's output."""
        return self.video_unet(*self.prepare(call))

