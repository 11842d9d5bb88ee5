"""Where the stage-2 sampler gets its pose frames: a held array, or landmarks rendered window by window.

The sampler reads pose frames one context window at a time (:class:`~.pose_features.PoseFeatureCache`), so it
only needs a source that hands out the frames of given indices:

* :class:`ArrayPoseFrames` - pose images already rendered (or edited by other nodes): uint8 (F, H, W, 3)
  held on the host, 0.75 MiB per 512x512 frame (2.2 GiB for 3000 frames).
* :class:`LandmarkPoseFrames` - :class:`~aniportrait_lib.data.Landmarks` (7.5 KiB per frame) drawn with
  :func:`~aniportrait_lib.face.renderer.draw_pose_images` when a window's frames are asked for, at the
  landmarks' size; only one window's frames exist at a time.

Both give the same uint8 frames as Render Pose Images would (the renderer's output, channels as stored); the
sampler resizes either to its width x height in the same way (nearest, :func:`.preprocess.prepare_pose_tensor`),
so a clip sampled from landmarks is bit-identical to one sampled from its rendered pose images.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch

from .. import imaging
from ..data import Landmarks
from ..face import renderer

__all__ = ["PoseFrames", "ArrayPoseFrames", "LandmarkPoseFrames", "as_pose_frames", "pick_pose_input"]

Indices = Union[Sequence[int], np.ndarray, torch.Tensor]


def _indices(indices: Indices, num_frames: int) -> np.ndarray:
    """Frame indices -> int64 (k,) numpy array, each in [0, num_frames)."""
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        raise IndexError(f"pose frame indices must be in [0, {num_frames}), got {idx.min()}..{idx.max()}.")
    return idx


class PoseFrames:
    """A clip's pose frames, handed out by index.

    Attributes:
        num_frames: F, the number of frames (= output frames); ``len(source)`` is the same.
        size: (height, width) in pixels of the frames :meth:`frames` returns.
    """

    num_frames: int
    size: tuple[int, int]

    def __len__(self) -> int:
        return self.num_frames

    def frames(self, indices: Indices) -> np.ndarray:
        """uint8 (k, H, W, 3) frames of ``indices`` (k ints in [0, F), any order), channels as stored."""
        raise NotImplementedError


class ArrayPoseFrames(PoseFrames):
    """Pose frames held on the host: uint8 (F, H, W, 3) (or anything :func:`~aniportrait_lib.imaging.frames_to_uint8`
    takes: float 0..1 images, grey, RGBA), converted once."""

    def __init__(self, frames: Union[np.ndarray, torch.Tensor], what: str = "pose images") -> None:
        if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3:
            array = np.ascontiguousarray(frames)  # already the policy's output (e.g. a node converted it): no copy
        else:
            array = imaging.frames_to_uint8(frames, what)
        if array.shape[0] < 1:
            raise ValueError(f"the {what} input is empty; connect at least one image (one per output frame).")
        self.array = torch.from_numpy(array)  # CPU uint8
        self.num_frames = int(self.array.shape[0])
        self.size = (int(self.array.shape[1]), int(self.array.shape[2]))

    def frames(self, indices: Indices) -> np.ndarray:
        return self.array.index_select(0, torch.from_numpy(_indices(indices, self.num_frames))).numpy()


class LandmarkPoseFrames(PoseFrames):
    """Pose frames drawn from landmarks on demand, at the landmarks' ``width x height``.

    Attributes:
        landmarks: the :class:`~aniportrait_lib.data.Landmarks` (points (F, N, 2) pixels, N >= 468).
        rendered_frames: frames drawn so far (all calls); max_batch: most frames drawn by one call (what the
            host holds at once).
    """

    def __init__(self, landmarks: Landmarks) -> None:
        points = landmarks.points
        if points.shape[0] < 1:
            raise ValueError("the landmarks input holds no frames; connect landmarks of at least one frame.")
        if points.shape[1] < 468:
            raise ValueError(f"the landmarks input has {points.shape[1]} points per frame; pose images need the "
                             f"478 face-mesh landmarks that Project Landmarks gives.")
        self.landmarks = landmarks
        self.num_frames = int(points.shape[0])
        self.size = (int(landmarks.height), int(landmarks.width))
        self.rendered_frames = 0
        self.max_batch = 0

    def frames(self, indices: Indices) -> np.ndarray:
        idx = _indices(indices, self.num_frames)
        out = renderer.draw_pose_images(self.landmarks.points[idx], self.landmarks.width, self.landmarks.height)
        self.rendered_frames += len(idx)
        self.max_batch = max(self.max_batch, len(idx))
        return out


def as_pose_frames(poses: Any) -> PoseFrames:
    """A :class:`PoseFrames` source as it is, :class:`~aniportrait_lib.data.Landmarks` as a
    :class:`LandmarkPoseFrames`, anything else (pose images (F, H, W, 3)) as an :class:`ArrayPoseFrames`.

    Matched by attributes, not class, so objects of a second import of this package (ComfyUI loads the pack
    under its folder name; tests import ``aniportrait_lib``) are recognised too."""
    if isinstance(poses, PoseFrames) or (callable(getattr(poses, "frames", None)) and hasattr(poses, "num_frames")):
        return poses
    if isinstance(poses, Landmarks) or all(hasattr(poses, a) for a in ("points", "width", "height")):
        return LandmarkPoseFrames(poses)
    return ArrayPoseFrames(poses)


def pick_pose_input(pose_images: Any, landmarks: Any, node: str = "the sampler") -> Union[Any, Landmarks]:
    """The one connected pose input of a node (``None`` = not connected); refuses neither and both.
    ``node`` names the node in the message."""
    if pose_images is None and landmarks is None:
        raise ValueError("connect either pose_images (e.g. from Render Pose Images) or landmarks (from Project "
                         f"Landmarks, rendered window by window) to {node}; neither is connected.")
    if pose_images is not None and landmarks is not None:
        raise ValueError(f"connect only one of pose_images and landmarks to {node}, not both: it follows the "
                         "one that is connected.")
    return landmarks if landmarks is not None else pose_images
