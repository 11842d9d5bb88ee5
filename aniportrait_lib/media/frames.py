"""Video frames read on demand: a source (a video file or frames in memory) on a timeline.

A long video never sits in memory whole. Every step that looks at a source video (tracking, cropping,
pasting back) reads its frames a few at a time through a :class:`FrameReader`:

* :class:`VideoFileFrames` decodes a file (or an in-memory container) with PyAV. Reading forward is one
  sequential decode; a jump backwards (or far ahead) seeks to the keyframe before the wanted frame and
  decodes from there. A run of frames read backwards (the ping-pong of ``loop``) is decoded forward a
  block at a time and handed out in reverse, so memory stays at one block.
* :class:`ArrayFrames` serves frames already in memory (an IMAGE batch, a photo).

A :class:`Footage` is a reader plus a timeline: ``index[t]`` is the source frame shown at timeline frame
``t``, at ``fps`` timeline frames per second. Align Video To Audio makes one on the speech's 30 fps
timeline; a video used directly is its own timeline. Steps that only need each *source* frame once
(tracking) read :meth:`Footage.unique_sources` and map the result back with the inverse index.

Frames are ``(H, W, 3)`` uint8 RGB. Frame ``i`` of a file is the ``i``-th frame the decoder gives after
the trim start.
"""
from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .. import imaging

#: frames decoded at once when a run is read backwards (1080p: 32 x 6.2 MB)
BACKWARD_BLOCK = 32
#: a forward jump of more than this many frames seeks instead of decoding through
SEEK_AHEAD = 120


