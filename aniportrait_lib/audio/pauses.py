"""Pauses in speech: per-frame signal energy with hysteresis, at the video frame rate.

A frame's level is the variance (mean square about the frame's mean) of the clip's samples over one
frame period (``16000 / fps`` samples from the frame's start time), in dB relative to the clip's speech
level: the level that the loudest 5% of frames reach (95th percentile), so pauses, however long, do not lower it unless speech
fills less than 5% of the clip. The wav2vec2 input values of :class:`~aniportrait_lib.data.AudioFeatures`
are the clip scaled to unit variance, and a scale shifts every level by the same dB, so the relative
levels are those of the recording.

A pause starts on a frame below ``threshold_db`` and lasts until a frame above ``threshold_db +``
:data:`HYSTERESIS_DB` (the margin keeps a level hovering at the threshold from chattering between
speech and silence); it then ends after its last frame below the threshold, so the onset of the next
word (the frames rising through the margin) is speech, as the end of the previous word was. Pauses
shorter than ``min_pause_seconds`` are dropped (the gaps between words).
Digital silence (below :data:`FLOOR_DB` of the clip's RMS) is a pause whatever the speech level, so a
clip of silence only is one pause.
"""
from __future__ import annotations

import math

import numpy as np

from ..data import SAMPLE_RATE, AudioFeatures

#: default pause threshold (dB below the speech level): espeak-ng speech dips to about -30 dB within
#: words for one or two frames; room noise of a usable recording sits 35 dB or more below speech
DEFAULT_THRESHOLD_DB = -30.0
#: default shortest pause (seconds): shorter gaps are the breaks between words and phrases
DEFAULT_MIN_PAUSE_SECONDS = 0.3
#: a pause ends on a frame this many dB above the threshold (hysteresis)
HYSTERESIS_DB = 6.0
#: percentile of the frame levels taken as the clip's speech level
SPEECH_PERCENTILE = 95.0
#: frames below this (dB relative to the clip's RMS, which is 1 in the input values) are digital silence
FLOOR_DB = -100.0
_EPS = 1e-12  # mean squares of exact zeros -> -120 dB, below the floor


def frame_levels_db(features: AudioFeatures) -> np.ndarray:
    """``(T,)`` float64 level of each video frame in dB: the variance of its samples, relative to the clip's
    mean square (1: the input values have unit variance).

    Frame ``t`` reads ``round(16000 / fps)`` samples from ``round(t * 16000 / fps)`` (the last frames
    of a clip whose length is not a whole number of frames read the clip's last samples). One frame is
    read at a time, so the memory beyond the clip is ``T`` floats however long the clip.
    """
    values = features.input_values
    total = values.shape[0]
    span = max(1, min(total, int(round(SAMPLE_RATE / features.fps))))
    levels = np.empty(features.num_frames, dtype=np.float64)
    for t in range(features.num_frames):
        start = min(int(round(t * SAMPLE_RATE / features.fps)), total - span)
        window = values[start:start + span].astype(np.float64)
        window -= window.mean()  # a constant is no sound (a DC offset, or silence after the clip's mean was removed)
        levels[t] = 10.0 * math.log10(float(np.dot(window, window)) / span + _EPS)
    return levels


def find_pauses(features: AudioFeatures, threshold_db: float = DEFAULT_THRESHOLD_DB,
                min_pause_seconds: float = DEFAULT_MIN_PAUSE_SECONDS) -> list[tuple[int, int]]:
    """The pauses of a clip as video frame ranges ``[start, end)``, in order, each at least
    ``min_pause_seconds`` long.

    Args:
        features: the clip (its input values and frame count at its fps).
        threshold_db: a pause starts below this level, in dB relative to the clip's speech level (< 0).
        min_pause_seconds: shorter quiet stretches are not pauses (>= 0).
    """
    threshold_db, min_pause_seconds = float(threshold_db), float(min_pause_seconds)
    if not (math.isfinite(threshold_db) and threshold_db < 0):
        raise ValueError(f"the pause threshold is in dB below the speech level, so it must be below 0; got {threshold_db:g}")
    if not (math.isfinite(min_pause_seconds) and min_pause_seconds >= 0):
        raise ValueError(f"the minimum pause length must be 0 s or more; got {min_pause_seconds:g}")
    levels = frame_levels_db(features)
    speech = float(np.percentile(levels, SPEECH_PERCENTILE))
    enter = speech + threshold_db
    leave = enter + HYSTERESIS_DB
    quiet = (levels < enter) | (levels < FLOOR_DB)
    loud = (levels > leave) & (levels >= FLOOR_DB)
    min_frames = max(1, int(math.ceil(min_pause_seconds * features.fps - 1e-9)))
    pauses, start, last_quiet = [], None, -1
    for t in range(levels.shape[0]):
        if quiet[t]:
            start = t if start is None else start
            last_quiet = t
        elif start is not None and loud[t]:
            # the pause ends after its last quiet frame: the rise from there is the speech's onset
            if last_quiet + 1 - start >= min_frames:
                pauses.append((start, last_quiet + 1))
            start = None
    if start is not None and levels.shape[0] - start >= min_frames:
        pauses.append((start, levels.shape[0]))
    return pauses
