"""The data that flows between the pack's steps (and nodes): one plain dataclass per concept.

* :class:`Face` - one analysed face in one image (a reference photo or a video frame).
* :class:`AudioFeatures` - a clip prepared for the wav2vec2 encoders.
* :class:`Motion` - per-frame face meshes + head poses relative to the reference face, at an fps.
  Audio2Mesh/Audio2Pose, pose templates and face reenactment all produce it, and every later step
  (projection, rendering, editing) takes it, whatever made it.
* :class:`PoseTemplate` - head motion relative to a video's first frame, to drive a motion's poses.
* :class:`Landmarks` - projected 2D landmarks in pixels of a ``width x height`` frame.
* :class:`CropInfo` - where face crops were cut from their source frames, to paste results back.

Units throughout: meshes in cm in MediaPipe's canonical face frame; poses as rows
``[rx, ry, rz, tx, ty, tz]``, euler xyz angles in degrees and translation in cm; pixel coordinates
with the origin at the top-left corner.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NUM_LANDMARKS = 478  # 468 mesh points + 10 iris points
NUM_MESH_LANDMARKS = 468
NUM_BLENDSHAPES = 51  # MediaPipe's 52 minus "_neutral"
POSE_SIZE = 6
#: the stage-1 frame rate the released models were trained at
DEFAULT_FPS = 30.0
#: wav2vec2 sample rate (Hz): the audio features hold 16 kHz samples
SAMPLE_RATE = 16000


def _finite_array(value: Any, shape: tuple[int | None, ...], name: str, dtype=np.float64) -> np.ndarray:
    """``value`` as a finite array of ``dtype`` whose shape matches ``shape`` (None = any length)."""
    arr = np.array(value, dtype=dtype)
    if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape)):
        wanted = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


#: MediaPipe's 52 blendshape names minus ``_neutral``, in its order
BLENDSHAPE_NAMES = tuple("""
browDownLeft browDownRight browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft cheekSquintRight eyeBlinkLeft
eyeBlinkRight eyeLookDownLeft eyeLookDownRight eyeLookInLeft eyeLookInRight eyeLookOutLeft eyeLookOutRight eyeLookUpLeft eyeLookUpRight
eyeSquintLeft eyeSquintRight eyeWideLeft eyeWideRight jawForward jawLeft jawOpen jawRight mouthClose
mouthDimpleLeft mouthDimpleRight mouthFrownLeft mouthFrownRight mouthFunnel mouthLeft mouthLowerDownLeft mouthLowerDownRight mouthPressLeft
mouthPressRight mouthPucker mouthRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthSmileLeft mouthSmileRight
mouthStretchLeft mouthStretchRight mouthUpperUpLeft mouthUpperUpRight noseSneerLeft noseSneerRight
""".split())
assert len(BLENDSHAPE_NAMES) == NUM_BLENDSHAPES


@dataclass
class Face:
    """Everything AniPortrait needs to know about one face in one image.

    Attributes:
        landmarks: ``(478, 3)`` float64: x, y normalised to image width/height (origin top-left, in
            [0, 1] for points inside the image), z relative depth on the x scale; 468 mesh points
            followed by 10 iris points.
        mesh_canonical: ``(468, 3)`` float64 cm: the face mesh in MediaPipe's canonical model frame
            (head pose removed, expression kept), "lmks3d" of the original.
        transform: ``(4, 4)`` float64: canonical -> camera space (cm, camera looking down -z),
            ``[scale * R | t]`` with scale ~1, "trans_mat" of the original.
        blendshapes: ``(51,)`` float64 scores in [0, 1], ``_neutral`` dropped, order = blendshape_names.
        blendshape_names: the 51 ARKit-style names.
        image_size: ``(width, height)`` in pixels of the analysed image.
        offset_map: optional ``(468, 3, 3)`` float64: the linear map each vertex's motion offsets (cm, from the
            speech or a driving face, measured on human proportions) go through before they are added to
            ``mesh_canonical``: a face placed on a drawing (Face From Points) is the canonical face reshaped, and
            this is that reshaping's local stretch, so lips open in proportion to the drawn mouth. None: identity.
    """

    landmarks: np.ndarray
    mesh_canonical: np.ndarray
    transform: np.ndarray
    blendshapes: np.ndarray
    blendshape_names: list[str]
    image_size: tuple[int, int]
    offset_map: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.landmarks = _finite_array(self.landmarks, (NUM_LANDMARKS, 3), "landmarks")
        self.mesh_canonical = _finite_array(self.mesh_canonical, (NUM_MESH_LANDMARKS, 3), "mesh_canonical")
        self.transform = _finite_array(self.transform, (4, 4), "transform")
        self.blendshapes = _finite_array(self.blendshapes, (NUM_BLENDSHAPES,), "blendshapes")
        self.blendshape_names = [str(n) for n in self.blendshape_names]
        if len(self.blendshape_names) != NUM_BLENDSHAPES:
            raise ValueError(f"expected {NUM_BLENDSHAPES} blendshape names, got {len(self.blendshape_names)}")
        size = tuple(int(v) for v in self.image_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"image_size must be (width, height) > 0, got {self.image_size}")
        self.image_size = size  # type: ignore[assignment]
        if self.offset_map is not None:
            self.offset_map = _finite_array(self.offset_map, (NUM_MESH_LANDMARKS, 3, 3), "offset_map")

    def map_offsets(self, offsets: np.ndarray) -> np.ndarray:
        """Motion offsets ``(..., 468, 3)`` (cm) through :attr:`offset_map` (unchanged when it is None)."""
        offsets = np.asarray(offsets, dtype=np.float64)
        if self.offset_map is None:
            return offsets
        return np.einsum("vij,...vj->...vi", self.offset_map, offsets)

    @property
    def width(self) -> int:
        return self.image_size[0]

    @property
    def height(self) -> int:
        return self.image_size[1]

    def landmarks_px(self) -> np.ndarray:
        """``(478, 2)`` float64 landmark x, y in pixels of the analysed image."""
        return self.landmarks[:, :2] * np.array(self.image_size, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists of floats); :meth:`from_dict` reads it back."""
        return {
            "landmarks": self.landmarks.tolist(),
            "mesh_canonical": self.mesh_canonical.tolist(),
            "transform": self.transform.tolist(),
            "blendshapes": self.blendshapes.tolist(),
            "blendshape_names": list(self.blendshape_names),
            "image_size": list(self.image_size),
            **({"offset_map": self.offset_map.tolist()} if self.offset_map is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Face":
        """Build from :meth:`to_dict` output (e.g. loaded from JSON); shapes are validated."""
        keys = ("landmarks", "mesh_canonical", "transform", "blendshapes", "blendshape_names", "image_size")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"face data lacks {', '.join(missing)}")
        return cls(**{k: data[k] for k in keys}, offset_map=data.get("offset_map"))


@dataclass
class AudioFeatures:
    """One clip prepared for the wav2vec2 encoders.

    Attributes:
        input_values: ``(N,)`` float32 samples at 16 kHz, zero mean and unit variance over the clip.
        num_frames: video frames the clip spans, ``ceil(N / 16000 * fps)``.
        fps: video frame rate.
    """

    input_values: np.ndarray
    num_frames: int
    fps: float = DEFAULT_FPS

    @property
    def duration(self) -> float:
        """seconds"""
        return self.input_values.shape[0] / SAMPLE_RATE


@dataclass
class Motion:
    """Face motion of a clip, relative to one reference face.

    Attributes:
        meshes: ``(T, 468, 3)`` float64 cm, per-frame meshes in the canonical face frame (the reference
            mesh plus the frame's expression).
        poses: ``(T, 6)`` float64 head pose per frame RELATIVE to the reference face: frame ``t`` is
            drawn with ``reference.transform @ poses_to_matrices(poses)[t]``. All zeros = the reference's
            own head pose.
        fps: frames per second.
    """

    meshes: np.ndarray
    poses: np.ndarray
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        self.meshes = _finite_array(self.meshes, (None, None, 3), "motion meshes")
        self.poses = _finite_array(self.poses, (self.meshes.shape[0], POSE_SIZE), "motion poses")
        if self.meshes.shape[0] < 1:
            raise ValueError("a motion needs at least one frame")
        if not self.fps > 0:
            raise ValueError(f"the motion's fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return self.meshes.shape[0]

    def with_poses(self, poses: np.ndarray) -> "Motion":
        """The same meshes with other head poses (``(T, 6)``, one per frame)."""
        return Motion(self.meshes, poses, self.fps)


@dataclass
class PoseTemplate:
    """Head motion taken from a video, to drive a motion's poses instead of Audio2Pose.

    Attributes:
        poses: ``(T, 6)`` float64 rows ``[rx, ry, rz, tx, ty, tz]`` (degrees, cm) relative to the
            video's first frame.
        fps: frame rate of the rows (templates are stored at 30 fps, like the original's ``pose_temp.npy``).
    """

    poses: np.ndarray
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        self.poses = _finite_array(self.poses, (None, POSE_SIZE), "pose template")
        if self.poses.shape[0] < 1:
            raise ValueError("a pose template needs at least one row")

    @property
    def num_frames(self) -> int:
        return self.poses.shape[0]


TEMPLATE_HELP = ("a pose template is a .npy file holding a (frames, 6) array of finite numbers "
                 "[rx, ry, rz (degrees), tx, ty, tz] at 30 fps, e.g. the original's pose_temp.npy")


def load_pose_template(path: str | Path) -> PoseTemplate:
    """Read a template ``.npy`` (the original's layout: a bare ``(T, 6)`` array at 30 fps).

    Raises:
        ValueError: the file is not a plain numeric ``.npy`` of shape ``(T >= 1, 6)`` with finite
            values; the message names the file and says what a template is.
    """
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"'{path.name}' is not a .npy file; {TEMPLATE_HELP}.")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):  # object arrays (pickles), a damaged header or truncated data
        array = None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"'{path.name}' is not a plain numeric array (it needs pickle or is damaged); {TEMPLATE_HELP}.")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"'{path.name}' does not hold numbers; {TEMPLATE_HELP}.")
    if array.ndim != 2 or array.shape[1] != POSE_SIZE or array.shape[0] < 1:
        raise ValueError(f"'{path.name}' holds an array of shape {array.shape}; {TEMPLATE_HELP}.")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
        raise ValueError(f"'{path.name}' has {bad} row(s) with NaN or infinite values; {TEMPLATE_HELP}.")
    return PoseTemplate(array.astype(np.float64))


