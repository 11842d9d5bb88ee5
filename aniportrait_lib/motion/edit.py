"""Edits on a :class:`~aniportrait_lib.data.Motion`, whatever made it (audio, template, reenactment).

* :func:`scale_expression` - mouth/lip strength and expression strength: scale each vertex's offset
  from the neutral mesh (the reference face's ``mesh_canonical``); the mouth's weight fades out
  smoothly around the lips, so there is no seam.
* :func:`scale_head_motion` - scale the head rotations and translations (relative to the reference,
  so 0 = the reference's own pose), or freeze the head at the reference pose.
* :func:`smooth_meshes` - centred moving average of the meshes over time.
* :func:`shift_motion`, :func:`trim_motion` - move the motion in time by whole frames (audio/video
  sync) and cut frames off its ends.
* :func:`plan_blinks`, then :func:`apply_blinks` - natural eye blinks, which
  audio cannot drive: seeded random intervals at a given rate, a raised-cosine closing/opening, the
  upper lid brought onto the lower one along the face's own eye opening.

Every function returns a new Motion and leaves its input untouched. Which vertices are lips and
eyelids comes from the pose-image style the renderer draws (``face/data/pose_image_style.json``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data import NUM_MESH_LANDMARKS, Face, Motion
from ..face import pose_math, renderer

#: the mouth weight fades from 1 on the lips to 0 at this fraction of the mouth width (corner to corner)
MOUTH_FALLOFF = 0.5
#: share of a blink's lid travel done by the lower lid (the upper lid does the rest)
LOWER_LID_SHARE = 0.2
#: an eye opened less than this fraction of the reference's opening counts as already closed
CLOSED_EYE_RATIO = 0.5
#: ``blink_frames`` is given at this frame rate and scaled to the motion's fps
BLINK_REFERENCE_FPS = 30.0
#: the shortest gap between blink starts, as a fraction of the mean gap left after one blink
MIN_GAP_SHARE = 0.25


# ----------------------------------------------------------------------------- face regions


@lru_cache(maxsize=1)
def mouth_indices() -> np.ndarray:
    """Sorted vertex indices of the lips (outer and inner contours) as the renderer draws them."""
    parts = renderer.pose_image_style()["parts"]
    return np.unique([v for p in parts if p["name"].startswith("lips") for edge in p["edges"] for v in edge])


def _eye_loops() -> list[list[tuple[int, int]]]:
    """The edges of each eye contour (a closed loop per eye) as the renderer draws them."""
    parts = renderer.pose_image_style()["parts"]
    return [[tuple(e) for e in p["edges"]] for p in parts if p["name"].startswith("eye_")]


def _walk(edges: list[tuple[int, int]], start: int, first: int, stop: int) -> list[int]:
    """Vertices of a closed loop from ``start`` through its neighbour ``first`` up to ``stop`` (inclusive)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    path = [start, first]
    while path[-1] != stop:
        path.append(next(n for n in neighbours[path[-1]] if n != path[-2]))
    return path


