"""Face crops framed like AniPortrait's training data, with a box that follows the head without jitter.

Framing (defaults chosen by measuring MediaPipe landmarks on the astronaut photo and the two real test
clips): the *face box* is the extent of the 478 landmarks (mid-forehead to chin, cheek to cheek); its
*face size* is the mean of its width and height. The crop window is ``scale`` (2.0) face sizes wide, has
the crop's aspect ratio, and is centred on the face box, moved down by ``vertical_offset`` (0.0) times
the window height (positive = the face sits higher in the crop). With the defaults, on a square crop the
face box spans 46-49 % of the crop width and 51-54 % of its height, and the eyes sit at 39-40 % of the
height, as in AniPortrait's 512x512 examples.

For video the raw boxes of frames where no face was found are filled by the same policy as the
face-tracking loop (interpolated between the nearest detected boxes, held at the ends, or held), then
the box centre and width are smoothed with a centred moving average (the window shrinks symmetrically
at the clip's ends, so the first and last boxes stay where the face is).

Parts of the window outside the frame are padded by edge replication (default: no black bars for the
diffusion model to copy) or a constant (black).

Coordinates: pixels in the source frame, pixel ``i`` covers ``[i, i + 1)``; a box is
``[x0, y0, x1, y1]`` float64.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import scipy.sparse

from ..data import CropInfo, Face
from ..face import tracking

Progress = Callable[[int, int], None]

DEFAULT_SCALE = 2.0
DEFAULT_VERTICAL_OFFSET = 0.0
DEFAULT_SMOOTHING = 9
PAD_MODES = ("edge", "constant")
#: Lanczos kernel radius (taps each side at 1:1)
LANCZOS_A = 4
#: face outline points kept per frame in the crop info (the face-shaped paste-back mask and the face size use them)
HULL_POINTS = 64


def check_crop_size(width: int, height: int, min_size: int = 64, max_size: int = 2048) -> tuple[int, int]:
    """``(width, height)`` as ints, or a ValueError saying what sizes work."""
    width, height = int(width), int(height)
    if width % 8 or height % 8 or not (min_size <= width <= max_size and min_size <= height <= max_size):
        raise ValueError(f"the crop size must be a multiple of 8 from {min_size} to {max_size} on each side; got {width}x{height}")
    return width, height


def face_box(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` face points in pixels -> ``(4,)`` float64 box ``[x0, y0, x1, y1]`` (their extent)."""
    points = np.asarray(points, dtype=np.float64)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def crop_box_for_face(box: np.ndarray, crop_size: tuple[int, int], scale: float = DEFAULT_SCALE,
                      vertical_offset: float = DEFAULT_VERTICAL_OFFSET) -> np.ndarray:
    """The crop window ``(4,)`` for a face box: ``scale`` face sizes wide, the crop's aspect ratio.

    Args:
        box: ``[x0, y0, x1, y1]`` face box in pixels (:func:`face_box`).
        crop_size: ``(width, height)`` of the crop in pixels (only the aspect ratio matters here).
        scale: window width / face size, where face size = mean of the face box's width and height.
        vertical_offset: the window centre lies this fraction of the window height BELOW the face
            centre (positive values put the face higher in the crop).
    """
    if not scale > 0:
        raise ValueError(f"the crop scale must be positive, got {scale}")
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    width = scale * ((x1 - x0) + (y1 - y0)) / 2.0
    height = width * crop_size[1] / crop_size[0]
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 + vertical_offset * height
    return np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])


def fill_boxes(boxes: np.ndarray, detected: np.ndarray, on_missing: str = "interpolate") -> np.ndarray:
    """Boxes of face-less frames (``detected`` False) filled like the tracking loop fills faces.

    ``interpolate``: linear between the nearest detected frames, held at the clip's ends;
    ``hold``: the last detected box (the first one before any detection). ``(T, 4)`` in, ``(T, 4)`` out.
    """
    boxes = np.array(boxes, dtype=np.float64)
    detected = np.asarray(detected, dtype=bool)
    found = np.flatnonzero(detected)
    if found.size == 0:
        raise ValueError("no face was found in any frame, so there is no box to crop")
    frames = np.arange(len(boxes))
    if on_missing == "hold":
        last = np.maximum.accumulate(np.where(detected, frames, -1))
        return boxes[np.where(last >= 0, last, found[0])]
    for column in range(boxes.shape[1]):
        boxes[:, column] = np.interp(frames, found, boxes[found, column])
    return boxes


