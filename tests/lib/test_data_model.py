"""The data model: pose templates refused when loaded (not when drawn), motions validated, template application."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from aniportrait_lib import data
from aniportrait_lib.motion import build as motion, pose_template

from support.golden import load_case


def _write(tmp_path, name: str, array, **kwargs):
    path = tmp_path / name
    np.save(path, array, **kwargs) if name.endswith(".npy") else path.write_bytes(array)
    return path


def test_the_originals_template_loads_unchanged():
    folder, _ = load_case("vid2pose")
    template = data.load_pose_template(folder / "pose_temp.npy")
    assert np.array_equal(template.poses, np.load(folder / "pose_temp.npy"))
    assert template.fps == 30.0


@pytest.mark.parametrize("name, content, reason", [
    ("nan.npy", np.array([[0, 0, 0, 0, 0, np.nan]] + [[0] * 6] * 2), "has 1 row\\(s\\) with NaN or infinite values"),
    ("inf.npy", np.array([[np.inf, 0, 0, 0, 0, 0]] * 2 + [[0] * 6]), "has 2 row\\(s\\) with NaN or infinite values"),
    ("empty.npy", np.zeros((0, 6)), "holds an array of shape \\(0, 6\\)"),
    ("wide.npy", np.zeros((5, 7)), "holds an array of shape \\(5, 7\\)"),
    ("flat.npy", np.zeros(6), "holds an array of shape \\(6,\\)"),
    ("text.npy", np.array([["a"] * 6]), "does not hold numbers"),
])
def test_bad_templates_are_refused_when_loaded(tmp_path, name, content, reason):
    path = _write(tmp_path, name, content)
    with pytest.raises(ValueError, match=f"^'{name}' {reason}; a pose template is a .npy file holding a \\(frames, 6\\) array"):
        data.load_pose_template(path)


def test_pickled_and_foreign_files_are_refused_without_numpys_text(tmp_path):
    obj = _write(tmp_path, "objects.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="^'objects.npy' is not a plain numeric array") as info:
        data.load_pose_template(obj)
    assert "allow_pickle" not in str(info.value)
    np.save(tmp_path / "t.npy", np.zeros((3, 6)))
    with pytest.raises(ValueError, match="^'poses.pkl' is not a .npy file; a pose template is"):
        data.load_pose_template(_write(tmp_path, "poses.pkl", pickle.dumps(np.zeros((3, 6)))))
    with pytest.raises(ValueError, match="^'broken.npy' is not a plain numeric array \\(it needs pickle or is damaged\\)"):
        (tmp_path / "broken.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:-20])  # truncated download
        data.load_pose_template(tmp_path / "broken.npy")


def test_save_never_overwrites_and_round_trips(tmp_path):
    template = data.PoseTemplate(np.arange(18, dtype=float).reshape(3, 6))
    path = data.save_pose_template(template, tmp_path / "t.npy")
    assert np.array_equal(data.load_pose_template(path).poses, template.poses)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        data.save_pose_template(data.PoseTemplate(np.zeros((2, 6))), path)
    assert path.read_bytes() == before


def test_motion_and_template_validation():
    with pytest.raises(ValueError, match=r"motion poses must have shape \(3, 6\), got \(2, 6\)"):
        data.Motion(np.zeros((3, 468, 3)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="motion meshes contains NaN or infinite values"):
        data.Motion(np.full((1, 468, 3), np.nan), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="the motion's fps must be positive, got 0"):
        data.Motion(np.zeros((1, 468, 3)), np.zeros((1, 6)), fps=0)
    with pytest.raises(ValueError, match="pose template contains NaN"):
        data.PoseTemplate(np.full((2, 6), np.inf))


def test_apply_template_loops_at_the_same_fps_and_resamples_at_another():
    folder, case = load_case("vid2pose")
    template = data.load_pose_template(folder / "pose_temp.npy")
    n = case["inputs"]["seq_lens"][0]
    m = data.Motion(np.zeros((n, 468, 3)), np.zeros((n, 6)), fps=30.0)
    applied = motion.apply_pose_template(m, template)
    assert np.array_equal(applied.poses, np.load(folder / f"audio2vid_pose_seq_len{n}.npy"))
    at_15 = motion.apply_pose_template(data.Motion(np.zeros((n, 468, 3)), np.zeros((n, 6)), fps=15.0), template)
    half = pose_template.resample_poses(template.poses, 30.0, 15.0)
    assert np.array_equal(at_15.poses, pose_template.loop_template(half, n))
