"""Motion editing: expression/mouth strength, head-motion scale, smoothing, shift/trim and blinks."""
from __future__ import annotations

import numpy as np
import pytest

from aniportrait_lib.motion import edit as motion_edit
from aniportrait_lib.data import Motion
from aniportrait_lib.face.landmarker import FaceLandmarker
from aniportrait_lib.motion.build import project_motion

FOREHEAD = 10  # MediaPipe's top-of-forehead vertex


@pytest.fixture(scope="module")
def face(face_landmarker_path):
    from skimage import data

    with FaceLandmarker(face_landmarker_path) as lm:
        return lm.analyze(np.ascontiguousarray(data.astronaut()[10:220, 120:330]))


def _motion(face, frames: int = 40, seed: int = 0, fps: float = 30.0) -> Motion:
    """The reference mesh plus smooth random offsets (~0.3 cm) and random head poses."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, frames)[:, None, None]
    offsets = 0.3 * np.sin(t * rng.uniform(0.5, 3, (1, 468, 3)) + rng.uniform(0, 6, (1, 468, 3)))
    poses = np.concatenate([rng.normal(0, 5, (frames, 3)), rng.normal(0, 1, (frames, 3))], axis=1)
    return Motion(face.mesh_canonical[None] + offsets, poses, fps)


def _copy(motion: Motion) -> Motion:
    return Motion(motion.meshes.copy(), motion.poses.copy(), motion.fps)


def _unchanged(a: Motion, b: Motion) -> bool:
    return np.array_equal(a.meshes, b.meshes) and np.array_equal(a.poses, b.poses) and a.fps == b.fps


# ----------------------------------------------------------------------------- regions


def test_regions_come_from_the_renderer_style(face):
    lips = motion_edit.mouth_indices()
    assert len(lips) == 40 and {0, 13, 14, 17, 61, 291}.issubset(lips)
    pairs = motion_edit.eyelid_pairs(face.mesh_canonical)
    assert len(pairs) == 2
    for upper, lower in pairs:
        assert len(upper) == len(lower) == 7
        assert np.all(face.mesh_canonical[upper, 1] > face.mesh_canonical[lower, 1])  # upper lid above (y up)
    assert {(159, 145), (386, 374)} <= {(u, l) for up, lo in pairs for u, l in zip(up, lo)}  # mid-lid pairs


def test_mouth_weights_fade_without_a_seam(face):
    w = motion_edit.mouth_weights(face.mesh_canonical)
    assert np.all(w[motion_edit.mouth_indices()] == 1.0)
    assert w[FOREHEAD] == 0.0 and np.all(w[np.concatenate(motion_edit.eyelid_pairs(face.mesh_canonical)[0])] == 0.0)
    between = (w > 0.05) & (w < 0.95)
    assert between.sum() >= 50  # a soft ring around the lips, not a hard edge
    assert np.all((w >= 0) & (w <= 1))


# ----------------------------------------------------------------------------- expression and mouth


def test_mouth_strength_zero_gives_neutral_lips_and_keeps_far_vertices(face):
    motion = _motion(face)
    before = _copy(motion)
    out = motion_edit.scale_expression(motion, face, mouth_strength=0.0)
    lips = motion_edit.mouth_indices()
    np.testing.assert_allclose(out.meshes[:, lips], np.broadcast_to(face.mesh_canonical[lips], out.meshes[:, lips].shape), atol=1e-12)
    far = motion_edit.mouth_weights(face.mesh_canonical) == 0
    assert far[FOREHEAD] and np.array_equal(out.meshes[:, far], motion.meshes[:, far])
    assert np.array_equal(out.poses, motion.poses) and _unchanged(motion, before)


def test_mouth_strength_two_doubles_lip_offsets(face):
    motion = _motion(face)
    out = motion_edit.scale_expression(motion, face, mouth_strength=2.0)
    lips = motion_edit.mouth_indices()
    np.testing.assert_allclose(out.meshes[:, lips] - face.mesh_canonical[lips], 2 * (motion.meshes[:, lips] - face.mesh_canonical[lips]), atol=1e-12)


def test_expression_strength(face):
    motion = _motion(face)
    assert _unchanged(motion_edit.scale_expression(motion, face, 1.0, 1.0), motion)  # exact identity
    neutral = motion_edit.scale_expression(motion, face, expression_strength=0.0)
    np.testing.assert_allclose(neutral.meshes, np.broadcast_to(face.mesh_canonical, motion.meshes.shape), atol=1e-12)
    half = motion_edit.scale_expression(motion, face, expression_strength=0.5)
    np.testing.assert_allclose(half.meshes - face.mesh_canonical, 0.5 * (motion.meshes - face.mesh_canonical), atol=1e-12)


# ----------------------------------------------------------------------------- head and smoothing


def test_head_scales_are_exact_and_freeze_holds_the_reference_pose(face):
    motion = _motion(face)
    before = _copy(motion)
    out = motion_edit.scale_head_motion(motion, rotation_scale=0.5, translation_scale=2.0)
    assert np.array_equal(out.poses[:, :3], motion.poses[:, :3] * 0.5)
    assert np.array_equal(out.poses[:, 3:], motion.poses[:, 3:] * 2.0)
    assert np.array_equal(out.meshes, motion.meshes) and out.fps == motion.fps
    assert _unchanged(motion_edit.scale_head_motion(motion), motion)
    frozen = motion_edit.scale_head_motion(motion, 2.0, 2.0, freeze=True)
    assert np.array_equal(frozen.poses, np.zeros_like(motion.poses)) and np.array_equal(frozen.meshes, motion.meshes)
    assert _unchanged(motion, before)


def test_mesh_smoothing(face):
    motion = _motion(face, frames=60)
    motion.meshes[1::2] += 0.2  # frame-to-frame jitter
    assert _unchanged(motion_edit.smooth_meshes(motion, 1), motion)
    out = motion_edit.smooth_meshes(motion, 5)
    jitter = lambda m: np.var(np.diff(m.meshes, axis=0))  # noqa: E731
    assert jitter(out) < 0.2 * jitter(motion)
    np.testing.assert_allclose(out.meshes[10], motion.meshes[8:13].mean(axis=0), atol=1e-12)
    assert np.array_equal(out.poses, motion.poses)


def test_edit_motion_defaults_are_the_identity(face):
    motion = _motion(face)
    assert _unchanged(motion_edit.edit_motion(face, motion), motion)
    out = motion_edit.edit_motion(face, motion, mouth_strength=0.0, freeze_head=True, mesh_smoothing=3)
    lips = motion_edit.mouth_indices()
    np.testing.assert_allclose(out.meshes[:, lips], np.broadcast_to(face.mesh_canonical[lips], out.meshes[:, lips].shape), atol=1e-12)
    assert not out.poses.any()


# ----------------------------------------------------------------------------- time


def test_shift_keeps_length_and_holds_the_ends(face):
    motion = _motion(face, frames=10)
    later = motion_edit.shift_motion(motion, 3)
    assert later.num_frames == 10
    assert np.array_equal(later.meshes[:4], np.broadcast_to(motion.meshes[0], (4, 468, 3)))
    assert np.array_equal(later.meshes[3:], motion.meshes[:7]) and np.array_equal(later.poses[3:], motion.poses[:7])
    earlier = motion_edit.shift_motion(motion, -3)
    assert np.array_equal(earlier.meshes[:7], motion.meshes[3:]) and np.array_equal(earlier.meshes[7:], np.broadcast_to(motion.meshes[9], (3, 468, 3)))
    assert _unchanged(motion_edit.shift_motion(motion, 0), motion)


def test_shift_by_up_to_two_frames_short_of_the_clip_still_moves(face):
    motion = _motion(face, frames=10)
    later = motion_edit.shift_motion(motion, 8)  # the largest offset that keep_length allows: frame 1 at the end
    assert np.array_equal(later.meshes[9], motion.meshes[1])
    earlier = motion_edit.shift_motion(motion, -8)
    assert np.array_equal(earlier.meshes[0], motion.meshes[8]) and np.array_equal(earlier.meshes[1], motion.meshes[9])
    single = Motion(motion.meshes[:1], motion.poses[:1], motion.fps)  # one frame is still either way
    assert _unchanged(motion_edit.shift_motion(single, 5), single)


def test_shift_without_keeping_length_grows_or_shrinks(face):
    motion = _motion(face, frames=10)
    later = motion_edit.shift_motion(motion, 3, keep_length=False)
    assert later.num_frames == 13 and np.array_equal(later.poses[3:], motion.poses) and np.array_equal(later.poses[:3], np.broadcast_to(motion.poses[0], (3, 6)))
    earlier = motion_edit.shift_motion(motion, -4, keep_length=False)
    assert earlier.num_frames == 6 and np.array_equal(earlier.meshes, motion.meshes[4:])


def test_trim(face):
    motion = _motion(face, frames=10)
    out = motion_edit.trim_motion(motion, 2, 3)
    assert out.num_frames == 5 and np.array_equal(out.meshes, motion.meshes[2:7]) and np.array_equal(out.poses, motion.poses[2:7])
    assert out.fps == motion.fps and _unchanged(motion_edit.trim_motion(motion), motion)


@pytest.mark.parametrize("every", [1, 2, 3, 5])
def test_keyframes_cover_the_whole_motion_once_interpolated(face, every):
    for frames in (1, 2, 3, 10, 11, 12, 40):
        index = motion_edit.keyframe_indices(frames, every)
        m = len(index)
        assert index[0] == 0 and index[-1] == frames - 1
        assert np.array_equal(index[:-1], np.arange(m - 1) * every), "keyframe j is frame j * every"
        interpolated = (m - 1) * every + 1  # what a x`every` interpolation node gives back
        assert frames <= interpolated < frames + every
    motion = _motion(face, frames=11)
    kept = motion_edit.keyframes(motion, every)
    index = motion_edit.keyframe_indices(11, every)
    assert np.array_equal(kept.meshes, motion.meshes[index]) and np.array_equal(kept.poses, motion.poses[index])
    assert kept.fps == motion.fps / every


# ----------------------------------------------------------------------------- blinks


def _lid_gaps(face, motion: Motion) -> np.ndarray:
    """``(T, eyes)`` mean 2D distance (px, 512x512) between paired upper and lower lid landmarks."""
    points = project_motion(motion, face, 512, 512).points
    return np.stack([np.linalg.norm(points[:, u] - points[:, l], axis=2).mean(axis=1)
                     for u, l in motion_edit.eyelid_pairs(face.mesh_canonical)], axis=1)


def test_blinks_shut_the_eyes_at_their_centres_and_leave_other_frames(face):
    motion = _motion(face, frames=600)  # 20 s
    motion.meshes[:] = face.mesh_canonical + 0.1 * (motion.meshes - face.mesh_canonical)  # audio-like: small eye motion
    before = _copy(motion)
    plan = motion_edit.plan_blinks(face, motion, blinks_per_minute=15, blink_frames=6, seed=3)
    out = motion_edit.apply_blinks(face, motion, plan)
    assert plan.length == 6 and plan.skipped == 0 and len(plan.starts) >= 2
    gaps, new_gaps = _lid_gaps(face, motion), _lid_gaps(face, out)
    assert gaps.min() > 5  # open eyes: several pixels between the lids
    centres = np.concatenate([plan.starts + 2, plan.starts + 3])
    centres = centres[centres < motion.num_frames]
    assert new_gaps[centres].max() < 0.05  # shut
    outside = np.ones(motion.num_frames, dtype=bool)
    for s in plan.starts:
        outside[s:s + plan.length] = False
    assert np.array_equal(out.meshes[outside], motion.meshes[outside]) and np.array_equal(out.poses, motion.poses)
    assert np.all(new_gaps[~outside] < gaps[~outside])
    assert _unchanged(motion, before)


def test_blink_profile_is_a_smooth_closing_and_opening():
    np.testing.assert_allclose(motion_edit.blink_profile(6), [0.25, 0.75, 1, 1, 0.75, 0.25])
    assert motion_edit.blink_profile(5)[2] == 1.0 and motion_edit.blink_profile(1).tolist() == [1.0]
    assert motion_edit.blink_length(6, 30) == 6 and motion_edit.blink_length(6, 60) == 12 and motion_edit.blink_length(6, 25) == 5


def test_blink_count_follows_the_rate_and_the_seed():
    hour = 30 * 3600
    for rate in (10, 15, 30):
        starts = motion_edit.blink_schedule(hour, 30.0, rate, 6, seed=0)
        assert abs(len(starts) - rate * 60) <= 0.1 * rate * 60
        assert np.diff(starts).min() >= 6 and starts.min() >= 0 and starts.max() < hour
    a = motion_edit.blink_schedule(900, 30.0, 15, 6, seed=7)
    assert np.array_equal(a, motion_edit.blink_schedule(900, 30.0, 15, 6, seed=7))
    assert not np.array_equal(a, motion_edit.blink_schedule(900, 30.0, 15, 6, seed=8))
    assert motion_edit.blink_schedule(900, 30.0, 0, 6, seed=0).size == 0


def test_blinks_in_a_motion_match_the_rate_and_seed(face):
    motion = _motion(face, frames=1800)  # 60 s at 15 per minute
    counts = [len(motion_edit.plan_blinks(face, motion, 15, 6, seed).starts) for seed in range(5)]
    assert 12 <= np.mean(counts) <= 18
    a, b = (motion_edit.apply_blinks(face, motion, motion_edit.plan_blinks(face, motion, 15, 6, seed=1)) for _ in range(2))
    assert np.array_equal(a.meshes, b.meshes)


def test_no_blink_where_the_eyes_are_already_closed(face):
    motion = _motion(face, frames=300)
    for upper, lower in motion_edit.eyelid_pairs(face.mesh_canonical):
        motion.meshes[:150, upper] = motion.meshes[:150, lower]  # eyes shut for the first 5 s
    plan = motion_edit.plan_blinks(face, motion, blinks_per_minute=40, blink_frames=6, seed=0)
    assert plan.skipped >= 1 and len(plan.starts) >= 1 and plan.starts.min() >= 150
    out = motion_edit.apply_blinks(face, motion, plan)
    assert np.array_equal(out.meshes[:150], motion.meshes[:150])


def test_blink_strength_scales_the_closure(face):
    motion = _motion(face, frames=300)
    plan = motion_edit.plan_blinks(face, motion, 30, 6, seed=2)
    half = motion_edit.apply_blinks(face, motion, plan, strength=0.5)
    upper, lower = motion_edit.eyelid_pairs(face.mesh_canonical)[0]
    centre = plan.starts[0] + 2
    np.testing.assert_allclose(half.meshes[centre, upper] - half.meshes[centre, lower],
                               0.5 * (motion.meshes[centre, upper] - motion.meshes[centre, lower]), atol=1e-12)
    assert _unchanged(motion_edit.apply_blinks(face, motion, plan, strength=0.0), motion)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call, message", [
    (lambda f, m: motion_edit.scale_expression(m, f, mouth_strength=-1), r"^mouth_strength must be a number >= 0, got -1.0$"),
    (lambda f, m: motion_edit.scale_expression(m, f, expression_strength=float("nan")), r"^expression_strength must be a number >= 0, got nan$"),
    (lambda f, m: motion_edit.scale_head_motion(m, rotation_scale=-0.5), r"^head_rotation_scale must be a number >= 0, got -0.5$"),
    (lambda f, m: motion_edit.smooth_meshes(m, 0), r"^mesh_smoothing must be a whole number of frames >= 1, got 0$"),
    (lambda f, m: motion_edit.shift_motion(m, -10, keep_length=False), r"^offset_frames=-10 drops all 10 frames of the motion$"),
    (lambda f, m: motion_edit.shift_motion(m, 60),
     r"^offset_frames=60 with keep_length on shifts all movement out of the 10-frame motion, so every frame would "
     r"be a held copy of its first frame \(a still face\); use offset_frames from -8 to 8, or turn keep_length off$"),
    (lambda f, m: motion_edit.shift_motion(m, -9),
     r"^offset_frames=-9 with keep_length on shifts all movement out of the 10-frame motion, so every frame would "
     r"be a held copy of its last frame \(a still face\); use offset_frames from -8 to 8, or turn keep_length off$"),
    (lambda f, m: motion_edit.shift_motion(Motion(m.meshes[:2], m.poses[:2], m.fps), 1),
     r"^offset_frames=1 with keep_length on shifts all movement out of the 2-frame motion, .* use offset_frames 0, or turn keep_length off$"),
    (lambda f, m: motion_edit.trim_motion(m, 6, 4), r"^trim_start=6 and trim_end=4 remove all 10 frames of the motion$"),
    (lambda f, m: motion_edit.trim_motion(m, -1, 0), r"^trim_start and trim_end must be whole numbers of frames >= 0, got -1 and 0$"),
    (lambda f, m: motion_edit.keyframes(m, 0), r"^every must be a whole number of frames >= 1, got 0$"),
    (lambda f, m: motion_edit.plan_blinks(f, m, blinks_per_minute=-2), r"^blinks_per_minute must be a number >= 0, got -2$"),
    (lambda f, m: motion_edit.plan_blinks(f, m, blink_frames=0), r"^blink_frames must be >= 1, got 0$"),
    (lambda f, m: motion_edit.plan_blinks(f, m, blinks_per_minute=400, blink_frames=6),
     r"^400 blinks per minute of 6 frames each at 30 fps leave no open-eye time between blinks; lower blinks_per_minute or blink_frames$"),
    (lambda f, m: motion_edit.apply_blinks(f, m, motion_edit.plan_blinks(f, m), strength=1.5), r"^blink strength must be from 0 to 1, got 1.5$"),
    (lambda f, m: motion_edit.scale_expression(Motion(m.meshes[:, :100], m.poses), f),
     r"^the motion's meshes have 100 points; editing needs MediaPipe's 468-point face mesh$"),
])
def test_bad_inputs_get_clear_messages(face, call, message):
    with pytest.raises(ValueError, match=message):
        call(face, _motion(face, frames=10))
