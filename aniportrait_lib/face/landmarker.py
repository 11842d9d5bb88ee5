"""Reference-face analysis with MediaPipe's Face Landmarker (Tasks API).

:class:`FaceLandmarker` wraps ``mediapipe.tasks.vision.FaceLandmarker`` (IMAGE mode, one face,
blendshapes and transformation matrix enabled) and turns its result into a :class:`ReferenceFace`:
the 478 normalized landmarks, the 51 blendshape scores (``_neutral`` dropped), and the metric face
mesh in the canonical frame plus the facial transformation matrix, both recomputed from the
landmarks with :mod:`.geometry` (current mediapipe wheels no longer return the mesh).

Unlike the original AniPortrait extractor, which returned ``None`` for any failure, a picture
without a face raises :class:`NoFaceError` and other problems raise their own clear errors.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .geometry import CanonicalFaceModel, load_canonical_model, metric_geometry

log = logging.getLogger(__name__)

MODEL_FILE_NAME = "face_landmarker.task"
MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/latest/"
    "face_landmarker.task"
)
#: files a valid face_landmarker.task zip must hold
_TASK_MEMBERS = (
    "face_detector.tflite",
    "face_landmarks_detector.tflite",
    "face_blendshapes.tflite",
    "geometry_pipeline_metadata_landmarks.binarypb",
)
NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468
NUM_BLENDSHAPES = 51
NEUTRAL_BLENDSHAPE = "_neutral"


class NoFaceError(ValueError):
    """MediaPipe found no face in the image."""


def _model_help() -> str:
    return (
        f"It is MediaPipe's Face Landmarker model ({MODEL_FILE_NAME}, about 3.7 MB). Download it from "
        f"{MODEL_URL} and place it in ComfyUI's models/aniportrait/ folder."
    )


def check_task_file(task_path: str | os.PathLike) -> Path:
    """Check that ``task_path`` is a usable ``face_landmarker.task`` and return it as a Path.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a zip archive holding the Face Landmarker models.
    """
    path = Path(task_path)
    if not path.is_file():
        raise FileNotFoundError(f"face landmarker model file '{path}' was not found. {_model_help()}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(
            f"'{path}' is not a valid MediaPipe face landmarker model (not a .task zip archive: {e}). "
            f"{_model_help()}"
        ) from None
    missing = [m for m in _TASK_MEMBERS if m not in names]
    if missing:
        raise ValueError(
            f"'{path}' is not a MediaPipe face landmarker model: it lacks {', '.join(missing)}. {_model_help()}"
        )
    return path


# ----------------------------------------------------------------------------- the result


@dataclass
class ReferenceFace:
    """Everything AniPortrait needs to know about one face in one image.

    Attributes:
        landmarks: (478, 3) float64: x, y normalized to image width/height (origin top-left, in
            [0, 1] for points inside the image), z relative depth on the x scale; 468 mesh points
            followed by 10 iris points.
        mesh_canonical: (468, 3) float64, cm: the face mesh in MediaPipe's canonical model frame
            (head pose removed, expression kept), "lmks3d" of the original.
        transform: (4, 4) float64: canonical -> camera space (cm, camera looking down -z),
            ``[scale * R | t]`` with scale ~1, "trans_mat" of the original.
        blendshapes: (51,) float64 scores in [0, 1], ``_neutral`` dropped, order = blendshape_names.
        blendshape_names: the 51 ARKit-style names.
        image_size: (width, height) in pixels of the analysed image.
    """

    landmarks: np.ndarray
    mesh_canonical: np.ndarray
    transform: np.ndarray
    blendshapes: np.ndarray
    blendshape_names: list[str]
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        self.landmarks = _as_f64(self.landmarks, (NUM_LANDMARKS, 3), "landmarks")
        self.mesh_canonical = _as_f64(self.mesh_canonical, (NUM_MESH_LANDMARKS, 3), "mesh_canonical")
        self.transform = _as_f64(self.transform, (4, 4), "transform")
        self.blendshapes = _as_f64(self.blendshapes, (NUM_BLENDSHAPES,), "blendshapes")
        self.blendshape_names = [str(n) for n in self.blendshape_names]
        if len(self.blendshape_names) != NUM_BLENDSHAPES:
            raise ValueError(f"expected {NUM_BLENDSHAPES} blendshape names, got {len(self.blendshape_names)}")
        size = tuple(int(v) for v in self.image_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"image_size must be (width, height) > 0, got {self.image_size}")
        self.image_size = size  # type: ignore[assignment]

    @property
    def width(self) -> int:
        return self.image_size[0]

    @property
    def height(self) -> int:
        return self.image_size[1]

    def landmarks_px(self) -> np.ndarray:
        """(478, 2) float64 landmark x, y in pixels of the analysed image."""
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReferenceFace":
        """Build from :meth:`to_dict` output (e.g. loaded from JSON); shapes are validated."""
        keys = ("landmarks", "mesh_canonical", "transform", "blendshapes", "blendshape_names", "image_size")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"reference face data lacks {', '.join(missing)}")
        return cls(**{k: data[k] for k in keys})


def _as_f64(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


# ----------------------------------------------------------------------------- image input


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Convert an image to a C-contiguous uint8 (H, W, 3) RGB array.

    Accepts (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays (grey / RGB / RGBA, alpha dropped),
    optionally with a leading batch dimension of 1; uint8, or float in [0, 1] (converted with
    ``round(x * 255)`` and clipped). Torch tensors are accepted through ``np.asarray``.
    """
    if hasattr(image, "detach"):  # torch tensor without importing torch
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image is empty: shape {arr.shape}")
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError("image contains NaN or infinite values")
        arr = np.clip(np.round(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}: use uint8 (0..255) or float (0..1)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


# ----------------------------------------------------------------------------- the landmarker


class FaceLandmarker:
    """MediaPipe Face Landmarker (IMAGE mode, one face) producing :class:`ReferenceFace` results.

    The task file is checked and its canonical face model read when the object is made; the
    mediapipe detector itself is created on first use. Calls are serialised with a lock.
    """

    def __init__(self, task_path: str | os.PathLike) -> None:
        self.task_path = check_task_file(task_path)
        try:
            self.model: CanonicalFaceModel = load_canonical_model(self.task_path)
        except ValueError as e:
            raise ValueError(f"{e}. {_model_help()}") from None
        self._detector: Any = None
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _get_detector(self) -> Any:
        if self._detector is None:
            try:
                from mediapipe.tasks.python import BaseOptions, vision
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    f"the 'mediapipe' package is needed for face landmarks (pip install mediapipe): {e}"
                ) from e
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(self.task_path)),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=1,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
            try:
                self._detector = vision.FaceLandmarker.create_from_options(options)
            except (RuntimeError, ValueError) as e:
                raise ValueError(
                    f"mediapipe could not load '{self.task_path}' as a face landmarker model: {e}. "
                    f"{_model_help()}"
                ) from e
            log.info("created mediapipe FaceLandmarker from %s", self.task_path)
        return self._detector

    def _detect(self, rgb: np.ndarray) -> Any:
        import mediapipe as mp

        with self._lock:
            detector = self._get_detector()
            return detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))

    def analyze(self, image_rgb: Any) -> ReferenceFace:
        """Analyse the (single) face of an RGB image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB (or grey / RGBA / float in [0, 1], see :func:`to_rgb_uint8`).

        Raises:
            NoFaceError: no face was found.
        """
        rgb = to_rgb_uint8(image_rgb)
        face = self._analyze_rgb(rgb)
        if face is None:
            h, w = rgb.shape[:2]
            raise NoFaceError(
                f"no face was found in the reference image ({w}x{h}); use a photo where one face is "
                f"clearly visible, frontal, at least ~100 px wide"
            )
        return face

    def analyze_frames(self, frames: Iterable[Any]) -> list[ReferenceFace | None]:
        """Analyse each frame of a sequence ((T, H, W, C) array or iterable of images).

        Returns one :class:`ReferenceFace` per frame, ``None`` where no face was found.
        """
        out: list[ReferenceFace | None] = []
        for i, frame in enumerate(frames):
            face = self._analyze_rgb(to_rgb_uint8(frame))
            if face is None:
                log.info("no face in frame %d", i)
            out.append(face)
        return out

    def _analyze_rgb(self, rgb: np.ndarray) -> ReferenceFace | None:
        """Detect on a uint8 (H, W, 3) RGB array; None when there is no face."""
        height, width = rgb.shape[:2]
        result = self._detect(rgb)
        if not result.face_landmarks:
            return None
        landmarks = np.array([[p.x, p.y, p.z] for p in result.face_landmarks[0]], dtype=np.float32)
        if landmarks.shape != (NUM_LANDMARKS, 3):
            raise RuntimeError(f"mediapipe returned {landmarks.shape[0]} landmarks, expected {NUM_LANDMARKS}")
        categories = result.face_blendshapes[0] if result.face_blendshapes else []
        names = [c.category_name for c in categories]
        scores = [c.score for c in categories]
        if names and names[0] == NEUTRAL_BLENDSHAPE:
            names, scores = names[1:], scores[1:]
        if len(names) != NUM_BLENDSHAPES:
            raise RuntimeError(f"mediapipe returned {len(names)} blendshapes, expected {NUM_BLENDSHAPES} + _neutral")
        mesh, transform = metric_geometry(landmarks, width, height, self.model)
        if result.facial_transformation_matrixes:
            mp_mat = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64)
            dev = float(np.abs(mp_mat - transform).max())
            log.debug("recomputed transform vs mediapipe's: max abs diff %.3g", dev)
        return ReferenceFace(
            landmarks=landmarks.astype(np.float64),
            mesh_canonical=mesh.astype(np.float64),
            transform=transform.astype(np.float64),
            blendshapes=np.asarray(scores, dtype=np.float32).astype(np.float64),
            blendshape_names=names,
            image_size=(width, height),
        )

    def close(self) -> None:
        """Release the mediapipe detector (a later call creates a new one)."""
        with self._lock:
            if self._detector is not None:
                try:
                    self._detector.close()
                finally:
                    self._detector = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: every FaceLandmarker, closed at interpreter exit (mediapipe's own __del__ fails during shutdown)
_LIVE: "weakref.WeakSet[FaceLandmarker]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for lm in list(_LIVE):
        try:
            lm.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


_CACHE: dict[tuple[str, int, int], FaceLandmarker] = {}
_CACHE_LOCK = threading.Lock()


def get_landmarker(task_path: str | os.PathLike) -> FaceLandmarker:
    """A shared :class:`FaceLandmarker` for ``task_path`` (re-created when the file changes)."""
    path = check_task_file(task_path)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        lm = _CACHE.get(key)
        if lm is None:
            for old_key in [k for k in _CACHE if k[0] == key[0]]:
                _CACHE.pop(old_key).close()
            lm = _CACHE[key] = FaceLandmarker(path)
        return lm


def analyze_face(image_rgb: Any, task_path: str | os.PathLike) -> ReferenceFace:
    """Convenience: :meth:`FaceLandmarker.analyze` with a shared landmarker for ``task_path``."""
    return get_landmarker(task_path).analyze(image_rgb)


def analyze_frames(frames: Iterable[Any], task_path: str | os.PathLike) -> list[ReferenceFace | None]:
    """Convenience: :meth:`FaceLandmarker.analyze_frames` with a shared landmarker."""
    return get_landmarker(task_path).analyze_frames(frames)
