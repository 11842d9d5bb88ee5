"""A face placed by hand: MediaPipe's canonical face fitted to five points or a box, with the drawing's proportions.

MediaPipe finds no face on many drawings. Here the user says where the face is, and the canonical face of the
``face_landmarker.task`` is shaped and posed so that its projection through the pack's camera (:mod:`.pose_math`)
lands on those points: the same :class:`~aniportrait_lib.data.Face` that analysis gives, for every later step.

Five points, in this order, in pixels (origin top-left), left/right **as seen in the image**: left eye centre,
right eye centre, nose tip, left mouth corner, right mouth corner; on the mesh: the mean of each eye's contour
(MediaPipe's ``FACEMESH_RIGHT_EYE`` / ``FACEMESH_LEFT_EYE``), vertex 4, vertices 61 / 291. Named points may
follow (``; name=x,y``, :data:`EXTRA_POINTS`: eye corners, upper-lip top, lower-lip bottom, chin); a JSON
object of names to points works too. A box ``x0, y0, x1, y1`` is the face from the hairline to the chin, cheek
to cheek, and may reach past the image (a close-up's chin below the frame): the five points are put in it at
the facial thirds of the drawing canon (:data:`BOX_POINT_RATIOS`), the chin on its bottom edge, facing the camera.

The fit is non-rigid (:class:`_Shape`): per region (each eye, the nose, the mouth, the lower face) a scale
and an offset of the canonical mesh, smoothly blended, within limits so it stays a face, fitted with the head
pose so the face passes through the points. The five set the eye->nose and nose->mouth distances and the
mouth's width and tilt; what they do not show follows from them: the lips' height scales with the mouth's
width, the lower face with the geometric mean of the nose->mouth and mouth-width scales, the eyes grow with
the square root of how short the face is for its eye distance (at most until they are one eye width apart,
the drawing canon). Extra points override these guesses; a close-up's relief is flattened (:data:`MIN_DISTANCE_CM`).
``fit="pose"``: full head pose, yaw/pitch weakly pulled to the camera; ``"frontal"``: only rolled and moved.

The landmarks: the shaped mesh (also the face's ``mesh_canonical``, what motion is added to) and ten iris points
(eye-contour centre, a ring of 0.6 cm times the eye's scale) projected, with MediaPipe's relative depth ``z``; the
transform is ``[R | t]`` as :func:`.geometry.metric_geometry` gives; blendshapes are all zero.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..data import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, NUM_LANDMARKS, NUM_MESH_LANDMARKS, Face
from . import pose_math
from .geometry import CanonicalFaceModel

#: the five points, in order (left/right as seen in the image)
POINT_NAMES = ("left eye centre", "right eye centre", "nose tip", "left mouth corner", "right mouth corner")
#: the five points' names in a JSON object, and the extra points one may add by name -> their canonical vertex
FIVE_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
UPPER_LIP, LOWER_LIP, CHIN = 0, 17, 152
EXTRA_POINTS = {"left_eye_outer": 33, "left_eye_inner": 133, "right_eye_inner": 362, "right_eye_outer": 263,
                "upper_lip": UPPER_LIP, "lower_lip": LOWER_LIP, "chin": CHIN}
POINTS_FORMAT = ("five points 'x,y; x,y; x,y; x,y; x,y' in pixels: left eye centre, right eye centre, nose tip, "
                 "left mouth corner, right mouth corner (left/right as seen in the image), optionally followed by "
                 "named points '; name=x,y' (" + ", ".join(EXTRA_POINTS) + ")")
BOX_FORMAT = ("a box 'x0,y0,x1,y1' in pixels (top-left and bottom-right corners of the face, hairline to chin; it may "
              "reach past the image)")
FITS = ("pose", "frontal")

#: eye contours of the canonical mesh (MediaPipe FACEMESH_RIGHT_EYE: the person's right = image left)
IMAGE_LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
IMAGE_RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP, IMAGE_LEFT_MOUTH_CORNER, IMAGE_RIGHT_MOUTH_CORNER = 4, 61, 291
#: (x from the left, y from the top) of the five points as fractions of a hairline-to-chin box. Heights: the facial
#: thirds of the drawing canon (brows 1/3, nose base 2/3): eyes a quarter third below the brows, the nose tip just
#: above its base, the mouth a third down the lower third. Across: the canonical mesh's own (checked in the tests)
BOX_POINT_RATIOS = np.array([[0.296, 5 / 12], [0.704, 5 / 12], [0.500, 0.64], [0.341, 7 / 9], [0.659, 7 / 9]])
#: iris ring radius (cm) and MediaPipe's iris order: centre, image right, up, image left, down
IRIS_RADIUS_CM = 0.6
_IRIS_RING = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=np.float64)
#: weights of the five points' x and y errors in the fit: a smile or a frown moves the mouth corners up and
#: down, which the neutral canonical face cannot follow, so their heights count half
POINT_WEIGHTS = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.5], [1.0, 0.5]])
#: weight of the pull of yaw/pitch (radians) towards facing the camera, against errors in eye distances
POSE_PRIOR_WEIGHT = 0.03
#: weights of the shape prior (:meth:`_Shape.prior`) against point errors (fractions of the IOD): the proportions
#: the five points set (log scales) barely held; offsets (per IOD) that a head turn or tilt explains first; the
#: details the five points do not see (log scales, radians), held to what they imply until extra points say more.
#: With extra points the five count EXTRA_WEIGHT times more (they set the pose; the others its details)
W_SHAPE, W_OFFSET, W_DETAIL, EXTRA_WEIGHT = 0.02, 0.3, 0.1, 2.0
#: limits of the shaped face: region scales within 3x of the canonical, the eye->nose->mouth gaps within 5x
SCALE_LIMIT, GAP_LIMIT = 3.0, 5.0
#: a placed face's relief (cm) is flattened to look as from at least this far (a portrait's distance, cm): the
#: pack's camera sees a close-up from centimetres away, and drawings have next to no perspective
MIN_DISTANCE_CM = 50.0


@dataclass
class Placement:
    """A fitted face and how well it fits: ``errors_px`` ``(5,)`` and ``extra_errors_px`` (by name) distances of the
    fitted points to the given ones."""

    face: Face
    points: np.ndarray
    errors_px: np.ndarray
    extra_errors_px: dict = field(default_factory=dict)

    def summary(self) -> str:
        text = (f"face placed from 5 points: fitted points within {self.errors_px.mean():.1f} px on average "
                f"(at most {self.errors_px.max():.1f} px)")
        if self.extra_errors_px:
            errors = list(self.extra_errors_px.values())
            text += f"; {len(errors)} named points within {np.mean(errors):.1f} px on average (at most {max(errors):.1f} px)"
        return text


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
        try:
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number):
            raise ValueError(f"value {i}, {text}, is not a number")
        if not math.isfinite(number):
            raise ValueError(f"value {i}, {text}, is not a finite number")
        numbers.append(number)
    return numbers


def parse_points(text: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(5, 2)`` pixels and ``{name: (2,)}`` extra points from the text of the points (see :data:`POINTS_FORMAT`).

    The five come first, unnamed as before; named points ``name=x,y`` follow, separated by ``;`` or new lines.
    A JSON object maps names (:data:`FIVE_NAMES` and :data:`EXTRA_POINTS`) to ``[x, y]`` or ``{"x": .., "y": ..}``.
    A one-sentence error otherwise.
    """
    try:
        positional, named = _split_named(str(text).strip())
        values = _numbers(positional) if positional else []
        extra = {}
        for name, value in named.items():
            xy = _numbers(value)
            if len(xy) != 2:
                raise ValueError(f"the point {name} holds {len(xy)} numbers, not x,y")
            extra[name] = np.array(xy, dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"the points could not be read ({e}); give {POINTS_FORMAT}.") from None
    unknown = [n for n in extra if n not in EXTRA_POINTS and n not in FIVE_NAMES]
    if unknown:
        raise ValueError(f"the point name {unknown[0]!r} is not known; use {', '.join(FIVE_NAMES + tuple(EXTRA_POINTS))}.")
    named_five = [n for n in FIVE_NAMES if n in extra]
    if named_five and (values or len(named_five) < 5):
        raise ValueError(f"give the five points all unnamed (first) or all by name ({', '.join(FIVE_NAMES)}).")
    values = values or [float(c) for n in named_five for c in extra[n]]
    if len(values) != 10:
        raise ValueError(f"the points text holds {len(values)} numbers; give {POINTS_FORMAT}.")
    return (np.array(values, dtype=np.float64).reshape(5, 2),
            {n: xy for n, xy in extra.items() if n in EXTRA_POINTS})


