"""Face crops of footage read on demand: tracking and crop windows without holding the video.

A long source (ten minutes of 1080p) is never decoded whole. :func:`crop_footage` tracks each source frame the
timeline shows exactly once, in file order, on a copy shrunk to at most :data:`ANALYSIS_LONG_SIDE` pixels
(MediaPipe works on a 256 px face crop anyway), and keeps only numbers per frame (the crop window and the face
outline in source pixels). The crops themselves are a :class:`~aniportrait_lib.media.frames.CroppedFrames` view
that cuts each frame when it is read. :func:`track_footage` tracks footage (for example those crops) the same way
and gives one face per timeline frame.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

from ..data import CropInfo
from ..face import tracking
from ..media.frames import CroppedFrames, Footage
from .crop import (DEFAULT_SCALE, DEFAULT_SMOOTHING, DEFAULT_VERTICAL_OFFSET, check_crop_size, crop_box_for_face,
                   face_box, fill_boxes, resample, smooth_boxes)

Progress = Callable[[int, int], None]

#: frames are tracked at most this many pixels on their long side (the face still spans >= 100 px in a 1080p portrait)
ANALYSIS_LONG_SIDE = 960
#: face outline points kept per frame for the face-shaped paste-back mask (the mesh's silhouette)
HULL_POINTS = 64


def analysis_scale(size: tuple[int, int], long_side: int = ANALYSIS_LONG_SIDE) -> float:
    """Factor (<= 1) by which frames of ``size`` (width, height) are shrunk for tracking."""
    return min(1.0, long_side / max(size))


def _shrunk(frames, scale: float):
    for frame in frames:
        if scale >= 1.0:
            yield frame
        else:
            size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
            yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def track_sources(footage: Footage, landmarker, on_missing: str = "interpolate", progress: Optional[Progress] = None,
                  long_side: int = ANALYSIS_LONG_SIDE) -> tuple[tracking.TrackedFaces, np.ndarray]:
    """Track every source frame the timeline shows, once each, in file order.

    Returns ``(tracked, sources)``: the faces of ``sources`` (ascending source frame indices; ``stop`` may keep
    fewer) measured on frames shrunk to ``long_side``; their landmarks are normalized, so
    :meth:`Face.landmarks_px` times ``1 / analysis_scale`` gives source pixels.
    """
    sources, _ = footage.unique_sources()
    scale = analysis_scale(footage.size, long_side)
    frames = _shrunk(footage.reader.read(sources), scale)
    return tracking.track_faces(frames, landmarker, on_missing, progress, count=len(sources)), sources


def track_footage(footage: Footage, landmarker, on_missing: str = "interpolate",
                  progress: Optional[Progress] = None) -> tracking.TrackedFaces:
    """One face per timeline frame (a source frame shown twice is tracked once); ``stop`` cuts the timeline at the
    first frame whose source frame has no face."""
    tracked, sources = track_sources(footage, landmarker, on_missing, progress)
    _, inverse = footage.unique_sources()
    kept = inverse < len(tracked.faces)
    if not kept.all():
        inverse = inverse[: int(np.argmin(kept))]
    faces = [tracked.faces[i] for i in inverse]
    return tracking.TrackedFaces(faces, tracked.detected[inverse], footage.num_frames)


def _outline(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` face points -> their convex hull resampled to :data:`HULL_POINTS` points (what the face mask uses)."""
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) >= HULL_POINTS:
        return hull[np.linspace(0, len(hull), HULL_POINTS, endpoint=False).astype(int)]
    return np.concatenate([hull, np.repeat(hull[-1:], HULL_POINTS - len(hull), axis=0)])  # repeats leave the hull as is


def crop_footage(footage: Footage, landmarker, crop_size: tuple[int, int], scale: float = DEFAULT_SCALE,
                 vertical_offset: float = DEFAULT_VERTICAL_OFFSET, smoothing: int = DEFAULT_SMOOTHING,
                 on_missing: str = "interpolate", pad: str = "edge",
                 progress: Optional[Progress] = None) -> tuple[Footage, CropInfo, tracking.TrackedFaces]:
    """Track the face of footage and give its crops as footage read on demand.

    The crop windows are smoothed along the source frames (real time, whatever the timeline repeats) and then
    put on the timeline. Returns ``(crops, crop_info, tracked)``: the crops at ``crop_size`` on the same timeline,
    the crop info with one window per timeline frame (``face_points`` hold each face's outline), and the tracking
    of the source frames.
    """
    crop_size = check_crop_size(*crop_size)
    tracked, sources = track_sources(footage, landmarker, on_missing, progress)
    to_source = 1.0 / analysis_scale(footage.size)
    kept = len(tracked.faces)
    points = [face.landmarks_px() * to_source for face in tracked.faces]
    raw = np.stack([crop_box_for_face(face_box(p), crop_size, scale, vertical_offset) for p in points])
    boxes = smooth_boxes(fill_boxes(raw, tracked.detected, on_missing), smoothing)
    outlines = np.stack([_outline(p) for p in points])
    source_boxes = _every_source_frame(boxes, sources[:kept], footage.reader.num_frames)
    _, inverse = footage.unique_sources()
    inverse = inverse[: int(np.argmax(inverse >= kept))] if (inverse >= kept).any() else inverse
    info = CropInfo(boxes[inverse], footage.size, crop_size, outlines[inverse], tracked.detected[inverse].copy())
    cropper = CroppedFrames(footage.reader, source_boxes, crop_size, lambda frame, box: _crop(frame, box, crop_size, pad))
    timeline = Footage(cropper, footage.index[: len(inverse)], footage.fps, footage.length_rule)
    return timeline, info, tracked


def _every_source_frame(boxes: np.ndarray, sources: np.ndarray, num_source: int) -> np.ndarray:
    """Boxes of the tracked source frames -> ``(num_source, 4)``, linear in between and held at the ends."""
    at = np.arange(num_source)
    return np.stack([np.interp(at, sources, boxes[:, k]) for k in range(4)], axis=1)


def _crop(frame: np.ndarray, box: np.ndarray, crop_size: tuple[int, int], pad: str) -> np.ndarray:
    """One crop as uint8 (the pipeline's frames are uint8; the IMAGE path keeps float levels instead)."""
    width, height = crop_size
    step = ((box[2] - box[0]) / width, (box[3] - box[1]) / height)
    return np.clip(np.rint(resample(frame, (box[0], box[1]), step, crop_size, pad)), 0, 255).astype(np.uint8)