def save_pose_template(template: PoseTemplate, path: str | Path) -> Path:
    """Write ``template`` as the original's ``.npy`` layout (a ``(T, 6)`` float64 array at 30 fps).

    Never overwrites: raises FileExistsError when ``path`` exists.
    """
    path = Path(path)
    with open(path, "xb") as handle:
        np.save(handle, np.asarray(template.poses, dtype=np.float64))
    return path


@dataclass
class Landmarks:
    """Projected landmarks of a clip: ``points`` ``(T, N, 2)`` float64 pixels (x, y) of a ``width x height`` frame."""

    points: np.ndarray
    width: int
    height: int
    fps: float = DEFAULT_FPS

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64)
        if self.points.ndim != 3 or self.points.shape[2] != 2:
            raise ValueError(f"landmark points must be (T, N, 2); got {self.points.shape}")

    @property
    def num_frames(self) -> int:
        return self.points.shape[0]


@dataclass
class CropInfo:
    """Where the face crops were cut from their source frames (to paste generated frames back).

    Attributes:
        boxes: ``(T, 4)`` float64 crop windows ``[x0, y0, x1, y1]`` in source pixels, one per frame
            (may reach beyond the frame; the outside is padded when cropping). The window has the crop's
            aspect ratio, so a crop pixel ``(u, v)`` comes from ``(x0 + u * (x1 - x0) / crop_w, ...)``.
        source_size: ``(width, height)`` of the source frames in pixels.
        crop_size: ``(width, height)`` of the crops in pixels.
        face_points: optional ``(T, N, 2)`` float64 face landmarks in source pixels (for face-shaped masks);
            None when only the box is known.
        detected: ``(T,)`` bool, False where the face was filled in (no face found in that frame).
    """

    boxes: np.ndarray
    source_size: tuple[int, int]
    crop_size: tuple[int, int]
    face_points: np.ndarray | None = None
    detected: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = _finite_array(self.boxes, (None, 4), "crop boxes")
        if self.face_points is not None:
            self.face_points = _finite_array(self.face_points, (self.boxes.shape[0], None, 2), "crop face points")
        if self.detected is None:
            self.detected = np.ones(self.boxes.shape[0], dtype=bool)
        self.source_size = tuple(int(v) for v in self.source_size)  # type: ignore[assignment]
        self.crop_size = tuple(int(v) for v in self.crop_size)  # type: ignore[assignment]

    @property
    def num_frames(self) -> int:
        return self.boxes.shape[0]
