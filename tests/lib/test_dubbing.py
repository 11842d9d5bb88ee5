"""Dubbing maths: the output timeline, the length rules, and head motion taken from video frames."""
from __future__ import annotations

import numpy as np
import pytest

from aniportrait_lib.motion import dubbing
from aniportrait_lib.data import Motion
from aniportrait_lib.face import pose_math


def test_timeline_follows_the_audio_except_trim():
    # 50 frames at 25 fps = 2 s of video
    speech = np.zeros((1, 1, int(3.01 * 22050)), dtype=np.float32)  # 3.01 s at 22.05 kHz
    frames = dubbing.audio_frame_count(speech, 22050, 30.0)
    assert frames == 91  # the Audio Features node's count: ceil(resampled samples / 16000 * 30)
    for rule in ("loop", "hold"):
        index, kept = dubbing.align_to_audio(50, 25.0, speech, 22050, 30.0, rule)
        assert len(index) == frames and kept == speech.shape[-1]
    index, kept = dubbing.align_to_audio(50, 25.0, speech, 22050, 30.0, "trim")
    assert kept == 2 * 22050 and len(index) == dubbing.audio_frame_count(speech[..., :kept], 22050, 30.0) == 60
    short = speech[..., :22050]  # 1 s: shorter than the video, every rule cuts the video
    assert [len(dubbing.align_to_audio(50, 25.0, short, 22050, 30.0, r)[0]) for r in dubbing.LENGTH_RULES] == [30, 30, 30]


def test_frame_indices_per_rule():
    # 4 source frames at 10 fps shown at 10 fps for 10 frames
    assert dubbing.source_frame_indices(4, 10.0, 10, 10.0, "loop").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert dubbing.source_frame_indices(4, 10.0, 10, 10.0, "hold").tolist() == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]
    # 25 -> 30 fps: nearest source frame in time
    index = dubbing.source_frame_indices(25, 25.0, 30, 30.0, "trim")
    assert index[0] == 0 and index[-1] == 24 and np.all(np.diff(index) >= 0)
    np.testing.assert_array_equal(index, np.floor(np.arange(30) / 30 * 25 + 0.5).astype(int))
    assert dubbing.ping_pong(np.arange(5), 1).tolist() == [0, 0, 0, 0, 0]


def test_head_motion_from_video_projects_where_the_video_head_is():
    rng = np.random.default_rng(0)
    meshes = rng.normal(size=(3, 468, 3)) * 5
    ref = pose_math.poses_to_matrices(np.array([[2.0, -5.0, 1.0, 0.3, -0.2, -42.0]]))[0]
    ref[:3, :3] *= 1.03
    video = pose_math.poses_to_matrices(rng.normal(size=(3, 6)) * [6, 6, 6, 1, 1, 1] + [0, 0, 0, 0, 0, -42])
    video[:, :3, :3] *= np.array([1.0, 1.05, 0.97])[:, None, None]  # the head's scale changes too
    posed = dubbing.head_motion_from_video(Motion(meshes, np.zeros((3, 6)), 30.0), video, ref)
    homog = lambda m: np.concatenate([m, np.ones(m.shape[:2] + (1,))], axis=2)  # noqa: E731
    want = np.einsum("tij,tnj->tni", video, homog(meshes))[..., :3]
    full = np.einsum("ij,tjk->tik", ref, pose_math.poses_to_matrices(posed.poses))
    got = np.einsum("tij,tnj->tni", full, homog(posed.meshes))[..., :3]
    assert float(np.abs(got - want).max()) < 1e-9
    same = dubbing.head_motion_from_video(Motion(meshes, np.zeros((3, 6))), np.stack([ref] * 3), ref)
    assert float(np.abs(same.poses).max()) < 1e-9 and float(np.abs(same.meshes - meshes).max()) < 1e-9


def test_errors():
    with pytest.raises(ValueError, match="length_rule must be one of loop, hold, trim; got 'stretch'"):
        dubbing.align_to_audio(10, 25.0, np.zeros((1, 1, 100)), 16000, 30.0, "stretch")
    with pytest.raises(ValueError, match="the new audio is empty"):
        dubbing.align_to_audio(10, 25.0, np.zeros((1, 1, 0)), 16000, 30.0, "loop")
    with pytest.raises(ValueError, match=r"the video gives 2 head poses for a motion of 3 frames; align the video"):
        dubbing.head_motion_from_video(Motion(np.zeros((3, 468, 3)), np.zeros((3, 6))), np.stack([np.eye(4)] * 2), np.eye(4))
