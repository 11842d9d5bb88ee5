"""A face at rest in silence: Audio2Mesh offsets eased to zero (the reference's own mesh) in pauses.

Audio2Mesh keeps moving the mouth when nobody speaks. In each pause of the speech (found by
:func:`~aniportrait_lib.audio.pauses.find_pauses`) the offsets are blended towards zero, i.e. towards
the reference face as it is in the picture, with a raised-cosine ease at both ends of the pause.

The whole face rests, not the mouth alone: nobody speaks, so nothing in the audio drives any of it,
and the jaw, chin and cheeks move with the lips (resting the lips while the chin keeps moving would
need a seam between the two). The reference's expression is kept because the rest shape is the
reference's own mesh; the head pose (Audio2Pose or a template) is not touched, so the head stays alive.

The ease lies inside the pause, so every frame outside a pause keeps its offsets bit for bit; a pause
at the start or end of the clip has no ease on that side (nothing to ease from).
"""
from __future__ import annotations

import math

import numpy as np

from ..audio import pauses as pause_finder
from ..data import AudioFeatures

#: default ease into and out of rest (seconds; 4 frames at 30 fps)
DEFAULT_EASE_SECONDS = 0.12


def rest_weights(pauses: list[tuple[int, int]], num_frames: int, ease_frames: int) -> np.ndarray:
    """``(T,)`` float64 blend towards rest per frame: 0 outside pauses, 1 inside them after the ease.

    A pause ``[a, b)`` ramps up over its first ``ease_frames`` frames and down over its last ones
    (``0.5 - 0.5 cos``, never reaching 0 inside the pause nor 1 before the ramp ends); a pause shorter
    than two eases gets two half-length ramps. No ramp where the pause meets the clip's start or end.
    """
    weights = np.zeros(num_frames, dtype=np.float64)
    for start, end in pauses:
        length = end - start
        weights[start:end] = 1.0
        ease = min(max(0, int(ease_frames)), length // 2)
        if ease == 0:
            continue
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, ease + 1) / (ease + 1))
        if start > 0:
            weights[start:start + ease] = ramp
        if end < num_frames:
            weights[end - ease:end] = ramp[::-1]
    return weights


def rest_in_pauses(offsets: np.ndarray, features: AudioFeatures,
                   threshold_db: float = pause_finder.DEFAULT_THRESHOLD_DB,
                   min_pause_seconds: float = pause_finder.DEFAULT_MIN_PAUSE_SECONDS,
                   ease_seconds: float = DEFAULT_EASE_SECONDS) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Audio2Mesh offsets with the face eased to rest in the clip's pauses.

    Args:
        offsets: ``(T, 468, 3)`` cm vertex displacements from the reference mesh (Audio2Mesh output).
        features: the clip the offsets were predicted from (``T`` frames).
        threshold_db, min_pause_seconds: what counts as a pause (see ``find_pauses``).
        ease_seconds: length of the ease into and out of rest (>= 0; 0 = a cut).
    Returns:
        (the offsets, a new array of the same dtype, equal to ``offsets`` outside the pauses and 0 where
        the ease is done; the pauses as frame ranges ``[start, end)``).
    """
    ease_seconds = float(ease_seconds)
    if not (math.isfinite(ease_seconds) and ease_seconds >= 0):
        raise ValueError(f"the ease into rest must be 0 s or more; got {ease_seconds:g}")
    if offsets.shape[0] != features.num_frames:
        raise ValueError(f"the offsets have {offsets.shape[0]} frames but the audio features {features.num_frames}; "
                         "give the rest step the clip the offsets were predicted from")
    pauses = pause_finder.find_pauses(features, threshold_db, min_pause_seconds)
    weights = rest_weights(pauses, features.num_frames, int(round(ease_seconds * features.fps)))
    out = offsets.copy()
    for t in np.flatnonzero(weights):  # only pause frames are written: the rest stay bit-identical
        out[t] = offsets[t] * offsets.dtype.type(1.0 - weights[t])
    return out, pauses
