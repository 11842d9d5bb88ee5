"""One evaluation of AniPortrait's Lmk2Video networks: ReferenceNet + PoseGuider + video UNet as one v-prediction.

Both samplers call it: the pack's own DDIM loop (:mod:`.sampler`) and a host's sampler through the core MODEL
(``nodes/comfy_model.py`` calls :meth:`Lmk2VideoModel.predict` from ``apply_model``). It owns everything that is
the same for both:

* **rows**: a call holds one row per conditioning branch and context window, each a window of ``f`` frames. A
  row says which frames it covers, its CLIP context and whether it reads the reference. Rows are independent: a
  call with one row gives that row's result in a call with several (newer cores evaluate the conditional and the
  unconditional rows on different GPUs);
* **reference features**: the ReferenceNet runs at t = 0 once per distinct reference (latent + context) in a
  sampling run (:meth:`Lmk2VideoModel.sampling_run`) and its features serve every step and window, as in the
  original. Rows whose ``use_reference`` is 0 (the original's unconditional branch) attend without them;
* **pose features**: the PoseGuider runs on one window's frames (its batch-statistics BatchNorm sees exactly
  those frames, as in the original; the original's CFG copies of the same frames give the same statistics), drawn
  from a :class:`~.pose_source.PoseFrames` source only when needed and kept per window within a memory budget
  (:class:`~.pose_features.PoseFeatureCache`);
* **several windows per call**: rows of different windows go through the video UNet together;
* **compiled blocks**: :meth:`Lmk2VideoModel.compiled` runs the video UNet's heavy blocks ``torch.compile``d.

Shapes: ``x (rows, 4, f, h, w)`` sampler-scale latents (VAE latents * 0.18215) in the model dtype, frames on dim 2
(the layout of core's video latents).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import torch
from torch import nn

from ..networks.attention import ReferenceFeatures
from . import compiling
from .pose_features import PoseFeatureCache
from .pose_source import PoseFrames

__all__ = ["Lmk2VideoModel", "ModelCall", "run_reference"]

#: ``torch.compiler.disable`` (torch >= 2.1): keeps host-side Python out of compiled graphs; a no-op before that
_outside_compiled_graphs = getattr(getattr(torch, "compiler", None), "disable", lambda function: function)

#: frame indices of one window, or of each row's window
Frames = Union[Sequence[int], Sequence[Sequence[int]]]


@dataclass
class ModelCall:
    """One model evaluation.

    Attributes:
        x: (rows, 4, f, h, w) noisy latents at the model's input scale, model dtype.
        timestep: (rows,), (1,) or scalar training timestep(s) (0..999, may be fractional).
        context: (rows, L, D) CLIP context (the image embedding; zeros for the unconditional branch).
        reference_latent: (rows, 4, h, w) sampler-scale reference latent.
        use_reference: (rows,) 1 where the row reads the reference features, 0 where it runs plain
            self-attention (the original's unconditional branch).
        poses: the clip's pose frames (all frames of the clip).
        frames: the clip frame indices of the ``f`` frames: one window for every row, or one window per row;
            None = frames 0..f-1, which must then be the whole clip.
    """

    x: torch.Tensor
    timestep: torch.Tensor
    context: torch.Tensor
    reference_latent: torch.Tensor
    use_reference: torch.Tensor
    poses: PoseFrames
    frames: Optional[Frames] = None


@dataclass
class _ReferenceEntry:
    latent: torch.Tensor
    context: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def run_reference(reference_unet: nn.Module, latent: torch.Tensor, context: torch.Tensor) -> ReferenceFeatures:
    """The ReferenceNet once at t = 0: its per-block reference features (projected keys/values kept per run).

    Args:
        latent: (B, 4, h, w) sampler-scale reference latents. context: (B, 1, D) CLIP context.
    """
    timestep = torch.zeros((), dtype=torch.int64, device=latent.device)
    return ReferenceFeatures(reference_unet(latent, context, timestep=timestep))


class Lmk2VideoModel(nn.Module):
    """ReferenceNet + PoseGuider + video UNet behind one ``predict(call) -> v`` (see the module docstring).

    Args:
        reference_unet, video_unet, pose_guider: the loaded networks (:mod:`..networks.loading`).
        pose_cache_bytes: memory the per-window pose features may take on the compute device; windows beyond it
            are parked on the host.
        pose_cache_host_bytes: memory the parked windows may take on the host (default: ``pose_cache_bytes``);
            windows beyond both are computed again when they come back (same numbers), so memory stays flat.
    """

    def __init__(self, reference_unet: nn.Module, video_unet: nn.Module, pose_guider: nn.Module,
                 pose_cache_bytes: int = 1 << 30, pose_cache_host_bytes: Optional[int] = None) -> None:
        super().__init__()
        self.reference_unet, self.video_unet, self.pose_guider = reference_unet, video_unet, pose_guider
        self.pose_cache_bytes = int(pose_cache_bytes)
        self.pose_cache_host_bytes = int(pose_cache_bytes if pose_cache_host_bytes is None else pose_cache_host_bytes)
        self._references: list[_ReferenceEntry] = []
        self._pose_caches: dict[tuple, PoseFeatureCache] = {}
        self.reference_runs = 0  # ReferenceNet evaluations since construction (for logs and tests)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (the video UNet's first parameter; float32 for a UNet without parameters)."""
        return next((p.dtype for p in self.video_unet.parameters()), torch.float32)

    @property
    def device(self) -> torch.device:
        """Where the video UNet's weights are (the CPU for a UNet without parameters)."""
        return next((p.device for p in self.video_unet.parameters()), torch.device("cpu"))

    # ------------------------------------------------------------------------------------------------ run scope
    def reset(self) -> None:
        """Forget the reference and pose features."""
        self._references.clear()
        self._pose_caches.clear()

    @contextlib.contextmanager
    def sampling_run(self) -> Iterator["Lmk2VideoModel"]:
        """The features live for one sampling run: forgotten on entry and on exit (also on errors)."""
        self.reset()
        try:
            yield self
        finally:
            self.reset()

    @contextlib.contextmanager
    def compiled(self, backend: Optional[compiling.Backend], undo: str = "set compile to off") -> Iterator[int]:
        """Within the ``with`` body the video UNet's heavy blocks run ``torch.compile``d with ``backend``
        (:func:`~.compiling.compiled_blocks`); yields the number of compiled blocks (0 when ``backend`` is None).
        ``undo`` is the user's way back named in the one-sentence error of a failing compiler."""
        if backend is None:
            yield 0
            return
        with compiling.compiled_blocks(self.video_unet, backend, undo) as blocks:
            yield blocks

    # ------------------------------------------------------------------------------------------------ steps
    def _frames_of(self, call: ModelCall, rows: int, frames_per_row: int) -> list[tuple[int, ...]]:
        """The clip frames of each row, checked against the latent and the pose source."""
        total = call.poses.num_frames
        if call.frames is None:
            if frames_per_row != total:
                raise ValueError(
                    f"the latent has {frames_per_row} frames but the pose input has {total}: make the empty "
                    f"latent with the same AniPortrait Video Conditioning node, one latent per pose frame."
                )
            return [tuple(range(total))] * rows
        per_row = list(call.frames)
        if per_row and isinstance(per_row[0], (list, tuple, range, torch.Tensor)) and torch.as_tensor(per_row[0]).ndim:
            windows = [tuple(int(i) for i in w) for w in per_row]
            if len(windows) != rows:
                raise ValueError(f"the call lists windows for {len(windows)} rows but the model got {rows}.")
        else:
            windows = [tuple(int(i) for i in per_row)] * rows
        for window in windows:
            if len(window) != frames_per_row:
                raise ValueError(f"the context window lists {len(window)} frames but the model got {frames_per_row}.")
            if max(window) >= total:
                raise ValueError(
                    f"the context window reaches frame {max(window)} but the pose input has {total} frames: make "
                    f"the empty latent with the same AniPortrait Video Conditioning node."
                )
        return windows

    def _pose_cache(self, poses: PoseFrames, size: tuple[int, int], device: torch.device,
                    dtype: torch.dtype) -> PoseFeatureCache:
        key = (id(poses), size, str(device), dtype)
        cache = self._pose_caches.get(key)
        if cache is None or cache.poses is not poses:
            cache = PoseFeatureCache(self.pose_guider, poses, size, device, dtype, self.pose_cache_bytes, "cpu",
                                     self.pose_cache_host_bytes)
            self._pose_caches[key] = cache
        return cache

    def _pose_features(self, poses: PoseFrames, windows: list[tuple[int, ...]], size: tuple[int, int],
                       device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """PoseGuider features of every row: list of (rows, C_k, f, h_k, w_k); one guider run per distinct window."""
        cache = self._pose_cache(poses, size, device, dtype)
        per_window = {w: cache.features(w) for w in dict.fromkeys(windows)}
        if len(per_window) == 1:
            only = next(iter(per_window.values()))
            return [f.expand(len(windows), *f.shape[1:]) for f in only]
        levels = len(next(iter(per_window.values())))
        return [torch.cat([per_window[w][k] for w in windows]) for k in range(levels)]

    def _reference_features(self, latent: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """ReferenceNet features (one row each) for one reference latent (1, 4, h, w) and context (1, L, D),
        computed at most once per distinct pair in a sampling run."""
        for entry in self._references:
            if entry.latent.shape == latent.shape and entry.context.shape == context.shape \
                    and torch.equal(entry.latent, latent) and torch.equal(entry.context, context):
                return entry.features
        features = run_reference(self.reference_unet, latent, context)
        self.reference_runs += 1
        self._references.append(_ReferenceEntry(latent.clone(), context.clone(), features))
        return features

    def _reference_for_rows(self, call: ModelCall, use: torch.Tensor) -> Optional[list[torch.Tensor]]:
        """Features for the rows that read the reference: one row when they share one reference (the usual
        case), else one row per row of the call (rows without reference are never read)."""
        if not bool(use.any()):
            return None
        chosen = [r for r in range(use.numel()) if bool(use[r])]
        per_row = {r: self._reference_features(call.reference_latent[r:r + 1], call.context[r:r + 1]) for r in chosen}
        if len({id(f) for f in per_row.values()}) == 1:
            return per_row[chosen[0]]
        fallback = per_row[chosen[0]]
        return ReferenceFeatures([torch.cat([per_row.get(r, fallback)[i] for r in range(use.numel())])
                                  for i in range(len(fallback))])

    # ------------------------------------------------------------------------------------------------ call
    @_outside_compiled_graphs
    def prepare(self, call: ModelCall) -> tuple:
        """The video UNet's arguments for ``call``: host-side work (pose frames drawn and cached, the reference
        cache looked up, masks read back), kept out of ``torch.compile`` graphs so that compiling the model
        (e.g. core's TorchCompileModel) compiles the networks and leaves this plain Python."""
        x = call.x
        if x.ndim != 5:
            raise ValueError(f"the AniPortrait model takes video latents (batch, 4, frames, h, w), got shape "
                             f"{tuple(x.shape)}: make the latent with AniPortrait Video Conditioning.")
        rows, f, h, w = int(x.shape[0]), int(x.shape[2]), int(x.shape[3]), int(x.shape[4])
        windows = self._frames_of(call, rows, f)
        use = torch.as_tensor(call.use_reference).reshape(rows, -1)[:, 0].detach().to("cpu").float() > 0.5
        timestep = torch.as_tensor(call.timestep, device=x.device).reshape(-1)
        pose = self._pose_features(call.poses, windows, (8 * h, 8 * w), x.device, x.dtype)
        reference = self._reference_for_rows(call, use)
        return x, timestep, call.context, pose, reference, use if reference is not None else None

    @torch.no_grad()
    def predict(self, call: ModelCall) -> torch.Tensor:
        """v prediction for every row of ``call.x``: (rows, 4, f, h, w), dtype of the video UNet's output."""
        return self.video_unet(*self.prepare(call))
