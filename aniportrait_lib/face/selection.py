"""Which face of a picture with several people: the choice, and following the chosen person through a clip.

A :class:`FaceChoice` picks one face of a picture: ``largest`` (the default), ``index`` (0 = the leftmost face,
counted left to right by the centre x of the face box) or ``nearest`` a point in pixels (the face whose box
holds the point, else the box nearest to it). Face boxes are the extent of the 478 landmarks in pixels.

:func:`follow_faces` applies a choice to a clip: the face is chosen once, in the first frame where the choice
finds it, and every later frame takes the detected face that continues the previous box (centre distance and size
change relative to the face size), never simply the largest one; a frame where the followed person is not found
(only someone else, or nobody) counts as a frame without a face for the missing-face policy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..data import Face

log = logging.getLogger(__name__)

CHOICES = ("largest", "index", "nearest")
#: the most faces one detection returns (MediaPipe's ``num_faces``); more people than this are not seen
MAX_FACES = 8
#: a detected face continues the followed one when its box centre moved at most this many face sizes since the last
#: frame where the person was found (plus ``SHIFT_PER_GAP_FRAME`` per frame in between, at most ``MAX_SHIFT``)
FOLLOW_SHIFT = 0.5
SHIFT_PER_GAP_FRAME = 0.1
MAX_SHIFT = 1.0
#: ... and its size changed by at most this factor either way
FOLLOW_SIZE_RATIO = 1.5

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def _ordinal(index: int) -> str:
    return _ORDINALS[index] if index < len(_ORDINALS) else f"{index + 1}th"


def face_box(face: Face) -> np.ndarray:
    """``(4,)`` float64 ``[x0, y0, x1, y1]``: the landmarks' extent in pixels of the analysed image."""
    px = face.landmarks_px()
    return np.concatenate([px.min(axis=0), px.max(axis=0)])


def box_size(box: np.ndarray) -> float:
    """Face size in pixels: the mean of the box's width and height."""
    return float((box[2] - box[0] + box[3] - box[1]) / 2.0)


def _centre(box: np.ndarray) -> np.ndarray:
    return (np.asarray(box[:2]) + np.asarray(box[2:])) / 2.0


def left_to_right(faces: Sequence[Face]) -> list[Face]:
    """The faces ordered by the centre x of their boxes (index 0 = leftmost)."""
    return sorted(faces, key=lambda f: float(_centre(face_box(f))[0]))


@dataclass(frozen=True)
class FaceChoice:
    """Which face to use when a picture has several.

    Attributes:
        mode: ``largest`` (largest box area), ``index`` (``index`` 0 = leftmost face) or ``nearest`` (``point``).
        index: with ``index``: 0 = the leftmost face, 1 = the next one to its right, ...
        point: with ``nearest``: ``(x, y)`` in pixels of the image the faces were found in.
    """

    mode: str = "largest"
    index: int = 0
    point: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in CHOICES:
            raise ValueError(f"which_face must be one of {', '.join(CHOICES)}; got {self.mode!r}")
        if self.mode == "index" and int(self.index) < 0:
            raise ValueError(f"face_index must be 0 or more (0 = the leftmost face); got {self.index}")
        if self.mode == "nearest" and self.point is None:
            raise ValueError("which_face = nearest needs face_point as 'x,y' in pixels (e.g. 320,180)")

    @classmethod
    def from_inputs(cls, which_face: str = "largest", face_index: int = 0, face_point: str = "") -> "FaceChoice":
        """The choice from a node's ``which_face`` / ``face_index`` / ``face_point`` inputs (``face_point`` is "x,y")."""
        which_face = (which_face or "largest").strip()
        if which_face not in CHOICES:
            raise ValueError(f"which_face must be one of {', '.join(CHOICES)}; got {which_face!r}")
        if which_face == "nearest":
            return cls("nearest", 0, parse_point(face_point))
        if which_face == "index":
            return cls("index", int(face_index))
        return cls()

    def describe(self) -> str:
        """A few words for notes and errors, e.g. 'the second face from the left'."""
        if self.mode == "index":
            return f"the {_ordinal(self.index)} face from the left"
        if self.mode == "nearest":
            return f"the face nearest ({self.point[0]:g}, {self.point[1]:g})"
        return "the largest face"

    def scaled(self, sx: float, sy: float) -> "FaceChoice":
        """The same choice for the image stretched by ``sx`` x ``sy`` (the point moves with it)."""
        if self.point is None:
            return self
        return FaceChoice(self.mode, self.index, (self.point[0] * sx, self.point[1] * sy))

    def pick(self, faces: Sequence[Face], where: str = "the image") -> Face:
        """The chosen face of ``faces`` (at least one), or a ValueError saying what to change."""
        if not faces:
            raise ValueError(f"no face was found in {where}")
        if self.mode == "index":
            if self.index >= len(faces):
                raise self.too_few(len(faces), where)
            return left_to_right(faces)[self.index]
        boxes = [face_box(f) for f in faces]
        if self.mode == "nearest":
            return faces[int(np.argmin([_point_to_box(self.point, b) for b in boxes]))]
        return faces[int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))]

    def too_few(self, count: int, where: str, most: bool = False) -> ValueError:
        """The error for an ``index`` beyond the ``count`` faces found in ``where`` (``most``: in any frame of it)."""
        have = f"{count} face" + ("s" if count != 1 else "")
        valid = "0" if count == 1 else "0 or 1" if count == 2 else f"0 to {count - 1}"
        found = f"no frame of {where} has more than {have}" if most else f"{where} has {have}"
        return ValueError(f"face_index {self.index} asked for {self.describe()} but {found}; set face_index "
                          f"to {valid} (0 = leftmost), or use which_face = largest or nearest")

    def finds_in(self, faces: Sequence[Face]) -> bool:
        """Whether :meth:`pick` can choose among ``faces`` (enough faces for ``index``)."""
        return len(faces) > (self.index if self.mode == "index" else 0)


