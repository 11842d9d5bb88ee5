"""Paste generated face crops back into the original photo or frames, with a feathered mask.

* The generated frame (any size; normally the crop size) is stretched onto the frame's crop window and
  sampled at every original pixel's centre with the Lanczos interpolator of :func:`crop.resample`.
  Shrinking by up to 2x interpolates without a low-pass, so a crop that was upscaled and is pasted back
  unchanged reproduces the original (within a few levels, see the tests); larger shrink factors are
  low-passed to what a 2x shrink keeps, against aliasing.
* Mask ``box``: the crop window, inset by the interpolator's reach (4 generated pixels), so that no
  masked pixel is sampled from beyond the generated frame's edge; ``face``: the convex hull of the frame's face landmarks scaled about
  its centre by ``1 + expand`` (to take in forehead and chin), cut to the window. Either is feathered
  INWARD (0 at the edge, 1 from the feather width inside, by Euclidean distance), so pixels outside the
  mask stay exactly the original. Where the window leaves the frame, the frame's edge is not treated as
  a mask edge.
* Everything scales with the face: ``expand`` is a fraction of the hull, ``feather`` a fraction of the
  *face size* (:func:`face_size`: the mean of the landmark box's width and height, as in
  :func:`crop.face_box`). So a 40 px face in a wide shot is masked like a 400 px close-up, scaled down
  (a fixed 24 px feather, the old default, left a 56 px face of held-back material with 242 of its 3,514
  face-mask pixels fully replaced: the rest was a ghost of the original). The inset is the interpolator's
  reach, not a design choice: 4 generated pixels (0.8 % of the window width for a 512 px crop), or 2 source
  pixels where the crop is over twice the window's size (2.5 % of the window of a 40 px face), so it
  already follows the window and is left as it is.
* Default feather 0.05 face sizes, measured with ``tools/measure_feather.py`` (the astronaut photo and
  its MediaPipe landmarks scaled to faces of 40 to 400 px, cropped at the default framing to 512 x 512 and
  pasted back, expand 0.15; ``turned``: the landmarks squeezed to 0.6 of their width, a head turned aside)
  as the share of the mask's pixels fully replaced (uint8 mask == 255), fixed 24 px -> 0.05:

  ======  ===============  ===============  ===============
  face    face mask        face, turned     box mask
  ======  ===============  ===============  ===============
  40 px   0.0 -> 90.0 %    0.0 -> 88.9 %    15.6 -> 94.8 %
  56 px   6.8 -> 87.4 %    0.0 -> 85.9 %    33.0 -> 92.7 %
  80 px   23.9 -> 86.1 %   14.2 -> 84.5 %   49.7 -> 92.5 %
  120 px  43.6 -> 84.9 %   36.2 -> 83.0 %   64.8 -> 91.7 %
  200 px  63.5 -> 84.2 %   58.6 -> 82.2 %   78.0 -> 91.1 %
  400 px  80.7 -> 83.8 %   78.2 -> 81.7 %   88.7 -> 90.6 %
  ======  ===============  ===============  ===============

  0.05 is the widest feather (in steps of 0.01) that keeps >= 80 % everywhere: 0.06 gives 80.7 % on the
  400 px frontal face and 78.2 % on the turned one. It still hides the seam: the ramp is 5 % of the face,
  20 px on a 400 px face (near the old 24 px), and it lies inside the margin that ``expand`` adds, so the
  landmarks' own outline is 100 % fully replaced at every size above (the blend falls on cheek, brow and
  chin, not on eyes or mouth). On faces under 20 px the ramp is under one pixel (a hard edge there).
* ``color_match`` (off by default: the generator works from the reference itself, and per-frame
  statistics would follow expression changes such as an open mouth): the generated pixels' mean and
  standard deviation in CIE LAB are moved to the original's, measured where the mask is >= 0.5.
* Frame counts: N generated frames and M originals: M == 1 (a photo) pastes every frame into it,
  M == N pairs them one to one; the crop info must hold one window per original.

Memory: one preallocated uint8 output ``(N, H, W, 3)`` plus a uint8 mask ``(N, H, W)``; each frame is
worked on only inside its window.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ..data import CropInfo
from .crop import DEFAULT_SCALE, LANCZOS_A, face_box, resample, to_uint8

Progress = Callable[[int, int], None]

MASK_MODES = ("box", "face")
DEFAULT_MASK = "box"
DEFAULT_EXPAND = 0.15
#: feather width in face sizes (see the module docstring for the measurements behind it)
DEFAULT_FEATHER = 0.05
MAX_FEATHER = 0.5
#: shrinking the generated frame by up to this factor is pure interpolation (see the module docstring)
SHARP_SHRINK = 2.0


def check_frame_counts(generated: int, original: int, info: CropInfo) -> None:
    """Raise a ValueError saying what to connect when the three frame counts do not fit together."""
    if info.num_frames != original:
        raise ValueError(f"the crop info holds {info.num_frames} crop window(s) but the original input has {original} image(s); "
                         f"connect the same photo or frames that went into AniPortrait Face Crop")
    if original not in (1, generated):
        raise ValueError(f"the generated input has {generated} frames but the original input has {original}; connect the photo "
                         f"that was cropped (1 image) or exactly {generated} original frames (the cropped video, trimmed to the "
                         f"generated length), with a crop info made from those frames")


def check_feather(feather: float) -> float:
    """``feather`` as a float, or a ValueError saying the range (it is a fraction of the face size, not pixels)."""
    if not 0.0 <= float(feather) <= MAX_FEATHER:
        raise ValueError(f"feather is a fraction of the face size from 0 to {MAX_FEATHER} (default {DEFAULT_FEATHER}), "
                         f"not a width in pixels; got {feather}")
    return float(feather)


def face_size(box: np.ndarray, points: np.ndarray | None = None) -> float:
    """Face size in source pixels: the mean of the landmark box's width and height (:func:`crop.face_box`).

    Without ``points`` (``(N, 2)`` source pixels) it comes from the crop window ``box``, which Face Crop
    makes ``scale`` face sizes wide: taken as the default :data:`crop.DEFAULT_SCALE` (2.0), since the crop
    info does not record the scale (a window cropped at scale 3 then reads as a 1.5x larger face).
    """
    if points is not None:
        x0, y0, x1, y1 = face_box(points)
        return float((x1 - x0) + (y1 - y0)) / 2.0
    return float(box[2] - box[0]) / DEFAULT_SCALE


def face_size_of(info: CropInfo, index: int) -> float:
    """Face size in source pixels of the crop info's frame ``index``: from its landmarks when the info has
    them (every Face Crop info does), else from its window (:func:`face_size`)."""
    points = info.face_points[index] if info.face_points is not None else None
    return face_size(info.boxes[index], points)


def mask_window(box: np.ndarray, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel range ``(x0, y0, x1, y1)`` (end exclusive) of the frame that a window's mask may touch.

    It is the window's pixels plus a one-pixel ring (the mask edge), cut to the frame.
    """
    width, height = frame_size
    x0 = max(int(np.ceil(box[0] - 0.5)) - 1, 0)
    y0 = max(int(np.ceil(box[1] - 0.5)) - 1, 0)
    x1 = min(int(np.ceil(box[2] - 0.5)) + 1, width)
    y1 = min(int(np.ceil(box[3] - 0.5)) + 1, height)
    return x0, y0, max(x1, x0), max(y1, y0)


