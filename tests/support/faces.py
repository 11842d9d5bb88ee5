"""Faces drawn for tests: a flat anime-style face that MediaPipe does not find."""
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

