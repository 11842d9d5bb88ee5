"""Faces for tests: a flat anime-style face that MediaPipe does not find, and how much face boxes jitter."""
from __future__ import annotations

import numpy as np


def anime_face(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A flat anime-style drawing (big eyes, dot nose, small mouth) MediaPipe finds no face in, and its five points."""
    import cv2

    s = size / 512
    img = np.full((size, size, 3), (200, 225, 250), np.uint8)

    def p(x, y):
        return int(round(x * s)), int(round(y * s))

    cv2.ellipse(img, p(256, 250), p(230, 230), 0, 180, 360, (60, 40, 90), -1)  # hair
    cv2.ellipse(img, p(256, 280), p(150, 175), 0, 0, 360, (205, 225, 255), -1)  # face
    cv2.rectangle(img, p(100, 150), p(412, 200), (60, 40, 90), -1)  # fringe
    for ex, ey in ((196, 290), (316, 290)):
        cv2.ellipse(img, p(ex, ey), p(34, 44), 0, 0, 360, (255, 255, 255), -1)
        cv2.ellipse(img, p(ex, ey + 4), p(26, 38), 0, 0, 360, (180, 60, 40), -1)
        cv2.circle(img, p(ex, ey + 6), int(14 * s), (40, 10, 10), -1)
        cv2.circle(img, p(ex - 10, ey - 12), int(9 * s), (255, 255, 255), -1)
        cv2.ellipse(img, p(ex, ey - 40), p(40, 10), 0, 180, 360, (30, 20, 30), int(5 * s))
    cv2.circle(img, p(256, 355), int(3 * s), (150, 160, 210), -1)
    cv2.line(img, p(236, 400), p(276, 400), (80, 80, 200), int(4 * s))
    points = np.array([[196, 290], [316, 290], [256, 355], [236, 400], [276, 400]], float) * s
    return img, points


def box_jitter(boxes: np.ndarray) -> dict[str, float]:
    """Frame-to-frame change of ``(T, 4)`` boxes in pixels: mean/max of the centre's move and the width's change."""
    boxes = np.asarray(boxes, dtype=np.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    moves = np.linalg.norm(np.diff(centre, axis=0), axis=1) if len(boxes) > 1 else np.zeros(1)
    sizes = np.abs(np.diff(boxes[:, 2] - boxes[:, 0])) if len(boxes) > 1 else np.zeros(1)
    return {"centre_mean": float(moves.mean()), "centre_max": float(moves.max()),
            "size_mean": float(sizes.mean()), "size_max": float(sizes.max())}
