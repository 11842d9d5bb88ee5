"""Test media: frames of the shared real clips, and how many video frames the pack makes from a wav."""
from __future__ import annotations

import numpy as np

from support.paths import shared_assets_dir


def real_clip_frames(name: str, count: int | None = None) -> np.ndarray:
    """The first ``count`` (default: all) frames of a clip of ``../shared/assets/real/`` as uint8 (T, H, W, 3) RGB."""
    from PIL import Image

    with Image.open(shared_assets_dir() / "real" / name) as clip:
        frames = []
        for i in range(clip.n_frames if count is None else count):
            clip.seek(i)
            frames.append(np.asarray(clip.convert("RGB")))
    return np.stack(frames)


def frames_at_30fps(wav_path) -> int:
    """Video frames the pack makes from a wav at 30 fps (it resamples to 16 kHz with soxr, which keeps
    ``round(n * 16000 / rate)`` samples)."""
    import math
    import wave

    with wave.open(str(wav_path)) as w:
        n, rate = w.getnframes(), w.getframerate()
    return math.ceil(round(n * 16000 / rate) / 16000 * 30)
