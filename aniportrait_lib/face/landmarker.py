"""Reference-face analysis with MediaPipe's Face Landmarker (Tasks API).

:class:`FaceLandmarker` wraps ``mediapipe.tasks.vision.FaceLandmarker`` (IMAGE mode, one face,
blendshapes and transformation matrix enabled) and turns its result into a :class:`Face`:
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
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..data import NUM_BLENDSHAPES, NUM_LANDMARKS, Face
from ..imaging import image_to_uint8
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


# ----------------------------------------------------------------------------- the landmarker


class FaceLandmarker:
    """MediaPipe Face Landmarker (IMAGE mode, one face) producing :class:`Face` results.

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
            _close_before_thread_pools_stop()
            log.info("created mediapipe FaceLandmarker from %s", self.task_path)
        return self._detector

    def _detect(self, rgb: np.ndarray) -> Any:
        import mediapipe as mp

        with self._lock:
            detector = self._get_detector()
            return detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))

    def analyze(self, image_rgb: Any) -> Face:
        """Analyse the (single) face of an RGB image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB (or grey / RGBA / float in [0, 1], see :mod:`aniportrait_lib.imaging`).

        Raises:
            NoFaceError: no face was found.
        """
        rgb = image_to_uint8(image_rgb, "reference image")
        face = self._analyze_rgb(rgb)
        if face is None:
            h, w = rgb.shape[:2]
            raise NoFaceError(
                f"no face was found in the reference image ({w}x{h}); use a photo where one face is "
                f"clearly visible, frontal, at least ~100 px wide; for drawings or anime faces, give the face's "
                f"position (five points or a box) with AniPortrait Face From Points"
            )
        return face

    def analyze_frames(self, frames: Iterable[Any]) -> list[Face | None]:
        """Analyse each frame of a sequence ((T, H, W, C) array or iterable of images).

        Returns one :class:`Face` per frame, ``None`` where no face was found.
        """
        out: list[Face | None] = []
        for i, frame in enumerate(frames):
            face = self._analyze_rgb(image_to_uint8(frame, "video frame"))
            if face is None:
                log.info("no face in frame %d", i)
            out.append(face)
        return out

    def _analyze_rgb(self, rgb: np.ndarray) -> Face | None:
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
        return Face(
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


_EXIT_HOOK = {"registered": False}


def _close_before_thread_pools_stop() -> None:
    """Also close every detector before Python stops its thread pools at exit.

    mediapipe closes a detector through a ``concurrent.futures`` thread pool, and Python stops those pools at exit
    before plain ``atexit`` hooks run: a close from the hook above then fails, and mediapipe's ``__del__`` prints
    "Exception ignored ... cannot schedule new futures after shutdown". ``threading``'s own exit hooks run before
    that, last registered first, so one registered after mediapipe made its pool closes the detectors while the pool
    still works. ``threading._register_atexit`` is private (Python >= 3.9): without it only the hook above runs.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None or _EXIT_HOOK["registered"]:
        return
    try:
        register(_close_all)
        _EXIT_HOOK["registered"] = True
    except RuntimeError:  # the interpreter is already shutting down
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
