"""Faces from newer ComfyUI's own MediaPipe face landmarks (the core ``FACE_LANDMARKS`` value), converted at the edge.

The layout, as read in ComfyUI's ``comfy_extras/nodes_mediapipe.py`` (node ``MediaPipeFaceLandmarker``) at
comfyanonymous/ComfyUI commit a2b261d8 ("MediaPipe Face Landmarker", loader output FACE_LANDMARKER) and in its later
revision ("Detect Face Landmarks (MediaPipe)", loader output FACE_DETECTION_MODEL from models/detection), with
``comfy_extras/mediapipe/face_landmarker.py`` (``FaceLandmarker.detect_batch``, commit 12940417) and
``comfy_extras/mediapipe/face_geometry.py``; both revisions give the same value (core 0.23 and later)::

    {"frames": [                      # one list per image of the IMAGE batch (empty: no face in that image)
        [{"bbox_xyxy": (4,) float32,  # landmark extent, image pixels
          "landmarks_xy": (478, 2) float32,   # image pixels (x right, y down)
          "landmarks_3d": (478, 3) float32,   # FaceMesh output in its 192 x 192 crop's pixels (before the crop's
                                              # rotation and scale back to the image); z on the crop's x scale
          "blendshapes": {name: float},       # 52 ARKit scores in [0, 1], "_neutral" included
          "presence": float, "score": float,  # mesh presence (raw logit), detector score
          "transformation_matrix": (4, 4) float32}, ...],   # core's own port of MediaPipe's face geometry
        ...],
     "image_size": (H, W),             # pixels
     "connection_sets": {name: frozenset[(int, int)]}}

(its second output, core ``BOUNDING_BOX``, is per image a list of ``{"x", "y", "width", "height", "label",
"score"}`` in pixels; the boxes are also in ``bbox_xyxy`` above, so it is not needed here).

A record becomes a :class:`~aniportrait_lib.data.Face` the way the pack's landmarker makes one: MediaPipe's normalized
landmarks (x / W, y / H, and z = z_crop * crop scale / W, the crop scale fitted from ``landmarks_3d`` to
``landmarks_xy`` as core itself does), then the canonical mesh and transform from
:func:`~aniportrait_lib.face.geometry.metric_geometry` with the pack's canonical model (core's own
``transformation_matrix`` is not used, so both sources give one geometry), blendshapes by name (0 where absent).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..data import BLENDSHAPE_NAMES, NUM_LANDMARKS, Face
from .geometry import CanonicalFaceModel, metric_geometry

WHAT = "face_landmarks"


def _frames(value: Any) -> list:
    if not isinstance(value, Mapping) or not isinstance(value.get("frames"), (list, tuple)) or "image_size" not in value:
        raise ValueError(f"{WHAT} is not core's FACE_LANDMARKS value (a dict with 'frames' and 'image_size'); connect the "
                         f"face_landmarks output of core's Detect Face Landmarks (MediaPipe) node")
    return list(value["frames"])


def image_size(value: Any) -> tuple[int, int]:
    """``(width, height)`` in pixels of the images core's landmarks were found in (core stores ``(H, W)``)."""
    _frames(value)
    h, w = (int(v) for v in value["image_size"])
    return w, h


def face_from_record(record: Mapping[str, Any], width: int, height: int, model: CanonicalFaceModel) -> Face:
    """One core face record -> a :class:`Face` of a ``width x height`` image (see the module docstring)."""
    try:
        xy = np.asarray(record["landmarks_xy"], dtype=np.float64)
        xyz = np.asarray(record["landmarks_3d"], dtype=np.float64)
    except (KeyError, TypeError):
        raise ValueError(f"a face of {WHAT} lacks 'landmarks_xy' or 'landmarks_3d'; connect core's Detect Face "
                         f"Landmarks (MediaPipe) output unchanged") from None
    if xy.shape != (NUM_LANDMARKS, 2) or xyz.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"a face of {WHAT} has landmarks of shape {xy.shape} and {xyz.shape}; expected "
                         f"({NUM_LANDMARKS}, 2) pixels and ({NUM_LANDMARKS}, 3) as core's MediaPipe node makes them")
    # the crop -> image similarity, fitted as core's face_geometry does: its x row's length is the crop's scale
    affine, *_ = np.linalg.lstsq(np.column_stack([xyz[:, :2], np.ones(len(xyz))]), xy, rcond=None)
    crop_scale = float(np.linalg.norm(affine[0]))
    landmarks = np.column_stack([xy[:, 0] / width, xy[:, 1] / height, xyz[:, 2] * crop_scale / width])
    mesh, transform = metric_geometry(landmarks.astype(np.float32), width, height, model)
    scores = record.get("blendshapes") or {}
    blendshapes = np.array([float(scores.get(name, 0.0)) for name in BLENDSHAPE_NAMES], dtype=np.float64)
    return Face(landmarks=landmarks, mesh_canonical=mesh.astype(np.float64), transform=transform.astype(np.float64),
                blendshapes=np.clip(blendshapes, 0.0, 1.0), blendshape_names=list(BLENDSHAPE_NAMES),
                image_size=(width, height))


def faces_in_frame(value: Any, frame: int, model: CanonicalFaceModel) -> list[Face]:
    """Every face core found in image ``frame`` (0-based) of the batch, as :class:`Face` objects."""
    frames = _frames(value)
    if not 0 <= frame < len(frames):
        raise ValueError(f"frame {frame} asked for but {WHAT} covers {len(frames)} image"
                         f"{'s' if len(frames) != 1 else ''}; set frame to 0..{max(len(frames) - 1, 0)}")
    width, height = image_size(value)
    return [face_from_record(r, width, height, model) for r in frames[frame]]


def faces_per_frame(value: Any, model: CanonicalFaceModel, count: int | None = None,
                    size: tuple[int, int] | None = None) -> Iterator[list[Face]]:
    """Per image, every face core found (read lazily); checks ``count`` images of ``size`` ``(W, H)`` when given."""
    frames = _frames(value)
    width, height = image_size(value)
    if count is not None and count != len(frames):
        raise ValueError(f"{WHAT} covers {len(frames)} images but the frames input has {count}; give core's Detect "
                         f"Face Landmarks the same frames")
    if size is not None and tuple(size) != (width, height):
        raise ValueError(f"{WHAT} was found on {width}x{height} images but the frames are {size[0]}x{size[1]}; give "
                         f"core's Detect Face Landmarks the same frames")
    return (_convert(records, width, height, model) for records in frames)


def _convert(records: Sequence[Mapping[str, Any]], width: int, height: int, model: CanonicalFaceModel) -> list[Face]:
    return [face_from_record(r, width, height, model) for r in records or []]