LARGEST = FaceChoice()


def parse_point(text: str) -> tuple[float, float]:
    """``"x,y"`` (pixels; spaces and brackets allowed) -> ``(x, y)``; a ValueError saying the format otherwise."""
    cleaned = str(text or "").strip().strip("()[]")
    parts = [p for p in cleaned.replace(";", ",").split(",") if p.strip()]
    try:
        x, y = (float(p) for p in parts)
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError
    except ValueError:
        raise ValueError(f"face_point must be 'x,y' in pixels of the image (e.g. 320,180) when which_face = nearest; "
                         f"got {text!r}") from None
    return x, y


def _point_to_box(point: tuple[float, float], box: np.ndarray) -> float:
    """Distance in pixels from ``point`` to ``box`` (0 inside), plus a tiny centre term so nested boxes stay ordered."""
    p = np.asarray(point, dtype=np.float64)
    outside = np.maximum(np.maximum(box[:2] - p, p - box[2:]), 0.0)
    return float(np.linalg.norm(outside) + 1e-6 * np.linalg.norm(p - _centre(box)))


def continuation_cost(previous: np.ndarray, box: np.ndarray, gap: int = 1) -> float | None:
    """How well ``box`` continues the followed ``previous`` box ``gap`` frames later; None when it does not.

    The cost is the centre shift in face sizes plus the log size change; a shift over ``FOLLOW_SHIFT`` (growing by
    ``SHIFT_PER_GAP_FRAME`` per extra frame of gap, at most ``MAX_SHIFT``) or a size change over ``FOLLOW_SIZE_RATIO``
    is another face, not the followed one.
    """
    size = max(box_size(previous), 1e-6)
    shift = float(np.linalg.norm(_centre(box) - _centre(previous))) / size
    ratio = max(box_size(box), 1e-6) / size
    limit = min(FOLLOW_SHIFT + SHIFT_PER_GAP_FRAME * max(gap - 1, 0), MAX_SHIFT)
    if shift > limit or not 1.0 / FOLLOW_SIZE_RATIO <= ratio <= FOLLOW_SIZE_RATIO:
        return None
    return shift + abs(float(np.log(ratio)))


@dataclass
class Followed:
    """The followed person's face per frame (``None`` where not found) and what the choice saw.

    Attributes:
        faces: one entry per frame given; ``None`` where the followed person was not found.
        chosen_at: the frame where the choice was made (None: the choice found no face in any frame).
        most_faces: the most faces seen in one frame.
    """

    faces: list[Face | None]
    chosen_at: int | None
    most_faces: int


def follow_faces(detections: Iterable[Sequence[Face]], choose: FaceChoice = LARGEST, stop_at_miss: bool = False,
                 progress=None, count: int | None = None) -> Followed:
    """Follow the chosen person through per-frame detections (each frame: every face found in it).

    Args:
        detections: per frame, the faces found (any order); an iterator is read one frame at a time.
        choose: which face, chosen in the first frame where it is found (frames before it count as missing).
        stop_at_miss: stop reading at the first frame without the followed person (the ``stop`` policy).
        progress: optional ``progress(done, total)`` per frame (``total`` = ``count`` or ``len(detections)``).
        count: the number of frames when ``detections`` has no ``len``.

    Raises:
        ValueError: ``choose`` is an index and some frame has faces but no frame has that many.
    """
    total = count if count is not None else (len(detections) if hasattr(detections, "__len__") else 0)  # type: ignore[arg-type]
    out: list[Face | None] = []
    previous: np.ndarray | None = None
    last_seen = -1
    chosen_at: int | None = None
    most = 0
    for i, faces in enumerate(detections):
        faces = list(faces)
        most = max(most, len(faces))
        face: Face | None = None
        if previous is None:
            if choose.finds_in(faces):
                face, chosen_at = choose.pick(faces, f"frame {i}"), i
        elif faces:
            face = _continue(previous, faces, i - last_seen, lone=most == 1)
        if face is not None:
            previous, last_seen = face_box(face), i
        out.append(face)
        if progress is not None:
            progress(i + 1, total)
        if face is None and stop_at_miss:
            break
    if chosen_at is None and most > 0:
        raise choose.too_few(most, "the first frame" if stop_at_miss else "the video", most=not stop_at_miss)
    if chosen_at is not None and most > 1:
        log.info("AniPortrait face tracking: up to %d faces per frame, following %s chosen in frame %d",
                 most, choose.describe(), chosen_at)
    return Followed(out, chosen_at, most)


def _continue(previous: np.ndarray, faces: list[Face], gap: int, lone: bool) -> Face | None:
    """The face that continues ``previous``; with only ever one face in view, the lone face (a cut or a fast move)."""
    costs = [continuation_cost(previous, face_box(f), gap) for f in faces]
    best = min((c, k) for k, c in enumerate(costs) if c is not None) if any(c is not None for c in costs) else None
    if best is not None:
        return faces[best[1]]
    return faces[0] if lone and len(faces) == 1 else None