def eyelid_pairs(neutral: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Upper/lower eyelid vertex pairs of each eye, from the eye contours and the neutral mesh.

    Each eye contour is split at its corners (the vertices of least and greatest x) into two lids;
    the one higher up (greater y in the canonical frame) is the upper lid; the interior vertices are
    paired in order from one corner to the other.

    Args:
        neutral: ``(468, 3)`` cm canonical mesh of the reference face.
    Returns:
        per eye, ``(upper, lower)`` int arrays of the same length ``K``.
    """
    pairs = []
    for edges in _eye_loops():
        loop = sorted({v for e in edges for v in e})
        left, right = min(loop, key=lambda v: neutral[v, 0]), max(loop, key=lambda v: neutral[v, 0])
        starts = [b if a == left else a for a, b in edges if left in (a, b)]
        lids = [np.array(_walk(edges, left, s, right)[1:-1]) for s in starts]
        if len(lids) != 2 or len(lids[0]) != len(lids[1]):
            raise ValueError("the eye contours of the pose-image style do not split into two lids of equal length")
        lids.sort(key=lambda lid: -neutral[lid, 1].mean())
        pairs.append((lids[0], lids[1]))
    return pairs


def mouth_weights(neutral: np.ndarray, falloff: float = MOUTH_FALLOFF) -> np.ndarray:
    """Per-vertex weight of the mouth region: 1 on the lips, a raised-cosine fade to 0 around them.

    Args:
        neutral: ``(468, 3)`` cm canonical mesh of the reference face.
        falloff: fade radius as a fraction of the mouth width (distance between the mouth corners,
            the lip vertices of least and greatest x).
    Returns:
        ``(468,)`` float64 weights in [0, 1]; vertices farther than the radius from every lip vertex get 0.
    """
    lips = neutral[mouth_indices()]
    radius = falloff * float(lips[:, 0].max() - lips[:, 0].min())
    distance = np.linalg.norm(neutral[:, None, :] - lips[None, :, :], axis=2).min(axis=1)
    if radius <= 0:
        return (distance == 0).astype(np.float64)
    return np.where(distance < radius, 0.5 * (1.0 + np.cos(np.pi * np.minimum(distance / radius, 1.0))), 0.0)


# ----------------------------------------------------------------------------- checks


def _check_scale(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value}")
    return value


def _check_mesh_points(motion: Motion) -> None:
    points = motion.meshes.shape[1]
    if points != NUM_MESH_LANDMARKS:
        raise ValueError(f"the motion's meshes have {points} points; editing needs MediaPipe's {NUM_MESH_LANDMARKS}-point face mesh")


# ----------------------------------------------------------------------------- expression, head, smoothing


def scale_expression(motion: Motion, face: Face, mouth_strength: float = 1.0, expression_strength: float = 1.0) -> Motion:
    """Scale the meshes' offsets from the neutral mesh (``face.mesh_canonical``).

    Vertex ``v`` gets the factor ``expression_strength * (1 + (mouth_strength - 1) * w_v)`` with
    ``w_v`` = :func:`mouth_weights`: 0 puts the region back to neutral, 1 keeps it, > 1 exaggerates.
    Both 1 give the input meshes exactly.

    Args:
        motion: ``(T, 468, 3)`` meshes (cm); poses and fps are kept.
        face: the reference face the motion was made for.
    """
    _check_mesh_points(motion)
    mouth = _check_scale("mouth_strength", mouth_strength)
    expression = _check_scale("expression_strength", expression_strength)
    neutral = face.mesh_canonical
    factor = expression * (1.0 + (mouth - 1.0) * mouth_weights(neutral))
    offsets = motion.meshes - neutral[None]
    meshes = motion.meshes + offsets * (factor[None, :, None] - 1.0)  # exact identity where the factor is 1
    return Motion(meshes, motion.poses.copy(), motion.fps)


def scale_head_motion(motion: Motion, rotation_scale: float = 1.0, translation_scale: float = 1.0, freeze: bool = False) -> Motion:
    """Scale the head poses about the reference pose (poses are relative to it: all zeros).

    Rotations (euler xyz degrees, as the original's rotation halving) are multiplied by
    ``rotation_scale`` and translations (cm) by ``translation_scale``. ``freeze`` holds the head at
    the reference's own pose on every frame (the pose the reference image shows), whatever the scales.
    """
    rotation = _check_scale("head_rotation_scale", rotation_scale)
    translation = _check_scale("head_translation_scale", translation_scale)
    poses = np.zeros_like(motion.poses)
    if not freeze:
        poses[:, :3] = motion.poses[:, :3] * rotation
        poses[:, 3:] = motion.poses[:, 3:] * translation
    return Motion(motion.meshes.copy(), poses, motion.fps)


def smooth_meshes(motion: Motion, window: int = 1) -> Motion:
    """Centred moving average of the meshes over ``window`` frames (truncated at the ends, even
    windows are one wider, as the pose smoothing); ``window`` 1 keeps the meshes exactly. Poses are kept."""
    if int(window) != window or window < 1:
        raise ValueError(f"mesh_smoothing must be a whole number of frames >= 1, got {window}")
    return Motion(pose_math.smooth_poses(motion.meshes, int(window)), motion.poses.copy(), motion.fps)


def edit_motion(
    face: Face,
    motion: Motion,
    mouth_strength: float = 1.0,
    expression_strength: float = 1.0,
    head_rotation_scale: float = 1.0,
    head_translation_scale: float = 1.0,
    freeze_head: bool = False,
    mesh_smoothing: int = 1,
) -> Motion:
    """:func:`smooth_meshes`, then :func:`scale_expression`, then :func:`scale_head_motion` (the
    first two commute; the defaults give the input back exactly)."""
    smoothed = smooth_meshes(motion, mesh_smoothing)
    scaled = scale_expression(smoothed, face, mouth_strength, expression_strength)
    return scale_head_motion(scaled, head_rotation_scale, head_translation_scale, freeze_head)


# ----------------------------------------------------------------------------- time


def _take(motion: Motion, index: np.ndarray) -> Motion:
    return Motion(motion.meshes[index], motion.poses[index], motion.fps)


def shift_motion(motion: Motion, offset_frames: int, keep_length: bool = True) -> Motion:
    """Move the motion in time by ``offset_frames`` whole frames.

    Positive = later: the first frame is held ``offset_frames`` times before it. Negative = earlier:
    the first ``-offset_frames`` frames are dropped. With ``keep_length`` the result keeps the input's
    frame count (so it stays in step with its audio): a later motion loses frames at the end, an
    earlier one holds its last frame. Without it the motion grows or shrinks by the offset.

    With ``keep_length``, an offset of the whole clip (``|offset| >= num_frames - 1``) would leave
    only held copies of one end frame, a still face; that is refused.
    """
    if int(offset_frames) != offset_frames:
        raise ValueError(f"offset_frames must be a whole number, got {offset_frames}")
    offset, n = int(offset_frames), motion.num_frames
    if keep_length and offset != 0 and n > 1 and abs(offset) >= n - 1:
        end = "first" if offset > 0 else "last"
        allowed = "0" if n == 2 else f"from {-(n - 2)} to {n - 2}"
        raise ValueError(f"offset_frames={offset} with keep_length on shifts all movement out of the {n}-frame "
                         f"motion, so every frame would be a held copy of its {end} frame (a still face); "
                         f"use offset_frames {allowed}, or turn keep_length off")
    if not keep_length and offset <= -n:
        raise ValueError(f"offset_frames={offset} drops all {n} frames of the motion")
    length = n if keep_length else n + offset
    index = np.clip(np.arange(length) - offset, 0, n - 1)
    return _take(motion, index)


def trim_motion(motion: Motion, start: int = 0, end: int = 0) -> Motion:
    """Drop ``start`` frames from the beginning and ``end`` frames from the end."""
    if int(start) != start or int(end) != end or start < 0 or end < 0:
        raise ValueError(f"trim_start and trim_end must be whole numbers of frames >= 0, got {start} and {end}")
    n = motion.num_frames
    if start + end >= n:
        raise ValueError(f"trim_start={start} and trim_end={end} remove all {n} frames of the motion")
    return _take(motion, np.arange(int(start), n - int(end)))


def keyframe_indices(num_frames: int, every: int) -> np.ndarray:
    """Frames kept by :func:`keyframes`: ``0, k, 2k, ...`` up to the first index >= the last frame, clamped to it.

    Interpolating the ``m`` kept frames with ``k - 1`` new frames between neighbours gives ``(m - 1) * k + 1``
    frames: at least ``num_frames`` and fewer than ``num_frames + k``.
    """
    if int(every) != every or every < 1:
        raise ValueError(f"every must be a whole number of frames >= 1, got {every}")
    k, n = int(every), int(num_frames)
    steps = -(-(n - 1) // k)  # ceil((n - 1) / k): the last kept frame reaches (or passes) the last frame
    return np.minimum(np.arange(steps + 1) * k, n - 1)


def keyframes(motion: Motion, every: int) -> Motion:
    """Every ``every``-th frame of ``motion`` (at ``fps / every``) for the original's acceleration (``-acc``):
    the video model animates these frames only and a frame-interpolation model fills in ``every - 1`` frames
    between neighbours, back to the full frame rate.

    Unlike the original (``poses[::k]``, whose interpolated video ends up to ``k - 1`` frames short of the audio)
    the last frame is always kept, so the interpolated video covers the whole audio.
    """
    index = keyframe_indices(motion.num_frames, every)
    return Motion(motion.meshes[index], motion.poses[index], motion.fps / int(every))


# ----------------------------------------------------------------------------- blinks


@dataclass
class BlinkPlan:
    """Where blinks go: ``starts`` first frame of each blink, ``length`` frames per blink, ``skipped``
    how many drawn blinks were left out because an eye is already closed there in the motion."""

    starts: np.ndarray
    length: int
    skipped: int


def blink_length(blink_frames: float, fps: float) -> int:
    """Frames per blink at ``fps`` for ``blink_frames`` given at 30 fps (at least 1)."""
    if not np.isfinite(blink_frames) or blink_frames < 1:
        raise ValueError(f"blink_frames must be >= 1, got {blink_frames}")
    return max(1, int(round(blink_frames * fps / BLINK_REFERENCE_FPS)))


def blink_profile(length: int) -> np.ndarray:
    """``(length,)`` eyelid closure in [0, 1] over one blink: a raised cosine that is fully closed (1)
    on the middle frame (the two middle frames for even lengths) and 0 one frame before and after."""
    j = np.arange(length)
    distance = np.maximum(0.0, np.abs(j - (length - 1) / 2.0) - 0.5)
    return 0.5 * (1.0 + np.cos(2.0 * np.pi * distance / length))


def blink_schedule(num_frames: int, fps: float, blinks_per_minute: float, length: int, seed: int) -> np.ndarray:
    """Start frames of seeded random blinks over ``num_frames`` frames.

    The gaps between starts are a minimum gap plus an exponential draw, with a mean of
    ``60 * fps / blinks_per_minute`` frames; the minimum gap is the blink itself plus
    ``MIN_GAP_SHARE`` of the rest of the mean gap, so blinks never overlap. The first start is
    uniform in the first mean gap. Same seed, same starts.

    Returns:
        ``(B,)`` int64 start frames in ``[0, num_frames)``, increasing.
    """
    rate = float(blinks_per_minute)
    if not np.isfinite(rate) or rate < 0:
        raise ValueError(f"blinks_per_minute must be a number >= 0, got {blinks_per_minute}")
    if rate == 0:
        return np.zeros(0, dtype=np.int64)
    mean_gap = 60.0 * fps / rate
    if mean_gap <= length:
        raise ValueError(f"{rate:g} blinks per minute of {length} frames each at {fps:g} fps leave no open-eye "
                         f"time between blinks; lower blinks_per_minute or blink_frames")
    min_gap = length + MIN_GAP_SHARE * (mean_gap - length)
    rng = np.random.default_rng(int(seed))
    starts, t = [], rng.uniform(0.0, mean_gap)
    while t < num_frames:
        starts.append(int(t))
        t += min_gap + rng.exponential(mean_gap - min_gap)
    return np.array(starts, dtype=np.int64)


def eye_openness(meshes: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """``(T, eyes)`` each eye's mean lid distance per frame as a fraction of the neutral mesh's."""
    ratios = []
    for upper, lower in eyelid_pairs(neutral):
        gap = np.linalg.norm(meshes[:, upper] - meshes[:, lower], axis=2).mean(axis=1)
        ratios.append(gap / max(float(np.linalg.norm(neutral[upper] - neutral[lower], axis=1).mean()), 1e-9))
    return np.stack(ratios, axis=1)


def plan_blinks(face: Face, motion: Motion, blinks_per_minute: float = 15.0, blink_frames: float = 6.0, seed: int = 0) -> BlinkPlan:
    """Draw blink starts (:func:`blink_schedule`) and leave out those during which an eye of the
    motion is already closed (opened less than ``CLOSED_EYE_RATIO`` of the reference's opening)."""
    _check_mesh_points(motion)
    length = blink_length(blink_frames, motion.fps)
    starts = blink_schedule(motion.num_frames, motion.fps, blinks_per_minute, length, seed)
    closed = (eye_openness(motion.meshes, face.mesh_canonical) < CLOSED_EYE_RATIO).any(axis=1)
    keep = np.array([not closed[s:s + length].any() for s in starts], dtype=bool)
    return BlinkPlan(starts[keep], length, int((~keep).sum()))


def closure_curve(num_frames: int, plan: BlinkPlan, strength: float = 1.0) -> np.ndarray:
    """``(num_frames,)`` eyelid closure in [0, strength]: the blink profile at each planned start
    (a blink running past the last frame is cut there)."""
    curve = np.zeros(num_frames)
    profile = blink_profile(plan.length) * strength
    for s in plan.starts:
        end = min(num_frames, s + plan.length)
        curve[s:end] = np.maximum(curve[s:end], profile[: end - s])
    return curve


def apply_blinks(face: Face, motion: Motion, plan: BlinkPlan, strength: float = 1.0) -> Motion:
    """Close the eyelids along ``plan``: with closure ``c`` on a frame, each upper-lid vertex moves
    ``c * (1 - LOWER_LID_SHARE)`` of the way to its lower-lid partner and the lower one
    ``c * LOWER_LID_SHARE`` of the way up, so the lid gap becomes ``(1 - c)`` times the frame's own
    (fully shut at ``c = 1``); frames outside blinks are unchanged. ``strength`` in [0, 1] scales ``c``."""
    _check_mesh_points(motion)
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"blink strength must be from 0 to 1, got {strength}")
    closure = closure_curve(motion.num_frames, plan, strength)[:, None, None]
    meshes = motion.meshes.copy()
    for upper, lower in eyelid_pairs(face.mesh_canonical):
        opening = motion.meshes[:, upper] - motion.meshes[:, lower]  # (T, K, 3) lower -> upper lid
        meshes[:, upper] -= closure * (1.0 - LOWER_LID_SHARE) * opening
        meshes[:, lower] += closure * LOWER_LID_SHARE * opening
    return Motion(meshes, motion.poses.copy(), motion.fps)
