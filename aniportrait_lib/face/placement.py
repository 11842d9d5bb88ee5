"""A face placed by hand: MediaPipe's canonical face fitted to five points or a box.

MediaPipe finds no face on many drawings and anime close-ups (and at very low detection confidence
it puts the mesh beside the face). Here the user says where the face is instead, and the canonical
face model of the ``face_landmarker.task`` is posed so that its projection through the pack's
camera (:mod:`.pose_math`: perspective, vertical FOV 63 deg) lands on those points. The result is
the same :class:`~aniportrait_lib.data.Face` that MediaPipe analysis gives, so every later step
(Audio2Mesh, Audio2Pose, templates, projection, rendering) works unchanged.

Five points, in this order, in pixels of the image (origin top-left); "left" and "right" are
**as seen in the image** (the image-left eye is the person's right eye):

1. left eye centre, 2. right eye centre, 3. nose tip, 4. left mouth corner, 5. right mouth corner.

On the canonical mesh they are the mean of each eye's contour (16 vertices, MediaPipe's
``FACEMESH_RIGHT_EYE`` / ``FACEMESH_LEFT_EYE``), vertex 4 (the most protruding nose vertex) and
vertices 61 / 291 (the mouth corners).

A box ``x0, y0, x1, y1`` is the face from the top of the forehead to the chin and cheek to cheek
(what the canonical mesh spans). The five points are placed in it at the canonical face's own
proportions (:data:`BOX_POINT_RATIOS`, fractions of the box width from the left and of its height
from the top): eyes at (0.296, 0.318) and (0.704, 0.318), nose tip at (0.500, 0.494), mouth corners at
(0.341, 0.714) and (0.659, 0.714); a box gives no head rotation, so it is fitted facing the camera. The
placed face spans the box's height and is centred in it; seen in perspective its sides (further back) look
narrower than the box.

Fits (``fit``):

* ``"pose"``: full head pose - rotation (3), translation (3) - with the canonical face at its real
  size (scale 1), least squares on the reprojection error of the five points (the mouth corners'
  heights at half weight: expressions move them) plus a weak pull of
  yaw/pitch towards facing the camera (five points barely constrain them on unusual proportions);
* ``"frontal"``: the face looks straight at the camera, only tilted in the image plane (roll) and
  moved (translation): for drawings whose proportions are far from a real face's.

The landmarks are the projection of the whole canonical mesh (neutral expression) plus ten iris
points (each eye-contour centre and a 0.6 cm ring around it, MediaPipe's order), with MediaPipe's
relative depth ``z``; the transform is ``[R | t]`` in the convention of :func:`.geometry.metric_geometry`
(running that on the landmarks gives it back); blendshapes are all zero.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..data import NUM_BLENDSHAPES, NUM_LANDMARKS, NUM_MESH_LANDMARKS, Face
from . import pose_math
from .geometry import CanonicalFaceModel

#: the five points, in order (left/right as seen in the image)
POINT_NAMES = ("left eye centre", "right eye centre", "nose tip", "left mouth corner", "right mouth corner")
POINTS_FORMAT = ("five points 'x,y; x,y; x,y; x,y; x,y' in pixels: left eye centre, right eye centre, nose tip, "
                 "left mouth corner, right mouth corner (left/right as seen in the image)")
BOX_FORMAT = "a box 'x0,y0,x1,y1' in pixels (top-left and bottom-right corners of the face, forehead to chin)"
FITS = ("pose", "frontal")

#: eye contours of the canonical mesh (MediaPipe FACEMESH_RIGHT_EYE: the person's right = image left)
IMAGE_LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
IMAGE_RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP = 4
IMAGE_LEFT_MOUTH_CORNER = 61
IMAGE_RIGHT_MOUTH_CORNER = 291
#: (x from the left, y from the top) of the five points as fractions of the face box: the canonical
#: mesh's own proportions (orthographic, frontal; checked against the model in the tests)
BOX_POINT_RATIOS = np.array([[0.296, 0.318], [0.704, 0.318], [0.500, 0.494], [0.341, 0.714], [0.659, 0.714]])
#: iris ring radius (cm) and MediaPipe's iris order: centre, image right, up, image left, down
IRIS_RADIUS_CM = 0.6
_IRIS_RING = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
#: weights of the five points' x and y errors in the fit: a smile or a frown moves the mouth corners up and
#: down, which the neutral canonical face cannot follow, so their heights count half
POINT_WEIGHTS = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.5], [1.0, 0.5]])
#: weight of the pull of yaw/pitch (radians) towards facing the camera, against errors in eye distances
POSE_PRIOR_WEIGHT = 0.03
#: MediaPipe's 52 blendshape names minus ``_neutral``, in its order
BLENDSHAPE_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
assert len(BLENDSHAPE_NAMES) == NUM_BLENDSHAPES


@dataclass
class Placement:
    """A fitted face and how well it fits: ``errors_px`` ``(5,)`` distances of the fitted points to the given ones."""

    face: Face
    points: np.ndarray
    errors_px: np.ndarray

    def summary(self) -> str:
        return (f"face placed from 5 points: fitted points within {self.errors_px.mean():.1f} px on average "
                f"(at most {self.errors_px.max():.1f} px)")


# ----------------------------------------------------------------------------- canonical points


def canonical_five_points(model: CanonicalFaceModel) -> np.ndarray:
    """``(5, 3)`` the five points on the canonical mesh (cm), in :data:`POINT_NAMES` order."""
    v = np.asarray(model.vertices, dtype=np.float64)
    return np.stack([v[list(IMAGE_LEFT_EYE)].mean(0), v[list(IMAGE_RIGHT_EYE)].mean(0), v[NOSE_TIP],
                     v[IMAGE_LEFT_MOUTH_CORNER], v[IMAGE_RIGHT_MOUTH_CORNER]])


def five_points_from_landmarks(points_xy: np.ndarray) -> np.ndarray:
    """``(5, 2)`` the five points from face-mesh landmarks ``(>= 468, 2+)`` (any unit, e.g. pixels)."""
    p = np.asarray(points_xy, dtype=np.float64)[:, :2]
    return np.stack([p[list(IMAGE_LEFT_EYE)].mean(0), p[list(IMAGE_RIGHT_EYE)].mean(0), p[NOSE_TIP],
                     p[IMAGE_LEFT_MOUTH_CORNER], p[IMAGE_RIGHT_MOUTH_CORNER]])


def five_points_from_box(box) -> np.ndarray:
    """``(5, 2)`` the five points of a face box ``(x0, y0, x1, y1)`` at :data:`BOX_POINT_RATIOS`."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([x0, y0]) + BOX_POINT_RATIOS * np.array([x1 - x0, y1 - y0])


