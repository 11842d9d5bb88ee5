"""Video dubbing: a source video's frames and head motion on the timeline of new speech.

The output timeline is the new audio's at ``out_fps`` (30, the stage-1 rate). Each output frame shows the
source frame nearest in time; when the audio and the video differ in length, ``length_rule`` says how:

* ``loop``: the video runs back and forth (ping-pong, no jump) for as long as the audio lasts;
* ``hold``: the video's last frame is held until the audio ends;
* ``trim``: the longer of the two is cut to the shorter (a longer audio is cut to the video's duration).

With equal lengths every rule gives the same frames. The head motion of the aligned frames then drives
the reference face (a crop of the same video): :func:`head_motion_from_video` keeps the motion's meshes
(the mouth and expression from Audio2Mesh) and takes each frame's head pose from the video.
"""
from __future__ import annotations

import math

import numpy as np

from ..data import Motion
from .build import relative_to_reference

LENGTH_RULES = ("loop", "hold", "trim")


def _check_rule(length_rule: str) -> None:
    if length_rule not in LENGTH_RULES:
        raise ValueError(f"length_rule must be one of {', '.join(LENGTH_RULES)}; got {length_rule!r}")


def audio_frame_count(waveform, sample_rate: int, out_fps: float) -> int:
    """Frames the Audio Features node makes of this clip (same resampling and rounding, so they always agree)."""
    from ..audio import features

    return features.frame_count(features.to_mono_16k(waveform, sample_rate).shape[0], out_fps)


def align_to_audio(num_source: int, source_fps: float, waveform, sample_rate: int, out_fps: float,
                   length_rule: str) -> tuple[np.ndarray, int]:
    """The dubbed timeline: for each output frame the source frame shown, and how many audio samples stay.

    Args:
        num_source, source_fps: the source video's frame count and rate.
        waveform: the new audio, ``(..., samples)`` (core AUDIO layout), at ``sample_rate`` Hz.
        out_fps: the output frame rate (30).
        length_rule: ``loop``, ``hold`` or ``trim`` (module docstring).
    Returns:
        ``(indices (N,), kept_samples)``; N equals the frame count of the kept audio at ``out_fps``.
    """
    _check_rule(length_rule)
    if num_source < 1 or source_fps <= 0 or out_fps <= 0:
        raise ValueError(f"the source video needs at least one frame and a positive fps (got {num_source} frames at {source_fps} fps)")
    kept = int(waveform.shape[-1])
    if kept == 0:
        raise ValueError("the new audio is empty; connect a clip with speech in it")
    if length_rule == "trim":
        kept = min(kept, int(math.ceil(num_source / source_fps * sample_rate)))
    num_out = audio_frame_count(waveform[..., :kept], sample_rate, out_fps)
    return source_frame_indices(num_source, source_fps, num_out, out_fps, length_rule), kept


def ping_pong(index: np.ndarray, count: int) -> np.ndarray:
    """Fold indices ``0, 1, ...`` onto ``0..count-1`` back and forth: 0 1 2 1 0 1 2 ... (count 3)."""
    if count == 1:
        return np.zeros_like(index)
    period = 2 * (count - 1)
    folded = index % period
    return np.where(folded < count, folded, period - folded)


def source_frame_indices(num_source: int, source_fps: float, num_out: int, out_fps: float, length_rule: str) -> np.ndarray:
    """``(num_out,)`` int64: for each output frame at ``out_fps``, the source frame shown (nearest in time).

    Times beyond the video's end follow ``length_rule`` (loop: back and forth; hold: the last frame; trim: never
    reached because the output is cut to the video).
    """
    _check_rule(length_rule)
    times = np.arange(num_out) / float(out_fps)
    index = np.floor(times * source_fps + 0.5).astype(np.int64)
    if length_rule == "loop":
        return ping_pong(index, num_source)
    return np.minimum(index, num_source - 1)


def head_motion_from_video(motion: Motion, transforms: np.ndarray, ref_transform: np.ndarray) -> Motion:
    """The motion's meshes with the video's per-frame head pose, relative to the reference face.

    Args:
        motion: ``T`` frames (e.g. from Audio2Mesh: the reference mesh plus the speech's mouth motion).
        transforms: ``(T, 4, 4)`` the video frames' face transforms (canonical -> camera, MediaPipe's scale
            included), tracked on frames of the same framing as the reference (the crops).
        ref_transform: ``(4, 4)`` the reference face's transform.
    Returns:
        a Motion that projects each frame's mesh where the video's head is (its scale change included).
    """
    transforms = np.asarray(transforms, dtype=np.float64)
    if transforms.shape != (motion.num_frames, 4, 4):
        raise ValueError(f"the video gives {transforms.shape[0] if transforms.ndim == 3 else 0} head poses for a motion of "
                         f"{motion.num_frames} frames; align the video to the audio first (AniPortrait Align Video To Audio)")
    return relative_to_reference(motion.meshes, transforms, ref_transform, motion.fps)