def _split_named(text: str) -> tuple[str, dict[str, str]]:
    """(the unnamed part, ``{name: its text}``) of a points text; a JSON object of names gives only named points."""
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("not valid JSON") from None
        if isinstance(data, dict) and not set(data) <= {"x", "y"}:
            return "", {str(k).strip().lower(): json.dumps(v) for k, v in data.items()}
        return text, {}
    if "=" not in text:
        return text, {}
    unnamed, named = [], {}
    for item in re.split(r"[;\n]+", text):
        match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*=\s*(.*?)\s*", item)
        if match:
            named[match[1].strip().lower().replace(" ", "_")] = match[2]
        elif item.strip():
            unnamed.append(item)
    return "; ".join(unnamed), named


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
    """Refuse an empty or tiny box, and one that lies wholly outside the image (a box may reach past its edges)."""
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"the box ({x0:g},{y0:g},{x1:g},{y1:g}) is empty; give {BOX_FORMAT} with x1 > x0 and y1 > y0.")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"the box ({x0:g},{y0:g},{x1:g},{y1:g}) lies outside the {width}x{height} image; "
                         f"give it in pixels of the image.")
    if min(x1 - x0, y1 - y0) < 8:
        raise ValueError(f"the box ({x0:g},{y0:g},{x1:g},{y1:g}) is smaller than 8 px; give the whole face.")