# ----------------------------------------------------------------------------- parsing and checks


def _numbers(text: str) -> list[float]:
    """Numbers from ``"1,2; 3,4"``, ``"1 2 3 4"``, JSON ``[[1,2],...]`` or ``[{"x":1,"y":2},...]`` (points editors).

    A value that is not a finite number (``x``, ``nan``, ``inf``, a JSON string) is named with its position.
    """
    text = str(text).strip()
    if text.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("not valid JSON") from None
        if isinstance(data, dict):
            data = [data]
        values: list = []
        for item in data:
            if isinstance(item, dict):
                if "x" not in item or "y" not in item:
                    raise ValueError("a JSON point lacks x or y")
                values += [item["x"], item["y"]]
            elif isinstance(item, (list, tuple)):
                values += list(item)
            else:
                values.append(item)
        return _finite(values, [json.dumps(v) for v in values])
    tokens = [t for t in re.split(r"[\s,;()\[\]]+", text) if t]
    return _finite(tokens, [f"'{t}'" for t in tokens])


def _finite(values: list, shown: list[str]) -> list[float]:
    """``values`` as floats; the first that is not a finite number raises, named by ``shown`` and its position."""
    numbers = []
    for i, (value, text) in enumerate(zip(values, shown), 1):
        number = _to_float(value)
        if number is None or math.isnan(number):
            raise ValueError(f"value {i}, {text}, is not a number")
        if not math.isfinite(number):
            raise ValueError(f"value {i}, {text}, is not a finite number")
        numbers.append(number)
    return numbers


def _to_float(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_points(text: str) -> np.ndarray:
    """``(5, 2)`` pixels from the text of five points (see :data:`POINTS_FORMAT`); a one-sentence error otherwise."""
    try:
        values = _numbers(text)
    except ValueError as e:
        raise ValueError(f"the points could not be read ({e}); give {POINTS_FORMAT}.") from None
    if len(values) != 10:
        raise ValueError(f"the points text holds {len(values)} numbers; give {POINTS_FORMAT}.")
    return np.array(values, dtype=np.float64).reshape(5, 2)


def parse_box(text: str) -> np.ndarray:
    """``(4,)`` ``x0, y0, x1, y1`` pixels from the text of a box (see :data:`BOX_FORMAT`)."""
    try:
        values = _numbers(text)
    except ValueError as e:
        raise ValueError(f"the box could not be read ({e}); give {BOX_FORMAT}.") from None
    if len(values) != 4:
        raise ValueError(f"the box text holds {len(values)} numbers; give {BOX_FORMAT}.")
    return np.array(values, dtype=np.float64)


def box_from_mask(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(4,)`` bounding box ``x0, y0, x1, y1`` (pixel edges) of a ``(H, W)`` mask's pixels above ``threshold``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"the mask must be one (height, width) mask; got shape {mask.shape}.")
    ys, xs = np.nonzero(mask > threshold)
    if xs.size == 0:
        raise ValueError("the mask is empty (no pixel above 0.5); mask the face, or give the box as text.")
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def check_box(box: np.ndarray, width: int, height: int) -> None:
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"the box ({x0:g},{y0:g},{x1:g},{y1:g}) is empty; give {BOX_FORMAT} with x1 > x0 and y1 > y0.")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"the box ({x0:g},{y0:g},{x1:g},{y1:g}) reaches outside the {width}x{height} image; "
                         f"give it in pixels of the image.")
    if min(x1 - x0, y1 - y0) < 8:
        raise ValueError(f"the box ({x0:g},{y0:g},{x1:g},{y1:g}) is smaller than 8 px; give the whole face.")