def smooth_boxes(boxes: np.ndarray, window: int = DEFAULT_SMOOTHING) -> np.ndarray:
    """Centred moving average of box centre and width over ``window`` frames (odd; 1 = off).

    The window shrinks symmetrically near the clip's ends. Each box keeps its aspect ratio
    (the height follows the smoothed width). ``(T, 4)`` in pixels -> ``(T, 4)``.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if window < 1:
        raise ValueError(f"the smoothing window must be at least 1 frame, got {window}")
    half = (int(window) - 1) // 2
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    size = boxes[:, 2:] - boxes[:, :2]
    aspect = size[:, 1] / size[:, 0]
    stacked = np.column_stack([centre, size[:, 0]])
    cumulative = np.vstack([np.zeros((1, 3)), np.cumsum(stacked, axis=0)])
    smoothed = np.empty_like(stacked)
    count = len(boxes)
    for t in range(count):
        h = min(half, t, count - 1 - t)
        smoothed[t] = (cumulative[t + h + 1] - cumulative[t - h]) / (2 * h + 1)
    width, height = smoothed[:, 2], smoothed[:, 2] * aspect
    cx, cy = smoothed[:, 0], smoothed[:, 1]
    return np.column_stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])


# ----------------------------------------------------------------------------- resampling


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < LANCZOS_A, np.sinc(x) * np.sinc(x / LANCZOS_A), 0.0)


def _axis_weights(start: float, step: float, count: int, length: int, pad: str,
                  sharp_shrink: float = 1.0) -> scipy.sparse.csr_matrix:
    """Sparse ``(count, length [+1])`` resampling matrix along one axis.

    Output sample ``k`` is the source at position ``start + (k + 0.5) * step`` (pixel-edge coordinates),
    filtered with a Lanczos kernel widened by ``step / sharp_shrink`` when that exceeds 1 (an anti-alias
    low-pass; below it the kernel interpolates: the result passes through the source samples).
    Taps outside ``[0, length)`` go to the nearest pixel (``edge``) or to an extra column ``length``
    that holds the constant (``constant``).
    """
    stretch = max(step / sharp_shrink, 1.0)
    taps = int(math.ceil(2 * LANCZOS_A * stretch)) + 1
    centres = start + (np.arange(count) + 0.5) * step - 0.5  # in pixel-centre index coordinates
    first = np.floor(centres - LANCZOS_A * stretch).astype(np.int64) + 1
    index = first[:, None] + np.arange(taps)[None, :]
    weights = _lanczos((index - centres[:, None]) / stretch)
    weights /= weights.sum(axis=1, keepdims=True)
    outside = (index < 0) | (index >= length)
    index = np.where(outside, length, index) if pad == "constant" else np.clip(index, 0, length - 1)
    rows = np.repeat(np.arange(count), taps)
    shape = (count, length + (1 if pad == "constant" else 0))
    return scipy.sparse.csr_matrix((weights.ravel().astype(np.float32), (rows, index.ravel())), shape=shape)


def resample(image: np.ndarray, origin: tuple[float, float], step: tuple[float, float], out_size: tuple[int, int],
             pad: str = "edge", pad_value: float = 0.0, sharp_shrink: float = 1.0) -> np.ndarray:
    """Sample ``image`` on a regular grid (separable Lanczos-3, anti-aliased when shrinking).

    Args:
        image: ``(H, W, C)`` uint8 or float.
        origin: ``(x, y)`` source position (pixel-edge coordinates) of the output's top-left corner.
        step: ``(sx, sy)`` source pixels per output pixel.
        out_size: ``(width, height)`` of the output.
        pad: ``edge`` (replicate the border) or ``constant`` (``pad_value``) outside the image.
        sharp_shrink: shrinking up to this factor interpolates without a low-pass (1 = always
            anti-alias; 2 = up to 2x, so that a crop that was upscaled comes back unchanged).
    Returns:
        ``(height, width, C)`` float32 (not rounded or clipped).
    """
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}; got {pad!r}")
    height, width, channels = image.shape
    wx = _axis_weights(origin[0], step[0], out_size[0], width, pad, sharp_shrink)
    wy = _axis_weights(origin[1], step[1], out_size[1], height, pad, sharp_shrink)
    used = np.unique(wx.indices)  # only the source columns the output needs
    inside = used[used < width]
    columns = image[:, inside].astype(np.float32)
    if pad == "constant":
        columns = np.concatenate([columns, np.full((height, 1, channels), pad_value, np.float32)], axis=1)
        inside = np.append(inside, width)
        columns = np.concatenate([columns, np.full((1, columns.shape[1], channels), pad_value, np.float32)], axis=0)
    rows = wy @ columns.reshape(columns.shape[0], -1)  # (out_h, used * C)
    rows = rows.reshape(out_size[1], len(inside), channels).transpose(1, 0, 2).reshape(len(inside), -1)
    out = wx[:, inside] @ rows  # (out_w, out_h * C)
    return np.ascontiguousarray(out.reshape(out_size[0], out_size[1], channels).transpose(1, 0, 2))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixel levels (0..255 scale) -> uint8, rounded and clipped."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def crop_frame(frame: np.ndarray, box: np.ndarray, crop_size: tuple[int, int], pad: str = "edge") -> np.ndarray:
    """One frame ``(H, W, 3)``'s window ``box`` resized to ``crop_size``: float pixel levels (see :func:`crop_frames`)."""
    width, height = crop_size
    step = ((box[2] - box[0]) / width, (box[3] - box[1]) / height)
    return resample(frame, (box[0], box[1]), step, crop_size, pad)


