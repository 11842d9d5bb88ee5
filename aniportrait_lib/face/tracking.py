"""The one face-tracking loop over video frames, with a policy for frames where no face is found.

Policies (``on_missing``):

* ``interpolate`` (default): a face-less frame gets the face linearly interpolated between the nearest
  frames with a face before and after it (landmarks, canonical mesh, transform, blendshapes); at the
  start and end of the clip the nearest detected face is held.
* ``hold``: a face-less frame repeats the last detected face (the first detected one at the start).
* ``stop``: the original's behaviour: tracking ends at the first frame without a face and the later
  frames are dropped.

Every policy needs at least one frame with a face (``stop`` needs the first frame to have one).

With several people in view, a :class:`~.selection.FaceChoice` picks the face in the first frame where it finds
it, and tracking follows that person from frame to frame by face box continuity
(:func:`~.selection.follow_faces`); frames where that person is not found are the frames without a face.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..data import Face
from .selection import LARGEST, FaceChoice, follow_faces

log = logging.getLogger(__name__)

ON_MISSING = ("interpolate", "hold", "stop")

Progress = Callable[[int, int], None]


@dataclass
class TrackedFaces:
    """The faces of a clip after the missing-face policy.

    Attributes:
        faces: one :class:`Face` per kept frame (all frames, or the frames before the first miss with ``stop``).
        detected: ``(len(faces),)`` bool, True where the landmarker found the face (False = filled in).
        total_frames: frames given to the tracker.
    """

    faces: list[Face]
    detected: np.ndarray
    total_frames: int
    #: what the choice saw: "" with one face in view, else e.g. "2 faces in view, following the largest face"
    choice_note: str = ""

    @property
    def filled(self) -> int:
        return int(np.count_nonzero(~self.detected))

    @property
    def dropped(self) -> int:
        return self.total_frames - len(self.faces)

    def summary(self) -> str:
        """One line for the user: how many frames had a face, were filled or were dropped."""
        found = int(np.count_nonzero(self.detected))
        text = f"face found in {found} of {self.total_frames} frames"
        if self.filled:
            text += f", {self.filled} filled in"
        if self.dropped:
            text += f", {self.dropped} dropped after the first frame without a face"
        if self.choice_note:
            text += f"; {self.choice_note}"
        return text


def _blend(a: Face, b: Face, weight: float) -> Face:
    """``(1 - weight) * a + weight * b`` field by field (same image size)."""
    mix = lambda x, y: (1.0 - weight) * x + weight * y  # noqa: E731
    return Face(mix(a.landmarks, b.landmarks), mix(a.mesh_canonical, b.mesh_canonical), mix(a.transform, b.transform),
                mix(a.blendshapes, b.blendshapes), a.blendshape_names, a.image_size)


def fill_missing(faces: Sequence[Face | None], on_missing: str = "interpolate") -> TrackedFaces:
    """Apply a missing-face policy to per-frame detections (``None`` = no face in that frame)."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {', '.join(ON_MISSING)}; got {on_missing!r}")
    faces = list(faces)
    found = [i for i, f in enumerate(faces) if f is not None]
    if not faces:
        raise ValueError("the video has no frames")
    if not found:
        raise ValueError(f"no face was found in any of the {len(faces)} frames; use a video where one face is clearly visible")
    if on_missing == "stop":
        if faces[0] is None:
            raise ValueError("no face was found in the first frame; with on_missing = stop tracking ends there, "
                             "so pick interpolate or hold, or use a video that starts with a visible face")
        kept = faces[: faces.index(None)] if None in faces else faces
        return TrackedFaces(kept, np.ones(len(kept), dtype=bool), len(faces))
    out: list[Face] = []
    for i, face in enumerate(faces):
        out.append(face if face is not None else _fill_one(faces, found, i, on_missing))
    return TrackedFaces(out, np.array([f is not None for f in faces]), len(faces))


def _fill_one(faces: list[Face | None], found: list[int], index: int, on_missing: str) -> Face:
    before = max((i for i in found if i < index), default=None)
    after = min((i for i in found if i > index), default=None)
    if before is None:
        return faces[after]
    if after is None or on_missing == "hold":
        return faces[before]
    return _blend(faces[before], faces[after], (index - before) / (after - before))


def track_faces(frames: Iterable[np.ndarray], landmarker, on_missing: str = "interpolate", progress: Progress | None = None,
                count: int | None = None, choose: FaceChoice = LARGEST) -> TrackedFaces:
    """Find the chosen face in every frame of a clip, follow that person, and apply the missing-face policy.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB frames, or any iterable of ``(H, W, 3)`` uint8 frames (read one at a
            time, so a long video never sits in memory whole).
        landmarker: a :class:`~aniportrait_lib.face.landmarker.FaceLandmarker`.
        on_missing: ``interpolate``, ``hold`` or ``stop`` (see the module docstring).
        progress: optional ``progress(done, total)`` per analysed frame.
        count: the number of frames when ``frames`` has no ``len`` (an iterator).
        choose: which face when several are in view (default: the largest, in the first frame with a face).
    """
    total = len(frames) if count is None else int(count)  # type: ignore[arg-type]
    return track_detections((landmarker.detect(frame) for frame in frames), on_missing, progress, total, choose)


def track_detections(detections: Iterable[Sequence[Face]], on_missing: str = "interpolate", progress: Progress | None = None,
                     count: int | None = None, choose: FaceChoice = LARGEST) -> TrackedFaces:
    """:func:`track_faces` on faces already found: per frame, every face found in it (e.g. core's FACE_LANDMARKS)."""
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {', '.join(ON_MISSING)}; got {on_missing!r}")
    followed = follow_faces(detections, choose, on_missing == "stop", progress, count)
    total = len(followed.faces) if count is None else int(count)
    tracked = fill_missing(followed.faces + [None] * (total - len(followed.faces)), on_missing)
    if followed.most_faces > 1:
        tracked.choice_note = (f"up to {followed.most_faces} faces in view, following {choose.describe()} "
                               f"(chosen in frame {followed.chosen_at})")
    log.info("AniPortrait face tracking: %s", tracked.summary())
    return tracked
