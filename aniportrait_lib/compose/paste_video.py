"""Paste generated face frames back into a video as it is written, at the source's own frame rate.

Nothing is held whole: per chunk of output frames the generated latents are decoded, each frame is pasted into
its source frame (read from the file) with :func:`paste.paste_frame`, and the composites go to the encoder.

Timing: the output is the source at its own rate, every source frame exactly once and in order (past the source's
end the timeline's length rule applies: loop plays it back and forth, hold holds the last frame). The generated
frames are on the speech's timeline (30 fps); output frame ``j`` at time ``j / source_fps`` shows the generated frame
nearest in time, ``k = round(j * timeline_fps / source_fps)``, in the crop window of that timeline frame. So a
25 fps source gets every fifth generated frame dropped instead of every fifth background frame repeated: the
camera's motion keeps its rhythm, and for sources up to 30 fps timeline frame ``k`` shows exactly source frame ``j``
(both are the nearest frames in time), so the window fits the background it is pasted into.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..data import CropInfo
from ..media.encode import VideoWriter, write_chunks
from ..media.frames import ArrayFrames, Footage
from .paste import MASK_MODES, face_size_of, paste_frame

Progress = Callable[[int, int], None]
#: ``decode(start, stop)`` -> generated frames ``start..stop`` as ``(n, h, w, 3)`` float levels (0..255)
Decode = Callable[[int, int], np.ndarray]


@dataclass
class PastePlan:
    """Which frames make each output frame.

    Attributes:
        source: ``(J,)`` source frame of output frame ``j``.
        generated: ``(J,)`` generated frame (= timeline frame) pasted into it.
        window: ``(J,)`` crop-info window used (the generated frame's, or 0 for a photo's single window).
        fps: output frames per second (the source's).
    """

    source: np.ndarray
    generated: np.ndarray
    window: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.source.shape[0])


def photo_timeline(photo: np.ndarray, num_frames: int, fps: float) -> Footage:
    """A photo ``(1, H, W, 3)`` shown for ``num_frames`` frames at ``fps``."""
    return Footage(ArrayFrames(photo, fps, "original photo"), np.zeros(num_frames, dtype=np.int64), float(fps), "hold")


def plan_paste(original: Footage, info: CropInfo, num_generated: int) -> PastePlan:
    """Match output frames to source frames, generated frames and crop windows (module docstring), or say what to
    connect when the counts do not fit together."""
    if tuple(original.size) != tuple(info.source_size):
        raise ValueError(f"the original is {original.size[0]}x{original.size[1]} but the crop info was made from "
                         f"{info.source_size[0]}x{info.source_size[1]} frames; connect the photo or video that went into "
                         "AniPortrait Face Crop")
    if info.num_frames not in (1, original.num_frames):
        raise ValueError(f"the crop info holds {info.num_frames} crop windows but the original has {original.num_frames} "
                         "frames; connect the same frames that went into AniPortrait Face Crop")
    if original.num_frames != num_generated:
        raise ValueError(f"the generated video has {num_generated} frames but the original has {original.num_frames}; "
                         "connect the frames that went into AniPortrait Face Crop (for dubbing: Align Video To Audio's "
                         "aligned frames), made from the same audio as the generated video")
    source, times = original.source_timeline()
    generated = np.minimum(np.floor(times * original.fps + 0.5).astype(np.int64), num_generated - 1)
    window = generated if info.num_frames > 1 else np.zeros_like(generated)
    return PastePlan(source, generated, window, original.source_fps)


class _GeneratedFrames:
    """Generated frames decoded a chunk at a time, for indices that never go back."""

    def __init__(self, decode: Decode, count: int, chunk_frames: int):
        self.decode, self.count, self.chunk = decode, count, max(1, chunk_frames)
        self.start, self.frames = 0, np.empty((0,))

    def __getitem__(self, k: int) -> np.ndarray:
        if not self.start <= k < self.start + len(self.frames):
            self.frames = None  # free the old chunk before decoding the next one
            self.start = k
            self.frames = self.decode(k, min(k + self.chunk, self.count))
        return self.frames[k - self.start]


def paste_into_video(decode: Decode, plan: PastePlan, original: Footage, info: CropInfo, writer: VideoWriter,
                     mask: str, expand: float, feather: float, color_match: bool = False, chunk_frames: int = 16,
                     progress: Optional[Progress] = None) -> None:
    """Decode, paste and encode chunk by chunk, as :func:`plan_paste` planned.

    ``writer`` is open at the source's size and ``plan.fps``; it is not closed here.
    ``progress(done, total)`` per output chunk (and may raise to cancel).
    """
    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)}; got {mask!r}")
    generated = _GeneratedFrames(decode, int(plan.generated.max()) + 1, chunk_frames)

    def composites(start: int, stop: int) -> np.ndarray:
        sources = original.reader.read(plan.source[start:stop])
        return np.stack([_paste_one(generated[int(plan.generated[j])], frame, info, int(plan.window[j]), mask, expand,
                                    feather, color_match)
                         for j, frame in zip(range(start, stop), sources)])

    write_chunks(writer, plan.num_frames, chunk_frames, composites, progress)


def _paste_one(generated: np.ndarray, frame: np.ndarray, info: CropInfo, window: int, mask: str, expand: float,
               feather: float, color_match: bool) -> np.ndarray:
    points = info.face_points[window] if mask == "face" and info.face_points is not None else None
    (x0, y0, x1, y1), pixels, _ = paste_frame(generated, frame, info.boxes[window], points, expand, feather, color_match,
                                              face_size_of(info, window))
    out = frame.copy()  # the reader may hand the same array out again (a held or repeated frame)
    out[y0:y1, x0:x1] = pixels
    return out