def check_points(points: np.ndarray, width: int, height: int) -> None:
    """Refuse points outside the image, eyes on top of each other, and points in the wrong order."""
    points = np.asarray(points, dtype=np.float64)
    outside = [f"{name} ({x:g},{y:g})" for name, (x, y) in zip(POINT_NAMES, points)
               if not (0 <= x <= width and 0 <= y <= height)]
    if outside:
        raise ValueError(f"the {', '.join(outside)} lie{'s' if len(outside) == 1 else ''} outside the {width}x{height} "
                         f"image; give the points in pixels of the image.")
    eye_left, eye_right, nose, mouth_left, mouth_right = points
    eye_vec = eye_right - eye_left
    iod = float(np.linalg.norm(eye_vec))
    if iod < 4.0:
        raise ValueError(f"the two eye centres are {iod:.1f} px apart; give points at least 4 px apart "
                         f"(left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner).")
    below = (mouth_left + mouth_right) / 2 - (eye_left + eye_right) / 2
    cross = eye_vec[0] * below[1] - eye_vec[1] * below[0]  # > 0: mouth below the eye line (image y down)
    if cross <= 0.2 * iod * iod or float(np.dot(mouth_right - mouth_left, eye_vec)) <= 0:
        raise ValueError("the points are not in face order: give the left eye centre, right eye centre, nose tip, left "
                         "mouth corner, right mouth corner (left/right as seen in the image), the mouth below the eyes.")


# ----------------------------------------------------------------------------- fitting


def _project(vertices: np.ndarray, transform: np.ndarray, width: int, height: int) -> np.ndarray:
    return pose_math.project_points(vertices[None], transform, np.zeros((1, 6)), height, width)[0]


def _focal_px(height: int) -> float:
    return 0.5 * height / math.tan(math.radians(pose_math.FOV_DEGREES) / 2)


def _transform(params: np.ndarray, fit: str) -> np.ndarray:
    m = np.eye(4)
    rotvec = params[:3] if fit == "pose" else np.array([0.0, 0.0, params[0]])
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    m[:3, 3] = params[-3:]
    return m


