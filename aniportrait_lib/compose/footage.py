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

from ..data import CropInfo, Face
from ..face import placement, tracking
from ..face.geometry import metric_geometry
from ..face.selection import LARGEST, FaceChoice
from ..media.frames import CroppedFrames, Footage, FrameReader
from .crop import (DEFAULT_SCALE, DEFAULT_SMOOTHING, DEFAULT_VERTICAL_OFFSET, check_crop_size, crop_box_for_face,
                   crop_frame, crop_info_for_faces, face_box, face_outline, to_uint8)

Progress = Callable[[int, int], None]

#: frames are tracked at most this many pixels on their long side (the face still spans >= 100 px in a 1080p portrait)
ANALYSIS_LONG_SIDE = 960


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
                  choose: FaceChoice = LARGEST, long_side: int = ANALYSIS_LONG_SIDE) -> tuple[tracking.TrackedFaces, np.ndarray]:
    """Track every source frame the timeline shows, once each, in file order, following the person ``choose`` picks
    (its point in source pixels).

    Returns ``(tracked, sources)``: the faces of ``sources`` (ascending source frame indices; ``stop`` may keep
    fewer) measured on frames shrunk to ``long_side``; their landmarks are normalized, so
    :meth:`Face.landmarks_px` times ``1 / analysis_scale`` gives source pixels.
    """
    sources, _ = footage.unique_sources()
    scale = analysis_scale(footage.size, long_side)
    frames = _shrunk(footage.reader.read(sources), scale)
    tracked = tracking.track_faces(frames, landmarker, on_missing, progress, count=len(sources), choose=choose.scaled(scale, scale))
    return tracked, sources


def track_footage(footage: Footage, landmarker, on_missing: str = "interpolate", progress: Optional[Progress] = None,
                  choose: FaceChoice = LARGEST) -> tracking.TrackedFaces:
    """One face per timeline frame (a source frame shown twice is tracked once); ``stop`` cuts the timeline at the
    first frame whose source frame has no face."""
    tracked, _ = track_sources(footage, landmarker, on_missing, progress, choose)
    return on_timeline(tracked, footage)


def on_timeline(tracked: tracking.TrackedFaces, footage: Footage) -> tracking.TrackedFaces:
    """Faces of the footage's unique source frames -> one per timeline frame."""
    inverse = _kept_timeline(footage, len(tracked.faces))
    faces = [tracked.faces[i] for i in inverse]
    timeline = tracking.TrackedFaces(faces, tracked.detected[inverse], footage.num_frames)
    timeline.choice_note = tracked.choice_note
    return timeline


def _kept_timeline(footage: Footage, kept: int) -> np.ndarray:
    """The inverse index of the timeline frames up to the first whose source frame was not tracked (``stop``)."""
    _, inverse = footage.unique_sources()
    missing = inverse >= kept
    return inverse[: int(np.argmax(missing))] if missing.any() else inverse


def crop_footage(footage: Footage, landmarker, crop_size: tuple[int, int], scale: float = DEFAULT_SCALE,
                 vertical_offset: float = DEFAULT_VERTICAL_OFFSET, smoothing: int = DEFAULT_SMOOTHING,
                 on_missing: str = "interpolate", pad: str = "edge", progress: Optional[Progress] = None,
                 choose: FaceChoice = LARGEST) -> tuple[Footage, CropInfo, tracking.TrackedFaces]:
    """Track the face of footage and give its crops as footage read on demand.

    The crop windows are smoothed along the source frames (real time, whatever the timeline repeats) and then
    put on the timeline. Returns ``(crops, crop_info, tracked)``: the crops at ``crop_size`` on the same timeline,
    the crop info with one window per timeline frame (``face_points`` hold each face's outline), and the tracking
    of the source frames.
    """
    crop_size = check_crop_size(*crop_size)
    tracked, sources = track_sources(footage, landmarker, on_missing, progress, choose)
    per_source = crop_info_for_faces(tracked, crop_size, scale, vertical_offset, smoothing, on_missing,
                                     1.0 / analysis_scale(footage.size), footage.size)
    inverse = _kept_timeline(footage, len(tracked.faces))
    info = CropInfo(per_source.boxes[inverse], footage.size, crop_size, per_source.face_points[inverse],
                    per_source.detected[inverse])
    source_boxes = _every_source_frame(per_source.boxes, sources[: len(tracked.faces)], footage.reader.num_frames)
    crops = Footage(_cut_when_read(footage.reader, source_boxes, crop_size, pad), footage.index[: len(inverse)], footage.fps,
                    footage.length_rule)
    return crops, info, tracked


