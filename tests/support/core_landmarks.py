"""Core ``FACE_LANDMARKS`` values built from the pack's own faces, in the layout newer ComfyUI's Detect Face Landmarks
(MediaPipe) node gives (see ``aniportrait_lib/face/core_landmarks.py``)."""
from __future__ import annotations

import math

import numpy as np

#: FaceMesh's crop side in pixels: core's ``landmarks_3d`` are in this crop's pixels
CROP = 192


def core_record(face, angle: float = 0.1) -> dict:
    """One face as core's face dict: pixels, and ``landmarks_3d`` in a 192 x 192 crop rotated by ``angle`` (radians)
    around the face box, 1.5 face sizes wide (as core's ROI), with z scaled like x."""
    width, height = face.image_size
    xy = face.landmarks[:, :2] * [width, height]
    box = np.concatenate([xy.min(0), xy.max(0)])
    centre, side = (box[:2] + box[2:]) / 2, 1.5 * float(np.mean(box[2:] - box[:2]))
    cos, sin = math.cos(angle), math.sin(angle)
    d = xy - centre  # core: x = cx + u' s cos - v' s sin, y = cy + u' s sin + v' s cos with s = side / 192
    u = (d[:, 0] * cos + d[:, 1] * sin) * CROP / side + CROP / 2
    v = (-d[:, 0] * sin + d[:, 1] * cos) * CROP / side + CROP / 2
    z = face.landmarks[:, 2] * width * CROP / side
    return {
        "bbox_xyxy": box.astype(np.float32),
        "blendshapes": {"_neutral": 0.05, **dict(zip(face.blendshape_names, face.blendshapes.tolist()))},
        "landmarks_xy": xy.astype(np.float32),
        "landmarks_3d": np.column_stack([u, v, z]).astype(np.float32),
        "presence": 9.0,
        "score": 0.9,
        "transformation_matrix": face.transform.astype(np.float32),
    }


def core_face_landmarks(faces_per_frame, width: int, height: int) -> dict:
    """A FACE_LANDMARKS value: per frame the records of its faces; ``image_size`` is (H, W) as core stores it."""
    return {"frames": [[core_record(f) for f in faces] for faces in faces_per_frame], "image_size": (height, width),
            "connection_sets": {}}
