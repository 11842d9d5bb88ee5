"""Streaming decode to video: latents are decoded a chunk of frames at a time and written straight into
a video file (PyAV) with the audio, so a long clip never exists as one float32 pixel batch in RAM.

No ComfyUI import here: the decoder is any callable ``latents (n, 4, h, w) -> pixels (n, H, W, 3)`` float
0..1 (core ``VAE.decode``), progress is the library's ``progress(done, total)`` callback (a cancel point
when the host raises from it), and audio is a ``(channels, samples)`` float waveform with its rate.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .. import imaging

#: sample rates the AAC encoder takes; other rates are resampled to 48 kHz
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AUDIO_FALLBACK_RATE = 48000

#: the quality presets a node offers
QUALITIES = ("h264", "lossless")

#: most frames one chunk may hold when chunk size is automatic
MAX_AUTO_CHUNK = 64


@dataclass(frozen=True)
class Codec:
    """What PyAV writes: encoder ``name``, its pixel format, encoder options and the file extension."""

    name: str
    pix_fmt: str
    options: dict
    extension: str
    label: str


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def pick_codec(quality: str = "h264", crf: int = 19) -> Codec:
    """The encoder for ``quality``, falling back to what this PyAV build has.

    ``h264``: libx264 (yuv420p, ``crf``) in mp4, else FFmpeg's ``mpeg4`` (mp4, quality from ``crf``).
    ``lossless``: libx264rgb with crf 0 (RGB, bit exact) in mp4, else ``ffv1`` in mkv.
    """
    crf = int(crf)
    if quality == "lossless":
        if _has_encoder("libx264rgb"):
            return Codec("libx264rgb", "rgb24", {"crf": "0", "preset": "veryfast"}, "mp4",
                         "H.264 RGB lossless (libx264rgb, crf 0)")
        if _has_encoder("ffv1"):
            return Codec("ffv1", "yuv444p", {}, "mkv", "FFV1 (lossless after 4:4:4 conversion, mkv)")
        raise ValueError("this PyAV build has no lossless video encoder (libx264rgb or ffv1); use quality 'h264'.")
    if quality != "h264":
        raise ValueError(f"unknown quality '{quality}'; one of {', '.join(QUALITIES)}.")
    for name in ("libx264", "h264"):
        if _has_encoder(name):
            return Codec(name, "yuv420p", {"crf": str(crf), "preset": "medium"}, "mp4", f"H.264 yuv420p (libx264, crf {crf})")
    if _has_encoder("mpeg4"):
        qscale = max(2, min(31, round(crf / 51 * 29) + 2))  # crf 0..51 -> MPEG-4 qscale 2..31
        return Codec("mpeg4", "yuv420p", {"qscale": str(qscale)}, "mp4",
                     f"MPEG-4 part 2 (this PyAV has no H.264 encoder; qscale {qscale})")
    raise ValueError("this PyAV build has neither an H.264 (libx264) nor an MPEG-4 encoder.")


def frame_rate(fps: float) -> Fraction:
    """``fps`` as the Fraction core writes (milli-frame precision)."""
    if not fps > 0:
        raise ValueError(f"fps must be positive (got {fps}).")
    return Fraction(round(fps * 1000), 1000)


# ----------------------------------------------------------------------------- chunking and memory


def plan_chunks(num_frames: int, chunk_frames: int) -> list[range]:
    """Consecutive frame ranges of at most ``chunk_frames`` frames covering ``0..num_frames``."""
    if num_frames < 1:
        raise ValueError("there are no frames to decode (the latent batch is empty).")
    chunk_frames = max(1, int(chunk_frames))
    return [range(s, min(s + chunk_frames, num_frames)) for s in range(0, num_frames, chunk_frames)]


def pixel_bytes_per_frame(width: int, height: int) -> int:
    """float32 RGB pixels of one decoded frame (what core VAE Decode keeps for EVERY frame)."""
    return int(width) * int(height) * 3 * 4


def streaming_bytes_per_frame(width: int, height: int) -> int:
    """Host memory one frame of a chunk holds while streaming: its float32 pixels plus uint8 and codec copies."""
    return pixel_bytes_per_frame(width, height) + 3 * int(width) * int(height) * 3


def auto_chunk_frames(num_frames: int, width: int, height: int, free_ram: int, decode_bytes_per_frame: int,
                      free_vram: Optional[int] = None, max_chunk: int = MAX_AUTO_CHUNK) -> int:
    """Frames per chunk that fit half the free memory: decode intermediates (``decode_bytes_per_frame``,
    on the GPU when ``free_vram`` is given, else in RAM) and the chunk's pixels in RAM."""
    ram_per_frame = streaming_bytes_per_frame(width, height) + (0 if free_vram is not None else decode_bytes_per_frame)
    fit = int(0.5 * free_ram // max(ram_per_frame, 1))
    if free_vram is not None:
        fit = min(fit, int(0.5 * free_vram // max(decode_bytes_per_frame, 1)))
    return int(max(1, min(fit, max_chunk, num_frames)))


# ----------------------------------------------------------------------------- writing


def prepare_audio(waveform: torch.Tensor | np.ndarray, num_frames: int, fps: Fraction, sample_rate: int) -> np.ndarray:
    """``(B, C, S)`` or ``(C, S)`` waveform -> float32 ``(C', S')``: the first batch item, at most 2 channels
    (more are mixed down to stereo), cut to the video's length like core CreateVideo."""
    wav = waveform.detach().float().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform, np.float32)
    if wav.ndim == 3:
        wav = wav[0]
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2 or wav.shape[0] < 1:
        raise ValueError(f"the audio waveform has shape {tuple(wav.shape)}; expected (batch, channels, samples).")
    if wav.shape[0] > 2:
        wav = np.stack([wav[0::2].mean(0), wav[1::2].mean(0)])
    keep = math.ceil(sample_rate / fps * num_frames)
    return np.ascontiguousarray(wav[:, :keep], dtype=np.float32)


class VideoWriter:
    """An open video file: ``write(uint8 (n, H, W, 3))`` per chunk, then ``close()``.

    The audio (when given) is written alongside in pieces matching the video written so far. On an
    exception inside ``with``, the container is closed and the file removed.
    """

    def __init__(self, path: str, width: int, height: int, fps: float, codec: Codec,
                 audio: Optional[np.ndarray] = None, sample_rate: int = 0):
        import av

        self.path, self.width, self.height, self.codec = path, int(width), int(height), codec
        self.rate = frame_rate(fps)
        self.frames = 0
        self._container = av.open(path, mode="w")
        try:
            stream = self._container.add_stream(codec.name, rate=self.rate, options=dict(codec.options))
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, codec.pix_fmt
            self._video = stream
            self._audio = None
            self._wav = None
            if audio is not None and audio.shape[-1] > 0:
                rate = int(sample_rate) if int(sample_rate) in AAC_RATES else AUDIO_FALLBACK_RATE
                layout = "mono" if audio.shape[0] == 1 else "stereo"
                self._audio = self._container.add_stream("aac", rate=rate, layout=layout)
                self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                self._wav, self._in_rate, self._layout, self._audio_done = audio, int(sample_rate), layout, 0
        except BaseException:
            self._abort()
            raise

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def write(self, frames: np.ndarray) -> None:
        import av

        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frames must be uint8 (n, {self.height}, {self.width}, 3), got {frames.dtype} {frames.shape}")
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if self.codec.pix_fmt != "rgb24":
                frame = frame.reformat(format=self.codec.pix_fmt)
            frame.pts = self.frames
            frame.time_base = 1 / self.rate
            self._container.mux(self._video.encode(frame))
            self.frames += 1
        self._write_audio_until(math.ceil(self._in_rate / self.rate * self.frames) if self._audio else 0)

    def _write_audio_until(self, end: int) -> None:
        import av

        if self._audio is None:
            return
        end = min(end, self._wav.shape[1])
        step = max(self._in_rate, 1)  # one second per AudioFrame
        while self._audio_done < end:
            piece = self._wav[:, self._audio_done:min(end, self._audio_done + step)]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout=self._layout)
            frame.sample_rate = self._in_rate
            frame.pts = self._audio_done
            frame.time_base = Fraction(1, self._in_rate)
            for out in self._resampler.resample(frame):
                self._container.mux(self._audio.encode(out))
            self._audio_done += piece.shape[1]

    def close(self) -> None:
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._write_audio_until(self._wav.shape[1])
            for out in self._resampler.resample(None):
                self._container.mux(self._audio.encode(out))
            self._container.mux(self._audio.encode(None))
        self._container.close()

    def _abort(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass
        try:
            os.remove(self.path)
        except OSError:
            pass


def video_writer(path: str, width: int, height: int, fps: float, codec: Codec, num_frames: int,
                 audio: Optional[np.ndarray] = None, sample_rate: int = 0) -> VideoWriter:
    """An open writer for ``num_frames`` frames of ``width x height`` at ``fps``, the audio cut to their duration."""
    if (width % 2 or height % 2) and codec.pix_fmt != "rgb24":
        raise ValueError(f"the video size {width}x{height} must be even for H.264 yuv420p; pick quality lossless "
                         "or crop the source to an even size")
    wav = prepare_audio(audio, num_frames, frame_rate(fps), sample_rate) if audio is not None else None
    return VideoWriter(path, width, height, fps, codec, wav, sample_rate)


def write_chunks(writer: VideoWriter, num_frames: int, chunk_frames: int, render: Callable[[int, int], np.ndarray],
                 progress: Optional[Callable[[int, int], None]] = None) -> None:
    """Write ``render(start, stop)`` (uint8 ``(n, H, W, 3)``) for each chunk of ``chunk_frames`` frames."""
    chunks = plan_chunks(num_frames, chunk_frames)
    for i, chunk in enumerate(chunks):
        writer.write(render(chunk.start, chunk.stop))
        if progress is not None:
            progress(i + 1, len(chunks))


@dataclass
class EncodeResult:
    path: str
    frames: int
    width: int
    height: int
    has_audio: bool
    codec: Codec
    chunk_frames: int


    def summary(self, fps: float) -> str:
        """One line for the node's text."""
        return (f"{self.frames} frames {self.width}x{self.height} at {fps:g} fps, {'with' if self.has_audio else 'without'} "
                f"audio; {self.codec.label}; decoded {self.chunk_frames} frames at a time.")


def frame_latents(latents: torch.Tensor) -> torch.Tensor:
    """A video's latents one per frame: ``(frames, channels, h, w)`` as given, or a video latent
    ``(1, channels, frames, h, w)`` (the AniPortrait MODEL's, after core KSampler) as a view in that layout."""
    if latents.ndim == 5 and latents.shape[0] == 1:
        return latents[0].transpose(0, 1)
    return latents


def check_latents(latents: torch.Tensor, vae_channels: int) -> None:
    """One latent per frame ``(frames, channels, h, w)`` with the VAE's channel count, or a clear error."""
    if latents.ndim != 4:
        raise ValueError(f"the latents have shape {tuple(latents.shape)}; this node takes one video latent "
                         "(1, 4, frames, h, w) as AniPortrait Sampler and KSampler output with the AniPortrait MODEL, "
                         "or one latent per frame (frames, 4, h, w).")
    if vae_channels != latents.shape[1]:
        raise ValueError(f"the latents have {latents.shape[1]} channels but the VAE takes {vae_channels}: "
                         "use the VAE given to the sampler.")


def decode_to_video(
    latents: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    path: str,
    fps: float,
    chunk_frames: int,
    codec: Codec,
    audio: Optional[np.ndarray] = None,
    sample_rate: int = 0,
    scale: int = 8,
    progress: Optional[Callable[..., None]] = None,
) -> EncodeResult:
    """Decode ``latents`` ``(F, C, h, w)`` ``chunk_frames`` at a time and write them to ``path``.

    ``decode`` gets at most ``chunk_frames`` latents per call and must return ``(n, h*scale, w*scale, 3)``
    float pixels 0..1. The file is removed when anything fails (a cancel raised from ``progress`` too).
    """
    if latents.ndim != 4:
        raise ValueError(f"the latents have shape {tuple(latents.shape)}; expected (frames, channels, h, w) "
                         "as the AniPortrait sampler outputs.")
    num, _, h, w = latents.shape
    chunks = plan_chunks(num, chunk_frames)
    width, height = w * scale, h * scale
    if width % 2 or height % 2:
        raise ValueError(f"the video size {width}x{height} must be even for yuv420p video.")
    rate = frame_rate(fps)
    wav = prepare_audio(audio, num, rate, sample_rate) if audio is not None else None
    with VideoWriter(path, width, height, fps, codec, wav, sample_rate) as writer:
        if progress is not None:
            progress(0, len(chunks))
        for i, chunk in enumerate(chunks):
            pixels = decode(latents[chunk.start:chunk.stop])
            if tuple(pixels.shape) != (len(chunk), height, width, 3):
                raise ValueError(f"the VAE decoded {tuple(latents[chunk.start:chunk.stop].shape)} latents to "
                                 f"{tuple(pixels.shape)}, not ({len(chunk)}, {height}, {width}, 3): is it an SD1.5 VAE?")
            frames = imaging.frames_to_uint8(pixels, "decoded frames")
            del pixels
            writer.write(frames)
            del frames
            if progress is not None:
                progress(i + 1, len(chunks))
        has_audio = writer.has_audio
    return EncodeResult(path, num, width, height, has_audio, codec, max(len(c) for c in chunks))


__all__: Sequence[str] = ("Codec", "pick_codec", "plan_chunks", "auto_chunk_frames", "decode_to_video", "VideoWriter",
                          "video_writer", "write_chunks",
                          "prepare_audio", "pixel_bytes_per_frame", "streaming_bytes_per_frame", "frame_rate")
