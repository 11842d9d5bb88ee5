"""Editable stage-1 data passed between nodes: plain dataclasses of numpy arrays.

* :class:`MotionSequence` (``ANIPORTRAIT_MOTION``): per-frame canonical meshes + 6D head poses.
* :class:`LandmarkSequence` (``ANIPORTRAIT_LANDMARKS``): per-frame 2D landmarks in pixels.
Both save to / load from ``.npz`` so users can edit them (e.g. swap in a pose template).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .face import pose_math


@dataclass
class MotionSequence:
    """Face motion of a clip.

    meshes: ``(T, 468, 3)`` float64, cm, canonical face frame (reference mesh + predicted expression).
    poses: ``(T, 6)`` float32, euler xyz degrees + translation (cm) relative to the reference face.
    fps: frames per second.
    """

    meshes: np.ndarray
    poses: np.ndarray
    fps: float = 30.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meshes = np.asarray(self.meshes, dtype=np.float64)
        self.poses = np.asarray(self.poses, dtype=np.float32)
        if self.meshes.ndim != 3 or self.meshes.shape[2] != 3:
            raise ValueError(f"meshes must be (T, N, 3); got {self.meshes.shape}")
        if self.poses.shape != (self.meshes.shape[0], 6):
            raise ValueError(f"poses must be ({self.meshes.shape[0]}, 6), one per mesh frame; got {self.poses.shape}")

    @property
    def num_frames(self) -> int:
        return self.meshes.shape[0]

    def with_poses(self, poses: np.ndarray) -> "MotionSequence":
        return MotionSequence(self.meshes, poses, self.fps, dict(self.meta))

    def save(self, path: str | Path) -> None:
        np.savez(path, meshes=self.meshes, poses=self.poses, fps=self.fps)

    @classmethod
    def load(cls, path: str | Path) -> "MotionSequence":
        with np.load(path) as data:
            return cls(data["meshes"], data["poses"], float(data["fps"]))


@dataclass
class LandmarkSequence:
    """Projected landmarks: ``points`` ``(T, N, 2)`` float64 pixels (x, y) of a ``width x height`` frame."""

    points: np.ndarray
    width: int
    height: int
    fps: float = 30.0

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64)
        if self.points.ndim != 3 or self.points.shape[2] != 2:
            raise ValueError(f"landmark points must be (T, N, 2); got {self.points.shape}")

    @property
    def num_frames(self) -> int:
        return self.points.shape[0]

    def save(self, path: str | Path) -> None:
        np.savez(path, points=self.points, width=self.width, height=self.height, fps=self.fps)


def project_motion(motion: MotionSequence, ref_transform: np.ndarray, width: int, height: int) -> LandmarkSequence:
    """Project a motion through the reference face's transform to ``width x height`` pixels."""
    pts = pose_math.project_points(motion.meshes, ref_transform, motion.poses, height, width)
    return LandmarkSequence(pts, width, height, motion.fps)