def crop_placed(footage: Footage, face: Face, crop_size: tuple[int, int], scale: float = DEFAULT_SCALE,
                vertical_offset: float = DEFAULT_VERTICAL_OFFSET, pad: str = "edge") -> tuple[Footage, CropInfo]:
    """Crops of footage around a face placed by hand (Face From Points) or found elsewhere: the same window in every
    frame, no tracking. The face's image size must be the footage's (it was placed on these frames)."""
    crop_size = check_crop_size(*crop_size)
    if tuple(face.image_size) != tuple(footage.size):
        raise ValueError(f"the face was placed on a {face.image_size[0]}x{face.image_size[1]} image but the frames are "
                         f"{footage.size[0]}x{footage.size[1]}; place it on this picture (Face From Points with "
                         "width and height 0) or leave the face input empty to find the face")
    points = face.landmarks_px()
    box = crop_box_for_face(face_box(points), crop_size, scale, vertical_offset)
    count = footage.num_frames
    info = CropInfo(np.repeat(box[None], count, axis=0), footage.size, crop_size,
                    np.repeat(face_outline(points)[None], count, axis=0))
    boxes = np.repeat(box[None], footage.reader.num_frames, axis=0)
    return footage.with_reader(_cut_when_read(footage.reader, boxes, crop_size, pad)), info


def face_in_crop(face: Face, box: np.ndarray, crop_size: tuple[int, int], model,
                 source_size: tuple[int, int] | None = None) -> Face:
    """The face of a picture as the face of its crop (the reference image the motion is drawn on).

    ``source_size``: the picture's ``(width, height)`` when the face was found on a shrunk copy of it (tracking);
    its landmarks are normalized, so they hold for the picture too.

    A face placed on a drawing (it has an ``offset_map``) is placed again on the crop through the same points: its
    five points and the named ones (eye corners, lips, chin) mapped into the crop's pixels, so the drawing's shape
    and the lip scaling carry over. A detected face's landmarks are mapped (z scales with x, being on its scale) and
    its head pose recomputed for the crop's frustum, as the landmarker does for a frame.
    """
    width, height = crop_size
    source = np.array(source_size or face.image_size, dtype=np.float64)
    scale = np.array(crop_size, dtype=np.float64) / (np.asarray(box[2:], dtype=np.float64) - box[:2])
    px = (face.landmarks[:, :2] * source - box[:2]) * scale
    if face.offset_map is not None:
        extra = {name: px[i] for name, i in placement.EXTRA_POINTS.items()}
        return placement.place_face(placement.five_points_from_landmarks(px), width, height, model, extra=extra).face
    landmarks = np.concatenate([px / [width, height], face.landmarks[:, 2:] * source[0] * scale[0] / width], axis=1)
    mesh, transform = metric_geometry(landmarks, width, height, model)
    return Face(landmarks, mesh, transform, face.blendshapes, face.blendshape_names, (width, height))


def _every_source_frame(boxes: np.ndarray, sources: np.ndarray, num_source: int) -> np.ndarray:
    """Boxes of the tracked source frames -> ``(num_source, 4)``, linear in between and held at the ends."""
    at = np.arange(num_source)
    return np.stack([np.interp(at, sources, boxes[:, k]) for k in range(4)], axis=1)


def _cut_when_read(reader: FrameReader, boxes: np.ndarray, crop_size: tuple[int, int], pad: str) -> CroppedFrames:
    """The crops of ``reader``'s frames at ``boxes`` (one per source frame), cut as uint8 when read (the IMAGE path
    keeps float levels instead)."""
    return CroppedFrames(reader, boxes, crop_size, lambda frame, box: to_uint8(crop_frame(frame, box, crop_size, pad)))