def inset_box(box: np.ndarray, step: tuple[float, float]) -> np.ndarray:
    """The crop window shrunk by the interpolator's reach (in original pixels), so that every masked pixel
    is sampled from generated pixels only, never from the replicated border beyond the generated frame.

    ``step``: generated pixels per original pixel along x and y.
    """
    reach = [LANCZOS_A * max(s / SHARP_SHRINK, 1.0) / s for s in step]
    return np.asarray(box, dtype=np.float64) + np.array([reach[0], reach[1], -reach[0], -reach[1]])


def face_mask(box: np.ndarray, window: tuple[int, int, int, int], points: np.ndarray | None = None,
              expand: float = DEFAULT_EXPAND) -> np.ndarray:
    """Binary ``(h, w)`` uint8 (0/1) mask over ``window``: pixel centres inside the crop window ``box``
    and, when ``points`` (``(N, 2)`` source pixels) are given, inside their convex hull scaled by ``1 + expand``."""
    x0, y0, x1, y1 = window
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    inside_x = (xs >= box[0]) & (xs < box[2])
    inside_y = (ys >= box[1]) & (ys < box[3])
    binary = (inside_y[:, None] & inside_x[None, :]).astype(np.uint8)
    if points is not None:
        hull = cv2.convexHull(np.asarray(points, dtype=np.float32)).reshape(-1, 2).astype(np.float64)
        centre = hull.mean(axis=0)
        hull = centre + (hull - centre) * (1.0 + expand) - 0.5 - np.array([x0, y0])  # cv2: pixel i centred at i
        shape = np.zeros_like(binary)
        cv2.fillConvexPoly(shape, np.round(hull * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
        binary &= shape
    return binary


def feather_mask(binary: np.ndarray, width: float) -> np.ndarray:
    """Binary ``(h, w)`` mask -> float32 in [0, 1]: ``min(d / width, 1)`` with ``d`` the Euclidean distance
    in pixels to the nearest outside pixel (the image border does not count as outside). ``width`` 0 = hard."""
    if width <= 0:
        return binary.astype(np.float32)
    distance = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.minimum(distance / float(width), 1.0).astype(np.float32)


def match_colors(pasted: np.ndarray, original: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Move the mean/std of ``pasted`` to those of ``original`` in CIE LAB, measured where ``weights >= 0.5``.

    ``pasted`` ``(h, w, 3)`` float 0..255 RGB, ``original`` ``(h, w, 3)`` uint8, ``weights`` ``(h, w)``;
    returns float 0..255 RGB. The std ratio is kept within 0.5..2; fewer than 16 pixels: unchanged.
    """
    region = weights >= 0.5
    if np.count_nonzero(region) < 16:
        return pasted
    lab_pasted = cv2.cvtColor(np.clip(pasted / 255.0, 0, 1).astype(np.float32), cv2.COLOR_RGB2LAB)
    lab_original = cv2.cvtColor(original.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mean_p, std_p = lab_pasted[region].mean(axis=0), lab_pasted[region].std(axis=0)
    mean_o, std_o = lab_original[region].mean(axis=0), lab_original[region].std(axis=0)
    ratio = np.clip(std_o / np.maximum(std_p, 1e-6), 0.5, 2.0)
    moved = (lab_pasted - mean_p) * ratio + mean_o
    return cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0


def paste_frame(generated: np.ndarray, original: np.ndarray, box: np.ndarray, points: np.ndarray | None = None,
                expand: float = DEFAULT_EXPAND, feather: float = DEFAULT_FEATHER, color_match: bool = False,
                size: float | None = None) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """One generated frame into one original, worked on only inside the window.

    Args:
        generated: ``(gh, gw, 3)`` uint8 or float levels (0..255 scale), stretched onto ``box``.
        original: ``(H, W, 3)`` uint8.
        box: ``[x0, y0, x1, y1]`` crop window in original pixels.
        points: ``(N, 2)`` face points in original pixels for a face-shaped mask, None for the box.
        expand: the face hull grows by this fraction about its centre.
        feather: the inward feather width in face sizes (0..0.5; 0 = hard edge).
        size: the face size in original pixels (:func:`face_size_of`); None: :func:`face_size` of
            ``box`` and ``points``.
    Returns:
        ``(x0, y0, x1, y1)`` window, its blended pixels ``(h, w, 3)`` uint8 and mask ``(h, w)`` float32.
    """
    width_px = check_feather(feather) * (face_size(box, points) if size is None else float(size))
    height, width = original.shape[:2]
    window = mask_window(box, (width, height))
    x0, y0, x1, y1 = window
    step = (generated.shape[1] / (box[2] - box[0]), generated.shape[0] / (box[3] - box[1]))
    mask = feather_mask(face_mask(inset_box(box, step), window, points, expand), width_px)
    origin = ((x0 - box[0]) * step[0], (y0 - box[1]) * step[1])
    pasted = resample(generated, origin, step, (x1 - x0, y1 - y0), "edge", sharp_shrink=SHARP_SHRINK)
    below = original[y0:y1, x0:x1]
    if color_match:
        pasted = match_colors(pasted, below, mask)
    blended = below + mask[..., None] * (np.clip(pasted, 0, 255) - below)
    return window, to_uint8(blended), mask


def paste_frames(generated: np.ndarray, originals: np.ndarray, info: CropInfo, mask: str = DEFAULT_MASK,
                 expand: float = DEFAULT_EXPAND, feather: float = DEFAULT_FEATHER, color_match: bool = False,
                 progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste N generated frames back into their originals.

    Args:
        generated: ``(N, gh, gw, 3)`` uint8 or float pixel levels on the 0..255 scale (any size; stretched onto
            each crop window; float keeps sub-level precision and a crop's overshoot).
        originals: ``(M, H, W, 3)`` uint8 with ``M`` 1 (a photo) or N, and ``(W, H)`` the crop info's source size.
        info: the crop info of the originals (one window per original).
        mask: ``box`` or ``face``; ``expand`` scales the face hull; ``feather`` the inward feather width in
            face sizes (each frame's :func:`face_size_of`).
        progress: optional ``progress(done, total)`` per frame.
    Returns:
        ``(N, H, W, 3)`` uint8 frames and ``(N, H, W)`` uint8 masks (255 = fully generated).
    """
    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)}; got {mask!r}")
    count, height, width = len(generated), originals.shape[1], originals.shape[2]
    if (width, height) != tuple(info.source_size):
        raise ValueError(f"the original input is {width}x{height} but the crop info was made from {info.source_size[0]}x"
                         f"{info.source_size[1]} images; connect the photo or frames that went into AniPortrait Face Crop")
    check_frame_counts(count, len(originals), info)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    masks = np.zeros((count, height, width), dtype=np.uint8)
    for n in range(count):
        m = n if len(originals) > 1 else 0
        points = info.face_points[m] if mask == "face" and info.face_points is not None else None
        (x0, y0, x1, y1), pixels, weights = paste_frame(generated[n], originals[m], info.boxes[m], points, expand,
                                                         feather, color_match, face_size_of(info, m))
        frames[n] = originals[m]
        frames[n, y0:y1, x0:x1] = pixels
        masks[n, y0:y1, x0:x1] = to_uint8(weights * 255.0)
        if progress is not None:
            progress(n + 1, count)
    return frames, masks