def check_points(points: np.ndarray, width: int, height: int, extra: dict | None = None) -> None:
    """Refuse points outside the image, eyes on top of each other, points in the wrong order; ``extra`` points
    (``{name: (x, y)}``) may lie outside the image (a chin below the frame), up to one image size away."""
    points = np.asarray(points, dtype=np.float64)
    outside = [f"{name} ({x:g},{y:g})" for name, (x, y) in zip(POINT_NAMES, points)
               if not (0 <= x <= width and 0 <= y <= height)]
    if outside:
        raise ValueError(f"the {', '.join(outside)} lie{'s' if len(outside) == 1 else ''} outside the {width}x{height} "
                         f"image; give the points in pixels of the image.")
    far = [f"{name} ({x:g},{y:g})" for name, (x, y) in (extra or {}).items()
           if not (-width <= x <= 2 * width and -height <= y <= 2 * height)]
    if far:
        raise ValueError(f"the {', '.join(far)} lie{'s' if len(far) == 1 else ''} more than the image's size outside the "
                         f"{width}x{height} image; give the points in pixels of the image.")
    _check_order(points)


def _check_order(points: np.ndarray) -> None:
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


# ----------------------------------------------------------------------------- the drawing's proportions


class _Shape:
    """The canonical mesh's regions, and the deformation that gives it a drawing's proportions.

    Regions (canonical x, y in cm): each eye, the nose, the mouth, each fully moved inside an ellipse 20%
    larger than the feature and blended out to twice that; the rest of the face follows a smooth vertical
    remap through the heights of the chin, mouth, nose tip, eyes and mesh top (a monotone cubic), so the
    cheeks and the jaw stretch between the features instead of tearing. Parameters ``d`` ``(20,)``:
    nose x offset, eye->nose and nose->mouth gap scales (log), mouth x offset, mouth width scale (log), mouth
    roll, mouth height / width (log), mouth->chin scale (log), and per eye: x, y offset, width, height (log),
    roll, upper-lid / lower-lid height (log). All offsets in cm, rolls in radians.
    """

    def __init__(self, model: CanonicalFaceModel):
        v = np.asarray(model.vertices, dtype=np.float64)
        self.vertices = v
        self.eyes = np.stack([v[list(IMAGE_LEFT_EYE)].mean(0), v[list(IMAGE_RIGHT_EYE)].mean(0)])
        self.mouth = (v[IMAGE_LEFT_MOUTH_CORNER] + v[IMAGE_RIGHT_MOUTH_CORNER]) / 2
        self.iod = float(np.linalg.norm(self.eyes[1] - self.eyes[0]))
        eye_half = (v[133, 0] - v[33, 0]) / 2
        mouth_half = (v[IMAGE_RIGHT_MOUTH_CORNER, 0] - v[IMAGE_LEFT_MOUTH_CORNER, 0]) / 2
        lips_half = (v[UPPER_LIP, 1] - v[LOWER_LIP, 1]) / 2
        # (centre x, centre y, half-width, half-height) of the fully moved part of each region
        self.regions = np.array([[*self.eyes[0, :2], 1.2 * eye_half, 0.75 * eye_half],
                                 [*self.eyes[1, :2], 1.2 * eye_half, 0.75 * eye_half],
                                 [0.0, v[NOSE_TIP, 1], 0.45 * eye_half * 2, 0.9 * eye_half],
                                 [*self.mouth[:2], 1.2 * mouth_half, 1.2 * lips_half]])
        # heights the rest of the face is remapped through (ascending): chin, mouth corners, nose tip, eyes, top
        self.keys = np.array([v[CHIN, 1], self.mouth[1], v[NOSE_TIP, 1], self.eyes[0, 1], v[:, 1].max()])
        # the largest eye scale: the eyes as wide as the gap between them ("one eye width apart"), about each centre
        self.eye_scale_max = self.iod / (2 * eye_half + 2 * (self.eyes[1, 0] - v[362, 0]))

    def weights(self, points: np.ndarray) -> np.ndarray:
        """``(N, 4)`` region weights of canonical points ``(N, 3)``: 1 inside a region's ellipse, a smoothstep (C1) down
        to 0 at twice its size; rows summing to at most 1."""
        t = np.clip(2.0 - np.hypot((points[:, None, 0] - self.regions[:, 0]) / self.regions[:, 2],
                                   (points[:, None, 1] - self.regions[:, 1]) / self.regions[:, 3]), 0.0, 1.0)
        w = t * t * (3.0 - 2.0 * t)
        return w / np.maximum(w.sum(1, keepdims=True), 1.0)

    def derived(self, d: np.ndarray) -> tuple[float, float]:
        """(eye scale, mouth->chin scale) the five points imply for deformation ``d`` (see :meth:`prior`)."""
        k = self.keys
        eye_to_mouth = math.exp(d[1]) * (k[3] - k[2]) + math.exp(d[2]) * (k[2] - k[1])
        eye = float(np.clip(math.sqrt((k[3] - k[1]) / eye_to_mouth), 1 / self.eye_scale_max, self.eye_scale_max))
        # the lower face: two cues to its size, the nose->mouth distance and the mouth's width (geometric mean)
        return eye, float(np.clip(math.exp((d[2] + d[4]) / 2), 1 / SCALE_LIMIT, SCALE_LIMIT))

    def deform(self, points: np.ndarray, weights: np.ndarray, d: np.ndarray, flat: float = 1.0) -> np.ndarray:
        """Canonical points ``(N, 3)`` (cm) with the drawing's proportions ``d``, the relief (z) times ``flat`` about the eyes'."""
        k = self.keys
        g1, g2, low = math.exp(d[1]), math.exp(d[2]), math.exp(d[7])
        nose = k[3] - g1 * (k[3] - k[2])
        mouth = nose - g2 * (k[2] - k[1])
        heights = np.array([mouth - low * (k[1] - k[0]), mouth, nose, k[3], k[4]])
        out = points.copy()
        out[:, 2] = self.eyes[0, 2] + flat * (points[:, 2] - self.eyes[0, 2])
        out[:, 1] = PchipInterpolator(k, heights, extrapolate=True)(points[:, 1])
        out[:, 0] += np.interp(points[:, 1], k, [d[3], d[3], 0.0, 0.0, 0.0])
        moved = []
        for e, o in enumerate((8, 14)):  # the eyes: scaled (upper and lower lid apart) and rolled about their centres
            u = points[:, :2] - self.eyes[e, :2]
            sy = math.exp(d[o + 3]) * np.where(u[:, 1] > 0, math.exp(d[o + 5]), math.exp(-d[o + 5]))
            moved.append(self.eyes[e, :2] + d[o:o + 2] + _rotate(u * np.stack([np.full(len(u), math.exp(d[o + 2])), sy], 1),
                                                                 d[o + 4]))
        moved.append(out[:, :2] + [d[0], 0.0])  # the nose: moved sideways with the face around it
        sm = math.exp(d[4])
        moved.append(np.array([d[3], mouth]) + _rotate((points[:, :2] - self.mouth[:2]) * [sm, sm * math.exp(d[6])], d[5]))
        out[:, :2] = (1 - weights.sum(1, keepdims=True)) * out[:, :2] + sum(weights[:, [r]] * m for r, m in enumerate(moved))
        return out

    def prior(self, d: np.ndarray) -> np.ndarray:
        """Residuals pulling ``d`` towards a human face's proportions, and the details towards what the five imply.

        The gaps and the mouth width barely (the five points set them); asymmetries (what a head turn or tilt
        explains first) more; the eye scale, lids, mouth height and chin, which the five points do not see,
        towards the proportions they imply (:meth:`derived`) so given extra points win.
        """
        eye, low = self.derived(d)
        eyes = [np.array([d[o] / self.iod * W_OFFSET, d[o + 1] / self.iod * W_OFFSET, (d[o + 2] - math.log(eye)) * W_DETAIL,
                          (d[o + 3] - math.log(eye)) * W_DETAIL, d[o + 4] * W_DETAIL, d[o + 5] * W_DETAIL]) for o in (8, 14)]
        return np.concatenate([[d[0] / self.iod * W_OFFSET, d[1] * W_SHAPE, d[2] * W_SHAPE, d[3] / self.iod * W_OFFSET,
                                d[4] * W_SHAPE, d[5] * W_DETAIL, d[6] * W_DETAIL, (d[7] - math.log(low)) * W_DETAIL], *eyes])


