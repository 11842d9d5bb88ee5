"""Reference-photo analysis as the pipeline uses it: optional resize to the video size, landmarks,
and the reference pose image."""
from __future__ import annotations

import cv2
import numpy as np

from ..data import Face
from .landmarker import FaceLandmarker
from .renderer import draw_pose_image
from .selection import LARGEST, FaceChoice


def resize_for_analysis(rgb: np.ndarray, width: int = 0, height: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> the image the face is analysed on.

    ``width = height = 0`` keeps the photo as it is. Otherwise it is stretched to ``width x height``
    (cv2 INTER_LINEAR, as the original), so that the landmarks match the photo the sampler stretches
    to the video size.
    """
    if bool(width) != bool(height):
        raise ValueError(f"set both width and height to resize the reference (got {width}x{height}), or leave both 0.")
    if width and (rgb.shape[1], rgb.shape[0]) != (width, height):
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    return rgb


def analyze_reference(landmarker: FaceLandmarker, rgb: np.ndarray, width: int = 0, height: int = 0,
                      choose: FaceChoice = LARGEST) -> tuple[Face, np.ndarray]:
    """The reference face and its pose image ``(h, w, 3)`` uint8 (the renderer's channel order).

    ``choose`` picks the face when the photo has several; its point (``nearest``) is in pixels of ``rgb`` as
    given, before any resize to ``width x height``.
    """
    image = resize_for_analysis(rgb, width, height)
    scaled = choose.scaled(image.shape[1] / rgb.shape[1], image.shape[0] / rgb.shape[0])
    face = landmarker.analyze(image, scaled)
    return face, draw_pose_image(face.landmarks, face.width, face.height, normalized=True)


def aspect_mismatch_note(face: Face, width: int, height: int) -> str | None:
    """A note when the face was analysed at another aspect ratio than the video's ``width x height``."""
    if abs(face.width / face.height - width / height) <= 0.01:
        return None
    return (f"the face was analysed on a {face.width}x{face.height} image but the video is {width}x{height}; set "
            f"width/height on AniPortrait Face Analysis to the video size so the landmarks match the stretched photo.")