class FrameReader(ABC):
    """Frames of one source, by index. ``size`` is ``(width, height)``, ``fps`` frames per second."""

    size: tuple[int, int]
    fps: float
    num_frames: int

    @abstractmethod
    def read(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """Yield the frames ``indices`` (any order, repeats allowed) as ``(H, W, 3)`` uint8, in that order."""

    def close(self) -> None:
        """Release the decoder (a later read opens it again)."""

    def check_index(self, indices: Sequence[int]) -> None:
        if len(indices) and (min(indices) < 0 or max(indices) >= self.num_frames):
            raise IndexError(f"frame {max(indices)} asked of a video with {self.num_frames} frames")


class ArrayFrames(FrameReader):
    """Frames in memory: ``(T, H, W, C)`` uint8, or float 0..1 (an IMAGE batch, converted one chunk at a time)."""

    def __init__(self, frames, fps: float, what: str = "frames"):
        if getattr(frames, "ndim", 0) != 4 or frames.shape[0] < 1:
            raise ValueError(f"the {what} must be a batch of images (frames, height, width, channels); "
                             f"got shape {tuple(getattr(frames, 'shape', ()))}")
        self.frames, self.what = frames, what
        self.num_frames = int(frames.shape[0])
        self.size = (int(frames.shape[2]), int(frames.shape[1]))
        self.fps = float(fps)

    def read(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        self.check_index(indices)
        for i in indices:
            yield imaging.image_to_uint8(self.frames[int(i)], self.what)


class VideoFileFrames(FrameReader):
    """A video file's frames, decoded with PyAV as they are read.

    Args:
        source: a path, or a seekable binary file object holding the container.
        start_time, duration: the part of the video to use, in seconds (``duration`` 0 = to the end).
    """

    def __init__(self, source, start_time: float = 0.0, duration: float = 0.0):
        self.source = source
        with self._open() as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise ValueError("the video has no frame rate; re-encode it (e.g. with core Save Video)")
            self.fps = float(rate)
            self.size = (int(stream.codec_context.width), int(stream.codec_context.height))
            self._time_base = float(stream.time_base)
            self._start_pts = stream.start_time or 0
            total = stream.frames or _count_packets(container)
        self._first = int(round(max(start_time, 0.0) * self.fps))
        self.num_frames = total - self._first
        if duration > 0:
            self.num_frames = min(self.num_frames, int(round(duration * self.fps)))
        if self.num_frames < 1:
            raise ValueError("the video has no frames in the chosen part; check its trim start and duration")
        self._container = None  # an av InputContainer once reading starts
        self._frames: Optional[Iterator] = None
        self._next = 0  # file frame index the decoder gives next
        self._last: tuple[int, Optional[np.ndarray]] = (-1, None)  # a repeated frame (30 fps timeline of 25 fps) is not decoded twice

    def _open(self):
        import av

        if isinstance(self.source, (io.IOBase, io.BytesIO)):
            self.source.seek(0)
        return av.open(self.source, mode="r")

    def _file_index(self, frame) -> int:
        seconds = (frame.pts - self._start_pts) * self._time_base if frame.pts is not None else 0.0
        return int(math.floor(seconds * self.fps + 0.5))

    def _start_decoding(self, target: int) -> None:
        """Position the decoder so that the next frame it gives is at or before file frame ``target``."""
        if self._container is None:
            self._container = self._open()
            self._container.streams.video[0].thread_type = "AUTO"
        stream = self._container.streams.video[0]
        pts = self._start_pts + int((target / self.fps) / self._time_base)
        self._container.seek(pts, stream=stream, backward=True, any_frame=False)
        self._frames = self._container.decode(stream)
        self._next = -1  # unknown until the first frame is decoded

    def _frame_at(self, file_index: int) -> np.ndarray:
        if self._last[0] == file_index:
            return self._last[1]
        rgb = self._decode_frame(file_index)
        self._last = (file_index, rgb)
        return rgb

    def _decode_frame(self, file_index: int) -> np.ndarray:
        if self._frames is None or file_index < self._next or file_index > self._next + SEEK_AHEAD or self._next < 0:
            self._start_decoding(file_index)
        last = None
        for frame in self._frames:
            got = self._file_index(frame)
            self._next = got + 1
            if got >= file_index:
                return frame.to_ndarray(format="rgb24")
            last = frame
        if last is not None:  # the stream ended early (metadata counted one frame too many): hold the last one
            return last.to_ndarray(format="rgb24")
        raise IndexError(f"frame {file_index - self._first} could not be decoded")

    def read(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        self.check_index(indices)
        indices = [int(i) for i in indices]
        pos = 0
        while pos < len(indices):
            end = _backward_run_end(indices, pos)
            if end - pos < 2:
                yield self._frame_at(self._first + indices[pos])
                pos += 1
                continue
            yield from self._read_backward(indices[pos:end])
            pos = end

    def _read_backward(self, run: list[int]) -> Iterator[np.ndarray]:
        """Frames of a descending run: decode a block forward, hand it out in reverse."""
        for at in range(0, len(run), BACKWARD_BLOCK):
            block = run[at:at + BACKWARD_BLOCK]
            forward = {i: self._frame_at(self._first + i) for i in range(block[-1], block[0] + 1)}
            for i in block:
                yield forward[i]
            del forward

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames, self._last = None, None, (-1, None)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _count_packets(container) -> int:
    """Frames of a stream whose header does not say, by reading its packets (no decoding)."""
    stream = container.streams.video[0]
    return sum(1 for packet in container.demux(stream) if packet.size)


def _backward_run_end(indices: list[int], pos: int) -> int:
    """End (exclusive) of the run of consecutive descending indices starting at ``pos``."""
    end = pos + 1
    while end < len(indices) and indices[end] == indices[end - 1] - 1:
        end += 1
    return end


@dataclass
class Footage:
    """A source's frames on a timeline.

    Attributes:
        reader: the source frames.
        index: ``(T,)`` int64, the source frame shown at each timeline frame.
        fps: timeline frames per second.
        length_rule: how the source continues past its end when written back at its own rate
            (``loop``: back and forth, ``hold``: last frame held, ``trim``: never past the end).
    """

    reader: FrameReader
    index: np.ndarray
    fps: float
    length_rule: str = "trim"
    _unique: Optional[tuple[np.ndarray, np.ndarray]] = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, reader: FrameReader) -> "Footage":
        """The source on its own timeline (every frame once, at its own rate)."""
        return cls(reader, np.arange(reader.num_frames, dtype=np.int64), reader.fps)

    @property
    def num_frames(self) -> int:
        return int(self.index.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return self.reader.size

    @property
    def source_fps(self) -> float:
        return self.reader.fps

    def duration(self) -> float:
        return self.num_frames / self.fps

    def frames(self, start: int = 0, stop: Optional[int] = None) -> Iterator[np.ndarray]:
        """Timeline frames ``start..stop`` as ``(H, W, 3)`` uint8, one at a time."""
        return self.reader.read(self.index[start:stop])

    def read_batch(self, start: int, stop: int) -> np.ndarray:
        """Timeline frames ``start..stop`` as one ``(n, H, W, 3)`` uint8 array."""
        return np.stack(list(self.frames(start, stop)))

    def unique_sources(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sources, inverse)``: the source frames the timeline shows, ascending, and for each timeline frame
        its position in ``sources`` (``sources[inverse] == index``)."""
        if self._unique is None:
            self._unique = np.unique(self.index, return_inverse=True)
        return self._unique

    def with_reader(self, reader: FrameReader) -> "Footage":
        """The same timeline over another reader of the same source frames (e.g. their crops)."""
        return Footage(reader, self.index, self.fps, self.length_rule)

    def source_timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """The timeline written back at the source's own rate: every source frame once, in order.

        Returns ``(source_index (J,), times (J,))``: for output frame ``j`` at ``source_fps``, the source frame and its
        time in seconds. ``J`` covers this footage's duration; past the source's end ``length_rule`` applies.
        """
        count = max(int(round(self.duration() * self.source_fps)), 1)
        step = np.arange(count, dtype=np.int64)
        last = self.reader.num_frames - 1
        if self.length_rule == "loop" and last > 0:
            period = 2 * last
            folded = step % period
            source = np.where(folded <= last, folded, period - folded)
        else:
            source = np.minimum(step, last)
        return source, step / self.source_fps


class CroppedFrames(FrameReader):
    """The crops of another reader's frames: source frame ``i`` cut at ``boxes[i]`` and resized.

    ``crop(frame, box)`` does the cutting (the compose step's resampler); ``boxes`` is ``(num_frames, 4)``.
    """

    def __init__(self, source: FrameReader, boxes: np.ndarray, crop_size: tuple[int, int],
                 crop: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        if len(boxes) != source.num_frames:
            raise ValueError(f"{len(boxes)} crop boxes for {source.num_frames} source frames")
        self.source, self.boxes, self.crop = source, np.asarray(boxes, dtype=np.float64), crop
        self.size, self.fps, self.num_frames = tuple(crop_size), source.fps, source.num_frames

    def read(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for i, frame in zip(indices, self.source.read(indices)):
            yield self.crop(frame, self.boxes[int(i)])

    def close(self) -> None:
        self.source.close()