def crop_frames(frames: np.ndarray, boxes: np.ndarray, crop_size: tuple[int, int], pad: str = "edge",
                progress: Progress | None = None) -> np.ndarray:
    """Cut each frame's window and resize it to the crop size.

    Args:
        frames: ``(T, H, W, 3)`` uint8, or ``(1, H, W, 3)`` for one photo shared by every box.
        boxes: ``(T, 4)`` windows in source pixels (:func:`crop_box_for_face`).
        crop_size: ``(width, height)`` of the crops.
        pad: outside the frame, ``edge`` replicates the border, ``constant`` is black.
        progress: optional ``progress(done, total)`` per frame.
    Returns:
        ``(T, height, width, 3)`` float32 pixel levels (0..255 scale), neither rounded nor clipped: the
        resampler's small overshoot is kept so that pasting a crop back unchanged gives the original back
        (within 1 level; rounding to uint8 here would cost up to 6 levels next to black or white).
    """
    width, height = crop_size
    out = np.empty((len(boxes), height, width, 3), dtype=np.float32)
    for t, box in enumerate(np.asarray(boxes, dtype=np.float64)):
        out[t] = crop_frame(frames[t if len(frames) > 1 else 0], box, crop_size, pad)
        if progress is not None:
            progress(t + 1, len(boxes))
    return out


# ----------------------------------------------------------------------------- the whole step


def face_outline(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` face points -> ``(HULL_POINTS, 2)``: their convex hull (what the face mask and the face size use;
    a face mesh's hull has about 40 vertices), padded by repeating its last vertex."""
    import cv2

    hull = cv2.convexHull(np.asarray(points, dtype=np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) >= HULL_POINTS:
        return hull[np.linspace(0, len(hull), HULL_POINTS, endpoint=False).astype(int)]
    return np.concatenate([hull, np.repeat(hull[-1:], HULL_POINTS - len(hull), axis=0)])  # repeats leave the hull as is


def crop_info_for_faces(tracked: tracking.TrackedFaces, crop_size: tuple[int, int], scale: float = DEFAULT_SCALE,
                        vertical_offset: float = DEFAULT_VERTICAL_OFFSET, smoothing: int = DEFAULT_SMOOTHING,
                        on_missing: str = "interpolate", to_source: float = 1.0,
                        source_size: tuple[int, int] | None = None) -> CropInfo:
    """Crop windows for tracked faces: raw boxes, filled over face-less frames, smoothed.

    ``to_source`` scales the faces' pixels to the source's (faces tracked on a shrunk copy), ``source_size`` is the
    source's ``(width, height)`` (default: the faces' image size). Returns a :class:`CropInfo` with ``(T, 4)`` boxes,
    each face's outline ``(T, HULL_POINTS, 2)`` in source pixels and which frames had a detected face.
    """
    faces: Sequence[Face] = tracked.faces
    points = [face.landmarks_px() * to_source for face in faces]
    raw = np.stack([crop_box_for_face(face_box(p), crop_size, scale, vertical_offset) for p in points])
    boxes = smooth_boxes(fill_boxes(raw, tracked.detected, on_missing), smoothing)
    size = source_size if source_size is not None else faces[0].image_size
    return CropInfo(boxes, size, crop_size, np.stack([face_outline(p) for p in points]), tracked.detected.copy())
