"""Audio inference: audio features -> per-frame mesh offsets (Audio2Mesh) and head poses (Audio2Pose).

Chunking of Audio2Pose follows ``scripts/audio2vid.py`` where the original works and fixes where it
crashes (reference quirks 1 and 2): the normalised clip is cut into 5 s chunks (80000 samples), chunk
k gets 150 frames except the last which gets the rest, and the last two chunks are merged. The
original gave the last chunk ``seq_len % 150`` frames (0 when ``seq_len`` is a multiple of 150,
which lost 150 poses) and indexed ``chunks[-2]`` even for a single chunk (crash at <= 5 s). Here
the last chunk gets ``seq_len - 150 * (k - 1)`` frames, identical to the original whenever it works.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data import AudioFeatures
from ..face import pose_math
from .features import DEFAULT_FPS, SAMPLE_RATE
from .models import Audio2Mesh, Audio2Pose

log = logging.getLogger(__name__)

#: Audio2Pose chunk length of the original (seconds)
CHUNK_SECONDS = 5
#: deterministic default speaking style (the original drew an unseeded random id in 0..99)
DEFAULT_STYLE_ID = 0

Progress = Callable[[int, int], None]


@dataclass
class PoseChunk:
    """One Audio2Pose chunk: samples ``[start, end)`` of the clip decoded to ``num_frames`` poses."""

    start: int
    end: int
    num_frames: int


def plan_pose_chunks(num_samples: int, num_frames: int, fps: float = DEFAULT_FPS) -> list[PoseChunk]:
    """The chunks Audio2Pose decodes; their frame counts always sum to ``num_frames``."""
    if num_frames < 1:
        raise ValueError("the audio is too short to produce a single video frame")
    chunk_samples = int(CHUNK_SECONDS * SAMPLE_RATE)
    chunk_frames = int(round(CHUNK_SECONDS * fps))
    starts = list(range(0, num_samples, chunk_samples))
    chunks = [PoseChunk(s, min(s + chunk_samples, num_samples), chunk_frames) for s in starts]
    chunks[-1].num_frames = num_frames - chunk_frames * (len(chunks) - 1)
    if len(chunks) >= 2:
        last = chunks.pop()
        chunks[-1] = PoseChunk(chunks[-1].start, last.end, chunks[-1].num_frames + last.num_frames)
    if any(c.num_frames < 1 for c in chunks):
        raise ValueError(f"internal error: empty pose chunk for {num_samples} samples / {num_frames} frames")
    return chunks


def _as_input(values: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device).unsqueeze(0)


#: Audio2Mesh encodes clips up to this long in one pass, as the original (seconds; ``inf`` = always)
WHOLE_CLIP_SECONDS = 30.0
#: longer clips: wav2vec2 windows of this length (seconds) ...
WINDOW_SECONDS = 20.0
#: ... overlapping by this much, cross-faded in the overlap (seconds)
OVERLAP_SECONDS = 4.0
#: Audio2Pose chunks decoded together at most (memory of the batched decoder: ~7 MB per chunk, so a
#: long clip's decode stays near 110 MB; 16 chunks = 80 s already amortise the per-step overhead)
MAX_POSE_BATCH = 16


def mesh_window(features: AudioFeatures, whole_clip_seconds: float | None = WHOLE_CLIP_SECONDS,
                window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = OVERLAP_SECONDS) -> tuple[int, int] | None:
    """``(window, overlap)`` in frames for Audio2Mesh, or ``None`` for the whole-clip pass (clips up to
    ``whole_clip_seconds``; ``None``/``inf`` = always whole)."""
    if whole_clip_seconds is None or features.duration <= whole_clip_seconds:
        return None
    window = max(2, int(round(window_seconds * features.fps)))
    overlap = min(window - 1, max(0, int(round(overlap_seconds * features.fps))))
    return window, overlap


@torch.inference_mode()
def predict_mesh_offsets(
    model: Audio2Mesh,
    features: AudioFeatures,
    device: torch.device | str = "cpu",
    whole_clip_seconds: float | None = WHOLE_CLIP_SECONDS,
    window_seconds: float = WINDOW_SECONDS,
    overlap_seconds: float = OVERLAP_SECONDS,
) -> np.ndarray:
    """Per-frame vertex displacements ``(T, 468, 3)`` float32 (cm), to add to the canonical mesh.

    Clips up to ``whole_clip_seconds`` run the original whole-clip pass (identical results); longer
    ones are encoded in cross-faded windows (memory independent of the length, see BENCHMARKS.md for
    the deviation from the whole-clip pass).
    """
    window = mesh_window(features, whole_clip_seconds, window_seconds, overlap_seconds)
    out = model(_as_input(features.input_values, device), features.num_frames, window=window)
    return out[0].float().cpu().numpy().reshape(features.num_frames, -1, 3)


@torch.inference_mode()
def predict_raw_poses(
    model: Audio2Pose,
    features: AudioFeatures,
    style_id: int = DEFAULT_STYLE_ID,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    batched: bool = True,
    max_batch: int = MAX_POSE_BATCH,
) -> list[np.ndarray]:
    """Raw Audio2Pose output per chunk, each ``(T_k, 6)`` float32 (euler degrees + translation).

    ``batched``: decode all chunks as one batch (about ``2 * 150`` steps whatever the length: the chunks
    are independent, as in the original); ``False``: the original chunk-by-chunk order (the reference).
    """
    chunks = plan_pose_chunks(features.input_values.shape[0], features.num_frames, features.fps)
    longest = max(c.num_frames for c in chunks)
    if longest > model.config.max_frames:
        raise ValueError(
            f"at {features.fps:g} fps an Audio2Pose chunk has {longest} frames, more than the model's "
            f"{model.config.max_frames}-frame limit; use fps <= {model.config.max_frames // (2 * CHUNK_SECONDS)}."
        )
    out, done = [], 0
    if not batched:  # the original order: one chunk after the other
        for chunk in chunks:
            values = features.input_values[chunk.start : chunk.end]
            report = None if progress is None else (lambda n, base=done: progress(base + n, features.num_frames))
            poses = model.generate(_as_input(values, device), chunk.num_frames, style_id, on_frame=report)
            out.append(poses[0].float().cpu().numpy())
            done += chunk.num_frames
        return out
    # all chunks decoded as one batch (groups of max_batch; the last, longest chunk in the last group)
    max_batch = max(1, int(max_batch))
    for g in range(0, len(chunks), max_batch):
        group = chunks[g : g + max_batch]
        memories = [model.encode_audio(_as_input(features.input_values[c.start : c.end], device), c.num_frames)[0] for c in group]
        lengths = [c.num_frames for c in group]
        memory = memories[0].new_zeros(len(group), max(lengths), memories[0].shape[-1])
        for b, m in enumerate(memories):
            memory[b, : m.shape[0]] = m
        del memories
        report = None if progress is None else (lambda n, base=done: progress(base + n, features.num_frames))
        poses = model.generate_batched(memory, lengths, style_id, on_step=report).float().cpu().numpy()
        out.extend(poses[b, :n] for b, n in enumerate(lengths))
        done += sum(lengths)
    return out


def predict_poses(
    model: Audio2Pose,
    features: AudioFeatures,
    style_id: int = DEFAULT_STYLE_ID,
    smoothing_window: int = pose_math.SMOOTHING_WINDOW,
    rotation_scale: float = pose_math.ROTATION_SCALE,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    batched: bool = True,
) -> np.ndarray:
    """Head poses ``(T, 6)`` float32 after the original's post-processing (halve rotations, smooth)."""
    raw = predict_raw_poses(model, features, style_id, device, progress, batched)
    return pose_math.postprocess_poses(raw, rotation_scale, smoothing_window)


def check_same_clip(motion_frames: int, features: AudioFeatures) -> None:
    """Audio2Pose gives poses to a motion of the same clip: their frame counts must agree."""
    if motion_frames != features.num_frames:
        raise ValueError(
            f"the motion has {motion_frames} frames but the audio features {features.num_frames}; "
            f"feed both nodes from the same AniPortrait Audio Features node."
        )
