"""Reference-face analysis with MediaPipe's Face Landmarker (Tasks API).

:class:`FaceLandmarker` wraps ``mediapipe.tasks.vision.FaceLandmarker`` (IMAGE mode, blendshapes and
transformation matrix enabled) and turns its result into :class:`Face` objects, one per face found:
the 478 normalized landmarks, the 51 blendshape scores (``_neutral`` dropped), and the metric face
mesh in the canonical frame plus the facial transformation matrix, both recomputed from the
landmarks with :mod:`.geometry` (current mediapipe wheels no longer return the mesh).

Two mediapipe detectors are made on demand: one for up to ``selection.MAX_FACES`` faces (:meth:`detect`,
:meth:`analyze` with a :class:`~.selection.FaceChoice`, tracking), and the original one-face detector for
:meth:`analyze_frames`. On the same face both give identical landmarks; the many-face one costs more only where a
frame holds a second face or a face-like patch it must reject (measured on 350x350 clips on 2 CPU cores:
6.9 ms/frame for either on a one-person clip, 6.7 vs 10.7 ms on one with a rejected patch, 6.9 vs 12.2 ms
with two people).

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
from .selection import LARGEST, MAX_FACES, FaceChoice, left_to_right

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
    """MediaPipe Face Landmarker (IMAGE mode) producing :class:`Face` results.

    The task file is checked and its canonical face model read when the object is made; the
    mediapipe detectors (one face, up to ``MAX_FACES`` faces) are created on first use. Calls are
    serialised with a lock.
    """

    def __init__(self, task_path: str | os.PathLike) -> None:
        self.task_path = check_task_file(task_path)
        try:
            self.model: CanonicalFaceModel = load_canonical_model(self.task_path)
        except ValueError as e:
            raise ValueError(f"{e}. {_model_help()}") from None
        self._detectors: dict[int, Any] = {}  # num_faces -> mediapipe detector
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _get_detector(self, num_faces: int) -> Any:
        if num_faces not in self._detectors:
            try:
                from mediapipe.tasks.python import BaseOptions, vision
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    f"the 'mediapipe' package is needed for face landmarks (pip install mediapipe): {e}"
                ) from e
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(self.task_path)),
                running_mode=vision.RunningMode.IMAGE,
                num_faces=num_faces,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            )
            try:
                self._detectors[num_faces] = vision.FaceLandmarker.create_from_options(options)
            except (RuntimeError, ValueError) as e:
                raise ValueError(
                    f"mediapipe could not load '{self.task_path}' as a face landmarker model: {e}. "
                    f"{_model_help()}"
                ) from e
            _close_before_thread_pools_stop()
            log.info("created mediapipe FaceLandmarker (up to %d faces) from %s", num_faces, self.task_path)
        return self._detectors[num_faces]

    def _detect(self, rgb: np.ndarray, num_faces: int = 1) -> Any:
        import mediapipe as mp

        with self._lock:
            detector = self._get_detector(num_faces)
            return detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))

    def detect(self, image_rgb: Any, what: str = "video frame") -> list[Face]:
        """Every face of an RGB image (up to ``MAX_FACES``), left to right by face box centre; [] when none."""
        rgb = image_to_uint8(image_rgb, what)
        return left_to_right(self._faces_of(rgb, self._detect(rgb, MAX_FACES)))

    def analyze(self, image_rgb: Any, choose: FaceChoice = LARGEST) -> Face:
        """Analyse the chosen face of an RGB image (default: the largest).

        Args:
            image_rgb: (H, W, 3) uint8 RGB (or grey / RGBA / float in [0, 1], see :mod:`aniportrait_lib.imaging`).
            choose: which face when there are several (:class:`~.selection.FaceChoice`).

        Raises:
            NoFaceError: no face was found.
            ValueError: ``choose`` asks for a face index the image does not have.
        """
        rgb = image_to_uint8(image_rgb, "reference image")
        faces = self._faces_of(rgb, self._detect(rgb, MAX_FACES))
        if not faces:
            h, w = rgb.shape[:2]
            raise NoFaceError(
                f"no face was found in the reference image ({w}x{h}); use a photo where one face is "
                f"clearly visible, frontal, at least ~100 px wide; for drawings or anime faces, give the face's "
                f"position (five points or a box) with AniPortrait Face From Points"
            )
        return choose.pick(faces, "the reference image")

    def analyze_frames(self, frames: Iterable[Any]) -> list[Face | None]:
        """Analyse each frame of a sequence ((T, H, W, C) array or iterable of images) with the one-face detector.

        Returns one :class:`Face` per frame (mediapipe's most confident face), ``None`` where no face was found.
        For material with several people use :meth:`detect` and :func:`~.tracking.track_faces`, which choose.
        """
        out: list[Face | None] = []
        for i, frame in enumerate(frames):
            rgb = image_to_uint8(frame, "video frame")
            faces = self._faces_of(rgb, self._detect(rgb, 1))
            face = faces[0] if faces else None
            if face is None:
                log.info("no face in frame %d", i)
            out.append(face)
        return out

    def _faces_of(self, rgb: np.ndarray, result: Any) -> list[Face]:
        """The :class:`Face` of each face in a mediapipe result on the uint8 (H, W, 3) ``rgb`` (mediapipe's order)."""
        return [self._face_of(rgb, result, k) for k in range(len(result.face_landmarks or []))]

    def _face_of(self, rgb: np.ndarray, result: Any, k: int) -> Face:
        height, width = rgb.shape[:2]
        landmarks = np.array([[p.x, p.y, p.z] for p in result.face_landmarks[k]], dtype=np.float32)
        if landmarks.shape != (NUM_LANDMARKS, 3):
            raise RuntimeError(f"mediapipe returned {landmarks.shape[0]} landmarks, expected {NUM_LANDMARKS}")
        categories = result.face_blendshapes[k] if result.face_blendshapes else []
        names = [c.category_name for c in categories]
        scores = [c.score for c in categories]
        if names and names[0] == NEUTRAL_BLENDSHAPE:
            names, scores = names[1:], scores[1:]
        if len(names) != NUM_BLENDSHAPES:
            raise RuntimeError(f"mediapipe returned {len(names)} blendshapes, expected {NUM_BLENDSHAPES} + _neutral")
        mesh, transform = metric_geometry(landmarks, width, height, self.model)
        if result.facial_transformation_matrixes:
            mp_mat = np.asarray(result.facial_transformation_matrixes[k], dtype=np.float64)
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
        """Release the mediapipe detectors (a later call creates new ones)."""
        with self._lock:
            while self._detectors:
                self._detectors.popitem()[1].close()

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
