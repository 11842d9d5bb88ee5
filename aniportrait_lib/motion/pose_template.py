"""Head-pose templates: the head motion of a video, to drive a portrait instead of Audio2Pose.

Same maths as the original's ``scripts/generate_ref_pose.py`` (extraction) and ``scripts/audio2vid.py``
(consumption): per-frame facial transforms -> poses relative to the first frame -> resampled to 30 fps
-> smoothed (window 5). A template drives a clip by ping-pong looping it to the clip's length, with no
halving and no further smoothing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data import Face, PoseTemplate
from ..face import pose_math

#: the original smooths templates over 5 frames
TEMPLATE_SMOOTHING_WINDOW = 5
#: templates are stored at the stage-1 frame rate
TEMPLATE_FPS = 30.0


def relative_poses(transforms: np.ndarray) -> np.ndarray:
    """``(n, 4, 4)`` facial transforms -> ``(n, 6)`` float64 poses of ``inv(T0) @ Ti`` (euler xyz deg + translation).

    The transforms are cast to float32 first and the inverse/product computed in float32, as the original.
    """
    t = np.asarray(transforms, dtype=np.float32)
    if t.ndim != 3 or t.shape[1:] != (4, 4) or t.shape[0] < 1:
        raise ValueError(f"transforms must be (n >= 1, 4, 4); got {t.shape}")
    inv0 = np.linalg.inv(t[0])
    out = np.empty((t.shape[0], 6))
    for i, ti in enumerate(t):
        euler, trans = pose_math.matrix_to_euler(inv0 @ ti)
        out[i, :3], out[i, 3:] = euler, trans
    return out


def resample_poses(poses: np.ndarray, fps: float, target_fps: float = TEMPLATE_FPS) -> np.ndarray:
    """Linear resampling of ``(n, 6)`` poses from ``fps`` to ``int(n * target / fps)`` samples over ``[0, n/fps]``.

    (The original's time grid: both ends fixed, so the spacing is not exactly 1/target s.)
    """
    poses = np.asarray(poses, dtype=np.float64)
    n = poses.shape[0]
    if fps <= 0:
        raise ValueError(f"the video frame rate must be positive, got {fps}")
    count = int(n * target_fps / fps)
    if n < 2 or count < 2:
        return poses.copy() if count == n else np.repeat(poses[:1], max(count, 1), axis=0)
    old = np.linspace(0, n / fps, n)
    new = np.linspace(0, n / fps, count)
    return np.stack([np.interp(new, old, poses[:, c]) for c in range(poses.shape[1])], axis=1)


def extract_template(transforms: np.ndarray, fps: float, window: int = TEMPLATE_SMOOTHING_WINDOW) -> np.ndarray:
    """Per-frame transforms of a video at ``fps`` -> the ``(T, 6)`` float64 template at 30 fps."""
    return pose_math.smooth_poses(resample_poses(relative_poses(transforms), fps), window)


def loop_template(template: np.ndarray, num_frames: int) -> np.ndarray:
    """Ping-pong loop a ``(T, 6)`` template to ``num_frames`` rows (``T, T-1, ..., 2`` back then forward again)."""
    template = np.asarray(template)
    if template.ndim != 2 or template.shape[1] != 6 or template.shape[0] < 1:
        raise ValueError(f"a pose template must be (T >= 1, 6); got {template.shape}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    cycle = np.concatenate((template, template[-2:0:-1]), axis=0)
    return np.tile(cycle, (num_frames // len(cycle) + 1, 1))[:num_frames]


def template_from_faces(faces: Sequence[Face], fps: float, window: int = TEMPLATE_SMOOTHING_WINDOW) -> PoseTemplate:
    """The tracked faces of a video at ``fps`` -> its :class:`PoseTemplate` at 30 fps (see :func:`extract_template`)."""
    if not faces:
        raise ValueError("no faces to make a pose template from")
    return PoseTemplate(extract_template(np.stack([f.transform for f in faces]), fps, window), TEMPLATE_FPS)
