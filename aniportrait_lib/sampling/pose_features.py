"""Per-window PoseGuider features, computed once per context window and sampling run.

A window's pose-guider input (that window's pose frames) is the same at every DDIM step, and so is its output,
even with the batch-statistics BatchNorm (the batch is the same). The cache computes each window's features the
first time the window comes and reuses them, within a memory budget on the device and another on the host; beyond
both a window is computed again when it comes back (same numbers), so memory stays flat in the video's length.

The pose frames come from a :class:`~.pose_source.PoseFrames` source and are fetched one window at a time,
when that window's features are computed (landmarks are drawn right then, so no clip-long batch of pose images is
needed).
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch

from .pose_source import PoseFrames, as_pose_frames
from .preprocess import prepare_pose_tensor

__all__ = ["PoseFeatureCache", "run_pose_guider"]


def run_pose_guider(pose_guider: torch.nn.Module, pose_in: torch.Tensor) -> list[torch.Tensor]:
    """PoseGuider on one window (1, 3, f, H, W); turns the train-mode BatchNorm crash into a clear error."""
    try:
        return pose_guider(pose_in)
    except ValueError as err:
        if "more than 1 value per channel" in str(err):
            raise ValueError(
                "The pose guider's batch-statistics BatchNorm needs more than one value per channel: "
                "use a larger width/height (> 64 px) or more frames."
            ) from err
        raise


class PoseFeatureCache:
    """Pose features per context window, one batch row each.

    Args:
        pose_guider: the PoseGuider module (its BatchNorm mode is left as it is).
        poses: a :class:`~.pose_source.PoseFrames` source, or uint8 (F, H, W, 3) pose frames (channels as
            stored), wrapped by :func:`~.pose_source.as_pose_frames`.
        size: (height, width) in pixels the frames are resized to (nearest, like the original).
        device, dtype: where and in which dtype the guider runs.
        budget_bytes: device memory the kept windows may use (one window is about 32 MB at 512x512 fp16);
            windows beyond it are parked on ``overflow_device`` and copied back when used.
        overflow_budget_bytes: memory the parked windows may use on ``overflow_device``; windows beyond both
            budgets are not kept (0 and 0 recompute every window at every call, like the original).
    """

    def __init__(self, pose_guider: torch.nn.Module, poses: Union[PoseFrames, Any], size: tuple[int, int],
                 device: torch.device, dtype: torch.dtype, budget_bytes: int = 1 << 30,
                 overflow_device: Union[str, torch.device] = "cpu", overflow_budget_bytes: int = 1 << 30) -> None:
        self.pose_guider, self.poses, self.size = pose_guider, as_pose_frames(poses), size
        self.device, self.dtype = device, dtype
        self.bytes_left, self.overflow_device = budget_bytes, overflow_device
        self.overflow_bytes_left = overflow_budget_bytes
        self._cache: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def features(self, window: Sequence[int]) -> list[torch.Tensor]:
        """The guider's features for the clip frames ``window``: a list of (1, C_k, f, H_k, W_k) tensors on the
        device. The window's frames are fetched from the source only when its features are computed."""
        key = tuple(int(i) for i in window)
        if key in self._cache:
            return [f.to(self.device, non_blocking=True) for f in self._cache[key]]
        frames = torch.from_numpy(self.poses.frames(torch.tensor(key, dtype=torch.long))).to(self.device)
        pose_in = prepare_pose_tensor(frames, *self.size).to(self.dtype)  # (1, 3, f, H, W)
        features = run_pose_guider(self.pose_guider, pose_in)
        self._store(key, features)
        return features

    def _store(self, key: tuple[int, ...], kept: list[torch.Tensor]) -> None:
        size = sum(f.numel() * f.element_size() for f in kept)
        if size <= self.bytes_left:
            self.bytes_left -= size
        elif size <= self.overflow_bytes_left:  # long videos: park windows in host memory
            self.overflow_bytes_left -= size
            kept = [f.to(self.overflow_device) for f in kept]
        else:  # both budgets spent: compute this window again when it comes back (memory stays flat)
            return
        self._cache[key] = kept
