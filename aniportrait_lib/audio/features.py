"""Audio front end: ComfyUI-style waveforms -> mono 16 kHz -> wav2vec2 input values.

Matches the original's ``librosa.load(sr=16000)`` + ``Wav2Vec2FeatureExtractor`` (whole-clip
zero-mean/unit-variance normalisation, eps 1e-7, float32). Resampling uses libsoxr (``soxr``), a
real band-limited resampler; the original used resampy ``kaiser_best``, so non-16 kHz input differs
from the original only at the level of two high-quality resamplers.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data import DEFAULT_FPS, SAMPLE_RATE, AudioFeatures

#: samples the wav2vec2-base conv stack needs to emit one feature frame (receptive field, 25 ms)
MIN_SAMPLES = 400


def to_mono_16k(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix down and resample a waveform to mono 16 kHz float32.

    Args:
        waveform: ``[B, C, T]`` (ComfyUI AUDIO; only the first batch item is used), ``[C, T]`` or ``[T]``,
            float samples in [-1, 1].
        sample_rate: Hz of ``waveform``.
    Returns:
        ``(N,)`` float32 at 16 kHz.
    """
    if isinstance(waveform, torch.Tensor):
        wav = waveform.detach().to("cpu", torch.float32).numpy()
    else:
        wav = np.asarray(waveform, dtype=np.float32)
    if wav.ndim == 3:
        if wav.shape[0] < 1:
            raise ValueError("the audio batch is empty; connect an audio clip (e.g. from LoadAudio).")
        wav = wav[0]
    if wav.ndim == 2:
        wav = wav.mean(axis=0)  # librosa's mono mix-down is the channel mean
    if wav.ndim != 1:
        raise ValueError(f"audio waveform must be [B, C, T], [C, T] or [T]; got shape {tuple(waveform.shape)}.")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"audio sample rate must be a positive integer (Hz); got {sample_rate!r}.")
    if wav.size == 0:
        raise ValueError("the audio clip is empty (0 samples); use a clip with speech in it.")
    if not np.isfinite(wav).all():
        raise ValueError("the audio contains NaN or infinite samples; re-export or re-load the clip.")
    if sample_rate != SAMPLE_RATE:
        import soxr

        wav = soxr.resample(wav, int(sample_rate), SAMPLE_RATE, quality="VHQ").astype(np.float32)
    return np.ascontiguousarray(wav, dtype=np.float32)


def normalize_clip(wav: np.ndarray) -> np.ndarray:
    """Whole-clip zero-mean/unit-variance normalisation of ``Wav2Vec2FeatureExtractor`` (float32)."""
    wav = np.asarray(wav, dtype=np.float32)
    return ((wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)).astype(np.float32)


def frame_count(num_samples: int, fps: float = DEFAULT_FPS) -> int:
    """Video frames for ``num_samples`` at 16 kHz: ``ceil(num_samples / 16000 * fps)`` (float math as the original)."""
    return int(math.ceil(num_samples / SAMPLE_RATE * fps))


def prepare_audio(waveform: torch.Tensor | np.ndarray, sample_rate: int, fps: float = DEFAULT_FPS) -> tuple[np.ndarray, int]:
    """Waveform -> (normalised 16 kHz input values ``(N,)`` float32, frame count at ``fps``).

    Raises ValueError for empty or too-short clips with a message saying what to change.
    """
    wav = to_mono_16k(waveform, sample_rate)
    if wav.shape[0] < MIN_SAMPLES:
        raise ValueError(
            f"the audio clip is too short ({wav.shape[0] / SAMPLE_RATE * 1000:.1f} ms); "
            f"AniPortrait needs at least {MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms of audio."
        )
    return normalize_clip(wav), frame_count(wav.shape[0], fps)


def audio_features(waveform: torch.Tensor | np.ndarray, sample_rate: int, fps: float = DEFAULT_FPS) -> AudioFeatures:
    """A clip (``[B, C, T]``, ``[C, T]`` or ``[T]``; the first clip of a batch) -> :class:`AudioFeatures` at ``fps``."""
    values, frames = prepare_audio(waveform, sample_rate, fps)
    return AudioFeatures(values, frames, float(fps))