def fit_transform(points: np.ndarray, width: int, height: int, model: CanonicalFaceModel, fit: str = "pose") -> np.ndarray:
    """``(4, 4)`` canonical -> camera ``[R | t]`` placing the five canonical points on ``points`` ``(5, 2)`` pixels."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}; got '{fit}'.")
    points = np.asarray(points, dtype=np.float64)
    canon = canonical_five_points(model)
    iod = float(np.linalg.norm(points[1] - points[0]))
    focal = _focal_px(height)
    depth = focal * float(np.linalg.norm(canon[1] - canon[0])) / iod
    roll = -math.atan2(points[1, 1] - points[0, 1], points[1, 0] - points[0, 0])  # canonical y up, image y down
    rot = Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix()
    centre = points.mean(0)
    target = np.array([(centre[0] - width / 2) / focal * depth, -(centre[1] - height / 2) / focal * depth, -depth])
    translation = target - rot @ canon.mean(0)
    start = np.concatenate([[0.0, 0.0, roll] if fit == "pose" else [roll], translation])

    def residuals(params: np.ndarray) -> np.ndarray:
        err = ((_project(canon, _transform(params, fit), width, height) - points) * POINT_WEIGHTS).ravel() / iod
        return np.concatenate([err, POSE_PRIOR_WEIGHT * params[:2]]) if fit == "pose" else err

    # the depth must stay in front of the camera: bound tz below -1 cm (the near plane)
    lower = np.full(start.shape, -np.inf)
    upper = np.full(start.shape, np.inf)
    upper[-1] = -pose_math.NEAR - 1.0
    result = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return _transform(result.x, fit)


def landmarks_from_transform(transform: np.ndarray, model: CanonicalFaceModel, width: int, height: int) -> np.ndarray:
    """``(478, 3)`` MediaPipe-style landmarks of the canonical mesh (+ iris) posed by ``transform``.

    x, y: the pack's projection normalised by the image size; z: relative depth on the x scale
    (``(depth - mean depth) / mean depth`` over the near-plane width, mean over the 468 mesh points),
    which :func:`.geometry.metric_geometry` unprojects back to the same camera-space points.
    """
    vertices = np.asarray(model.vertices, dtype=np.float64)
    iris = [vertices[list(eye)].mean(0) + IRIS_RADIUS_CM * _IRIS_RING for eye in (IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE)]
    points = np.concatenate([vertices] + iris)  # (478, 3)
    xy = _project(points, transform, width, height) / np.array([width, height], dtype=np.float64)
    depth = -(points @ transform[:3, :3].T + transform[:3, 3])[:, 2]
    mean_depth = float(depth[:NUM_MESH_LANDMARKS].mean())
    near_width = 2.0 * pose_math.NEAR * math.tan(math.radians(pose_math.FOV_DEGREES) / 2) * width / height
    z = (depth - mean_depth) * pose_math.NEAR / (mean_depth * near_width)
    return np.concatenate([xy, z[:, None]], axis=1)


def face_from_transform(transform: np.ndarray, model: CanonicalFaceModel, width: int, height: int) -> Face:
    """The :class:`Face` of the neutral canonical mesh posed by ``transform`` in a ``width x height`` image."""
    landmarks = landmarks_from_transform(transform, model, width, height)
    assert landmarks.shape == (NUM_LANDMARKS, 3)
    return Face(landmarks=landmarks, mesh_canonical=np.asarray(model.vertices, dtype=np.float64),
                transform=np.asarray(transform, dtype=np.float64), blendshapes=np.zeros(NUM_BLENDSHAPES),
                blendshape_names=list(BLENDSHAPE_NAMES), image_size=(width, height))


def place_face(points: np.ndarray, width: int, height: int, model: CanonicalFaceModel, fit: str = "pose") -> Placement:
    """Fit the canonical face to five points ``(5, 2)`` (pixels of a ``width x height`` image); checks them first."""
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    check_points(points, width, height)
    face = face_from_transform(fit_transform(points, width, height, model, fit), model, width, height)
    errors = np.linalg.norm(five_points_from_landmarks(face.landmarks_px()) - points, axis=1)
    return Placement(face, points, errors)


def place_face_in_box(box, width: int, height: int, model: CanonicalFaceModel) -> Placement:
    """Fit the canonical face, facing the camera, to a face box ``(x0, y0, x1, y1)`` (pixels).

    The five points are put at :data:`BOX_POINT_RATIOS` of the box and fitted with ``fit="frontal"``: the face
    spans the box's height (forehead top to chin) and is centred in it; its width follows from the canonical
    proportions seen in perspective (the cheeks, further back, look narrower: ~75-90% of a box as wide as
    the canonical face's front view).
    """
    box = np.asarray(box, dtype=np.float64).reshape(4)
    check_box(box, width, height)
    return place_face(five_points_from_box(box), width, height, model, fit="frontal")


# ----------------------------------------------------------------------------- the reference, as the node uses it

MODES = ("points", "box")


def place_reference(model: CanonicalFaceModel, photo_size: tuple[int, int], mode: str, text: str, fit: str = "pose",
                    mask: np.ndarray | None = None, width: int = 0, height: int = 0) -> tuple[Placement, str]:
    """The reference face from five points or a box given in pixels of the ``photo_size`` ``(W, H)`` photo.

    ``mask`` (``(H, W)``, optional) gives the box instead of the text. ``width x height`` (both > 0) is the
    size the face is made for (the photo stretched to the video size, as Face Analysis does): the points
    are scaled to it. Returns the placement and a note for the user.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got '{mode}'.")
    if bool(width) != bool(height):
        raise ValueError(f"set both width and height to resize the reference (got {width}x{height}), or leave both 0.")
    photo_w, photo_h = (int(v) for v in photo_size)
    out_w, out_h = (width, height) if width else (photo_w, photo_h)
    scale = np.array([out_w / photo_w, out_h / photo_h])
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != (photo_h, photo_w):
            raise ValueError(f"the mask is {mask.shape[-1]}x{mask.shape[0]} but the image is {photo_w}x{photo_h}; "
                             f"give a mask of the reference image.")
        box = box_from_mask(mask)
        check_box(box, photo_w, photo_h)
        placement = place_face_in_box(box * np.tile(scale, 2), out_w, out_h, model)
        return placement, f"face placed in the mask's box ({', '.join(f'{v:g}' for v in box)}), facing the camera"
    if mode == "box":
        box = parse_box(text)
        check_box(box, photo_w, photo_h)
        placement = place_face_in_box(box * np.tile(scale, 2), out_w, out_h, model)
        return placement, "face placed in the box, facing the camera"
    points = parse_points(text)
    check_points(points, photo_w, photo_h)
    placement = place_face(points * scale, out_w, out_h, model, fit)
    return placement, placement.summary()