def _rotate(u: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return u @ np.array([[c, s], [-s, c]])


_SHAPE: list = [None, None]  # the model and its _Shape, the last one used


def _shape(model: CanonicalFaceModel) -> _Shape:
    if _SHAPE[0] is not model:
        _SHAPE[:] = [model, _Shape(model)]
    return _SHAPE[1]


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    """Limits of the deformation so it stays a face: scales within 3x, gaps 5x, rolls 30 degrees, offsets 1/2 IOD."""
    s, g, r, o = math.log(SCALE_LIMIT), math.log(GAP_LIMIT), math.radians(30), 3.0
    eye = [o, o, math.log(2.5), math.log(2.5), r, math.log(2)]
    upper = np.array([o, g, g, o, s, r, s, s] + eye + eye)
    return -upper, upper


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


def fit_shape(points: np.ndarray, extra: dict, width: int, height: int, model: CanonicalFaceModel,
              fit: str = "pose") -> tuple[np.ndarray, np.ndarray]:
    """The head pose and the drawing's proportions through five points and the named ``extra`` ones.

    ``points`` ``(5, 2)``, ``extra`` ``{name in EXTRA_POINTS: (x, y)}`` pixels. From the rigid fit (:func:`fit_transform`),
    pose and deformation together: reprojection errors (per IOD) against :meth:`_Shape.prior` and the pull of yaw/pitch
    to the camera. Returns the ``(4, 4)`` transform and the ``(21,)`` shape: the deformation and the relief's factor.
    """
    shape = _shape(model)
    points = np.asarray(points, dtype=np.float64)
    iod = float(np.linalg.norm(points[1] - points[0]))
    names = [n for n in EXTRA_POINTS if n in extra]
    index = list(IMAGE_LEFT_EYE) + list(IMAGE_RIGHT_EYE) + [NOSE_TIP, IMAGE_LEFT_MOUTH_CORNER, IMAGE_RIGHT_MOUTH_CORNER]
    sub = shape.vertices[index + [EXTRA_POINTS[n] for n in names]]
    weights, eye_count = shape.weights(sub), len(IMAGE_LEFT_EYE)
    target = np.concatenate([points, np.array([extra[n] for n in names], dtype=np.float64).reshape(-1, 2)])
    weight = np.repeat([EXTRA_WEIGHT, 1.0], [5, len(names)])[:, None] if names else 1.0
    n_pose, (lower_d, upper_d) = 6 if fit == "pose" else 4, _bounds()
    # a close-up sits centimetres from the pack's wide camera, where the relief would loom (the nose tip 4 cm
    # nearer than the eyes); drawings and portraits have little perspective: flatten it as seen from MIN_DISTANCE_CM
    flat = min(1.0, _focal_px(height) * shape.iod / iod / MIN_DISTANCE_CM)

    def predicted(params: np.ndarray) -> np.ndarray:
        px = _project(shape.deform(sub, weights, params[n_pose:], flat), _transform(params[:n_pose], fit), width, height)
        return np.concatenate([px[:eye_count].mean(0, keepdims=True), px[eye_count:2 * eye_count].mean(0, keepdims=True),
                               px[2 * eye_count:]])

    def residuals(params: np.ndarray) -> np.ndarray:
        err = ((predicted(params) - target) * weight).ravel() / iod
        pose = POSE_PRIOR_WEIGHT * params[:2] if fit == "pose" else []
        return np.concatenate([err, pose, shape.prior(params[n_pose:])])

    rigid = fit_transform(points, width, height, model, fit)
    rotvec = Rotation.from_matrix(rigid[:3, :3]).as_rotvec()
    start = np.concatenate([rotvec if fit == "pose" else rotvec[2:], rigid[:3, 3], np.zeros(len(lower_d))])
    lower, upper = np.concatenate([np.full(n_pose, -np.inf), lower_d]), np.concatenate([np.full(n_pose, np.inf), upper_d])
    upper[n_pose - 1] = -pose_math.NEAR - 1.0
    result = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac", xtol=1e-10, ftol=1e-10, gtol=1e-10)
    return _transform(result.x[:n_pose], fit), np.append(result.x[n_pose:], flat)


def shaped_mesh(model: CanonicalFaceModel, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(468, 3)`` the canonical mesh with proportions ``d`` (:func:`fit_shape`) and ``(10, 3)`` its iris points."""
    shape, d = _shape(model), np.asarray(d, dtype=np.float64)
    mesh = shape.deform(shape.vertices, shape.weights(shape.vertices), d[:-1], d[-1])
    iris = [mesh[list(eye)].mean(0) + IRIS_RADIUS_CM * math.exp((d[o + 2] + d[o + 3]) / 2) * _IRIS_RING
            for eye, o in ((IMAGE_LEFT_EYE, 8), (IMAGE_RIGHT_EYE, 14))]
    return mesh, np.concatenate(iris)


def offset_map(model: CanonicalFaceModel, d: np.ndarray) -> np.ndarray:
    """``(468, 3, 3)`` the reshaping's local stretch at each canonical vertex (central differences, region weights held):
    :attr:`Face.offset_map`, so that motion measured on human proportions moves the drawing in proportion."""
    shape, d = _shape(model), np.asarray(d, dtype=np.float64)
    v, w = shape.vertices, shape.weights(shape.vertices)
    moved = [shape.deform(v + 1e-3 * e, w, d[:-1], d[-1]) - shape.deform(v - 1e-3 * e, w, d[:-1], d[-1]) for e in np.eye(3)]
    return np.stack(moved, axis=2) / 2e-3


def landmarks_from_transform(transform: np.ndarray, mesh: np.ndarray, iris: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(478, 3)`` MediaPipe-style landmarks of a mesh ``(468, 3)`` and iris ``(10, 3)`` (cm) posed by ``transform``.

    x, y: the pack's projection normalised by the image size; z: relative depth on the x scale
    (``(depth - mean depth) / mean depth`` over the near-plane width, mean over the 468 mesh points),
    which :func:`.geometry.metric_geometry` unprojects back to the same camera-space points.
    """
    points = np.concatenate([mesh, iris])  # (478, 3)
    xy = _project(points, transform, width, height) / np.array([width, height], dtype=np.float64)
    depth = -(points @ transform[:3, :3].T + transform[:3, 3])[:, 2]
    mean_depth = float(depth[:NUM_MESH_LANDMARKS].mean())
    near_width = 2.0 * pose_math.NEAR * math.tan(math.radians(pose_math.FOV_DEGREES) / 2) * width / height
    z = (depth - mean_depth) * pose_math.NEAR / (mean_depth * near_width)
    return np.concatenate([xy, z[:, None]], axis=1)


def face_from_transform(transform: np.ndarray, model: CanonicalFaceModel, width: int, height: int,
                        shape: np.ndarray | None = None) -> Face:
    """The :class:`Face` of the neutral canonical mesh, shaped by ``shape`` (:func:`fit_shape`; none: as it is), posed
    by ``transform``. Its ``mesh_canonical`` is the shaped mesh: what motion is added to, so it starts on the drawing."""
    mesh, iris = shaped_mesh(model, np.append(np.zeros(len(_bounds()[0])), 1.0) if shape is None else shape)
    landmarks = landmarks_from_transform(transform, mesh, iris, width, height)
    return Face(landmarks=landmarks, mesh_canonical=mesh, transform=np.asarray(transform, dtype=np.float64),
                blendshapes=np.zeros(NUM_BLENDSHAPES), blendshape_names=list(BLENDSHAPE_NAMES), image_size=(width, height),
                offset_map=None if shape is None else offset_map(model, shape))


def place_face(points: np.ndarray, width: int, height: int, model: CanonicalFaceModel, fit: str = "pose",
               extra: dict | None = None) -> Placement:
    """Fit the canonical face to five points ``(5, 2)`` and ``extra`` ones by name (pixels of a ``width x height`` image)."""
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    check_points(points, width, height, extra)
    return _place(points, dict(extra or {}), width, height, model, fit)


def _place(points: np.ndarray, extra: dict, width: int, height: int, model: CanonicalFaceModel, fit: str) -> Placement:
    transform, shape = fit_shape(points, extra, width, height, model, fit)
    face = face_from_transform(transform, model, width, height, shape)
    px = face.landmarks_px()
    return Placement(face, points, np.linalg.norm(five_points_from_landmarks(px) - points, axis=1),
                     {n: float(np.linalg.norm(px[EXTRA_POINTS[n]] - extra[n])) for n in EXTRA_POINTS if n in extra})


def place_face_in_box(box, width: int, height: int, model: CanonicalFaceModel) -> Placement:
    """Fit the canonical face, facing the camera, to a face box ``(x0, y0, x1, y1)`` (pixels; may reach past the image):
    the five points at :data:`BOX_POINT_RATIOS` of the box and the chin at the middle of its bottom edge."""
    box = np.asarray(box, dtype=np.float64).reshape(4)
    check_box(box, width, height)
    points = five_points_from_box(box)
    _check_order(points)
    return _place(points, {"chin": np.array([(box[0] + box[2]) / 2, box[3]])}, width, height, model, "frontal")


# ----------------------------------------------------------------------------- the reference, as the node uses it

MODES = ("points", "box")


def place_reference(model: CanonicalFaceModel, photo_size: tuple[int, int], mode: str, text: str, fit: str = "pose",
                    mask: np.ndarray | None = None, width: int = 0, height: int = 0) -> tuple[Placement, str]:
    """The reference face from five points (and named extra points) or a box in pixels of the ``photo_size`` ``(W, H)`` photo.

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
        placement = place_face_in_box(box * np.tile(scale, 2), out_w, out_h, model)
        return placement, f"face placed in the mask's box ({', '.join(f'{v:g}' for v in box)}), facing the camera"
    if mode == "box":
        box = parse_box(text)
        check_box(box, photo_w, photo_h)
        placement = place_face_in_box(box * np.tile(scale, 2), out_w, out_h, model)
        return placement, "face placed in the box, facing the camera"
    points, extra = parse_points(text)
    check_points(points, photo_w, photo_h, extra)
    placement = place_face(points * scale, out_w, out_h, model, fit, {n: xy * scale for n, xy in extra.items()})
    return placement, placement.summary()
