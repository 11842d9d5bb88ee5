"""Lip-coloured landmark images (the PoseGuider's input), pixel-exact with the original.

Rules (reference quirk 12 and golden ``renderer``): a 512x512 black canvas; every landmark becomes a
float32 normalised coordinate (as the original's protobuf did), pixel ``min(floor(v * 512), 511)``;
landmarks outside [0, 1] are dropped with their edges; each edge is drawn with ``cv2.line``
(thickness 2, LINE_8) in a fixed order and colour; then ``cv2.resize`` (INTER_LINEAR) to W x H.
Colour triples are written to the array channels as listed in ``data/pose_image_style.json``: the
original drew on a BGR cv2 canvas and fed that very array to the model, so channel 0 of our images
is the first value of each triple, exactly what the model saw in training.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

#: internal canvas size of the original renderer (pixels)
CANVAS = 512


@lru_cache(maxsize=1)
def pose_image_style() -> dict:
    """Parts (name, colour, thickness, edges) in draw order."""
    return json.loads(resources.files(__package__).joinpath("data/pose_image_style.json").read_text())


@lru_cache(maxsize=1)
def _edge_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts, ends, colors, thick = [], [], [], []
    for part in pose_image_style()["parts"]:
        for a, b in part["edges"]:
            starts.append(a)
            ends.append(b)
            colors.append(part["color"])
            thick.append(part["thickness"])
    return np.array(starts), np.array(ends), np.array(colors, dtype=np.int64), np.array(thick)


def _is_inside_unit(v: np.ndarray) -> np.ndarray:
    """``(v > 0 or isclose(0, v)) and (v < 1 or isclose(1, v))`` with math.isclose defaults (rel 1e-9)."""
    near0 = v == 0  # isclose(0, v) with abs_tol 0 and rel_tol 1e-9 only holds for v == 0
    near1 = np.abs(v - 1) <= 1e-9 * np.maximum(np.abs(v), 1.0)
    return ((v > 0) | near0) & ((v < 1) | near1)


def canvas_pixels(landmarks: np.ndarray, width: int, height: int, normalized: bool) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks -> integer pixels on the 512 canvas and a validity mask.

    Args:
        landmarks: ``(N, >=2)``; normalised [0,1] if ``normalized`` else pixels of a ``width x height`` image.
    Returns:
        ``(N, 2)`` int pixels, ``(N,)`` bool (inside the image).
    """
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if normalized:
        norm = pts.astype(np.float32)
    else:
        norm = np.stack([pts[:, 0] / width, pts[:, 1] / height], axis=1).astype(np.float32)
    norm64 = norm.astype(np.float64)
    valid = _is_inside_unit(norm64).all(axis=1) & np.isfinite(norm64).all(axis=1)
    px = np.minimum(np.floor(np.nan_to_num(norm64) * CANVAS), CANVAS - 1).astype(np.int64)
    return px, valid


def draw_pose_image(landmarks: np.ndarray, width: int, height: int, normalized: bool = False) -> np.ndarray:
    """Render one pose image.

    Args:
        landmarks: ``(N, 2|3)`` with N >= 468 (face mesh order); pixel coordinates of a
            ``width x height`` image, or normalised [0, 1] when ``normalized``.
        width, height: output size in pixels.
    Returns:
        ``(height, width, 3)`` uint8, channels as the style lists them (the original's BGR array).
    """
    if width < 1 or height < 1:
        raise ValueError(f"pose image size must be positive, got {width}x{height}")
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 2 or landmarks.shape[0] < 468 or landmarks.shape[1] < 2:
        raise ValueError(f"landmarks must be (N>=468, 2|3) face-mesh points; got shape {landmarks.shape}")
    px, valid = canvas_pixels(landmarks, width, height, normalized)
    canvas = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    starts, ends, colors, thick = _edge_arrays()
    for a, b, color, t in zip(starts, ends, colors, thick):
        if valid[a] and valid[b]:
            cv2.line(canvas, (int(px[a, 0]), int(px[a, 1])), (int(px[b, 0]), int(px[b, 1])),
                     (int(color[0]), int(color[1]), int(color[2])), thickness=int(t))
    if (width, height) != (CANVAS, CANVAS):
        canvas = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)
    return canvas


def draw_pose_images(landmark_frames: np.ndarray, width: int, height: int, normalized: bool = False, progress=None) -> np.ndarray:
    """Render a sequence: ``(T, N, 2)`` -> ``(T, height, width, 3)`` uint8.

    ``progress(done, total)`` is called after each frame (and may raise to cancel).
    """
    frames = np.empty((len(landmark_frames), height, width, 3), dtype=np.uint8)
    for i, lmk in enumerate(landmark_frames):
        frames[i] = draw_pose_image(lmk, width, height, normalized)
        if progress is not None:
            progress(i + 1, len(landmark_frames))
    return frames
