"""Source videos in: core VIDEO, IMAGE batches and the pack's footage, all as footage read on demand.

Checked against ComfyUI 0.3.64 (``comfy_api/latest/_input/video_types.py``, vendored) and the newer core's
``VideoInput`` (Comfy-Org/ComfyUI, December 2026: ``get_active_trim_window``, ``has_pending_frame_edits``,
``get_frame_rate``). A file-backed VIDEO is read through its stream source, a trim honoured; a video with edits
its stream does not hold yet (newer core's lazy crop/resize) or one made from frames is read through
``get_components`` (then it is in memory already).
"""
from __future__ import annotations

import io as _io

import numpy as np
import torch
from comfy_api.latest import Input, InputImpl
from comfy_api.latest import io

from ..aniportrait_lib.media.frames import ArrayFrames, Footage, VideoFileFrames
from . import sockets

FRAME_TYPES = [io.Image, io.Video, sockets.Footage]


def frames_input(name: str, tooltip: str, types=None) -> io.MultiType.Input:
    """An input that takes an IMAGE batch, a core VIDEO or the pack's footage (aligned frames, crops)."""
    return io.MultiType.Input(name, types=types or FRAME_TYPES, tooltip=tooltip)


def footage_of(value, what: str, fps: float = 30.0) -> Footage:
    """The footage of an input: footage as is, a VIDEO read on demand, an IMAGE batch at ``fps``."""
    if isinstance(value, Footage):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):  # an IMAGE batch, or frames already made uint8
        return Footage.of(ArrayFrames(value, fps, what))
    if isinstance(value, Input.Video):
        return Footage.of(_reader_of_video(value, what))
    raise ValueError(f"the {what} input got {type(value).__name__}; connect an IMAGE batch, a VIDEO or AniPortrait frames")


def _reader_of_video(video, what: str):
    edited = getattr(video, "has_pending_frame_edits", lambda: False)()
    if isinstance(video, InputImpl.VideoFromFile) and not edited:
        start, duration = getattr(video, "get_active_trim_window", lambda: (0.0, 0.0))()
        source = video.get_stream_source()
        if isinstance(source, _io.BytesIO):  # our own cursor: others seek the shared buffer
            source = _io.BytesIO(source.getvalue())
        return VideoFileFrames(source, start, duration)
    components = video.get_components()
    return ArrayFrames(components.images, float(components.frame_rate), what)


def is_image_batch(value) -> bool:
    return isinstance(value, torch.Tensor)
