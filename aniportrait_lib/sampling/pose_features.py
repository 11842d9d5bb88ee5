"""Per-window PoseGuider features for the stage-2 sampler, computed once per context window.

The pose guider's input for a window (that window's pose frames, CFG-duplicated) is the same at every DDIM
step, and so is its output, even with the batch-statistics BatchNorm (the batch is the same). The cache
computes each window's features at the first step and reuses them; one copy of the bitwise-equal CFG rows
is kept and expanded back when used.

The pose frames come from a :class:`~.pose_source.PoseFrames` source and are fetched one window at a time,
when that window's features are first computed (landmarks are rendered right then, so no clip-long batch of
pose images is needed).
"""
from __future__ import annotations

from typing import Any, Union

import torch

from .pose_source import PoseFrames, as_pose_frames
from .preprocess import prepare_pose_tensor

__all__ = ["PoseFeatureCache", "run_pose_guider"]


def run_pose_guider(pose_guider: torch.nn.Module, pose_in: torch.Tensor) -> list[torch.Tensor]:
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


def _compact_rows(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Keep one row of batch-duplicated features (rows bitwise equal), else the features unchanged."""
    if all(f.shape[0] == 1 or all(torch.equal(f[0], f[r]) for r in range(1, f.shape[0])) for f in features):
        return [f[:1] for f in features]
    return list(features)


class PoseFeatureCache:
    """Pose features per context window.

    The pose frames stay on the host (uint8, or landmarks drawn per window); a window's frames are fetched
    from the source, moved and converted on the device when its features are computed.

    Args:
        pose_guider: the PoseGuider module (its BatchNorm mode is left as it is).
        poses: a :class:`~.pose_source.PoseFrames` source, or uint8 (F, H, W, 3) pose frames (channels as
            stored), wrapped by :func:`~.pose_source.as_pose_frames`.
        size: (height, width) in pixels the frames are resized to (nearest, like the original).
        batch: CFG batch size (2 with guidance, else 1); the guider sees the window repeated this often.
        device, dtype: where and in which dtype the guider runs.
        enabled: False recomputes the features at every call (the original's behaviour; same numbers).
        budget_bytes: device memory the cache may use (one window is about 63 MB at 512x512 fp16);
            windows beyond it are parked on ``overflow_device`` and copied back when used, so VRAM does
            not grow with the video length.
        overflow_budget_bytes: memory the parked windows may use on ``overflow_device``; windows beyond both
            budgets are not kept and are computed again at every step (same numbers), so host memory does
            not grow with the video length either.
    """

    def __init__(self, pose_guider: torch.nn.Module, poses: Union[PoseFrames, Any], size: tuple[int, int], batch: int,
                 device: torch.device, dtype: torch.dtype, enabled: bool = True, budget_bytes: int = 1 << 30,
                 overflow_device: Union[str, torch.device] = "cpu", overflow_budget_bytes: int = 1 << 30) -> None:
        self.pose_guider, self.poses, self.size, self.batch = pose_guider, as_pose_frames(poses), size, batch
        self.device, self.dtype, self.enabled = device, dtype, enabled
        self.bytes_left, self.overflow_device = budget_bytes, overflow_device
        self.overflow_bytes_left = overflow_budget_bytes
        self._cache: dict[int, list[torch.Tensor]] = {}

    def features(self, key: int, frames: torch.Tensor) -> list[torch.Tensor]:
        """The guider's features for window ``key`` (frame indices ``frames``, a CPU long tensor):
        a list of (batch, C_k, f, H_k, W_k) tensors on the device. The window's frames are fetched from the
        source only when the features are computed (first use, or every use when caching is disabled)."""
        if key in self._cache:
            return [f.to(self.device, non_blocking=True).expand(self.batch, *f.shape[1:]) for f in self._cache[key]]
        window = torch.from_numpy(self.poses.frames(frames)).to(self.device)  # uint8 (f, H, W, 3)
        pose_in = prepare_pose_tensor(window, *self.size).to(self.dtype).repeat(self.batch, 1, 1, 1, 1)
        features = run_pose_guider(self.pose_guider, pose_in)
        if self.enabled:
            self._store(key, _compact_rows(features))
        return features

    def _store(self, key: int, kept: list[torch.Tensor]) -> None:
        size = sum(f.numel() * f.element_size() for f in kept)
        if size <= self.bytes_left:
            self.bytes_left -= size
        elif size <= self.overflow_bytes_left:  # long videos: park windows in host memory
            self.overflow_bytes_left -= size
            kept = [f.to(self.overflow_device) for f in kept]
        else:  # both budgets spent: recompute this window when it comes again (memory stays flat)
            return
        self._cache[key] = kept
