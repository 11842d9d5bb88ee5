"""Head-pose templates against the original's vid2pose golden (extraction and consumption)."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from aniportrait_lib.motion import pose_template
from aniportrait_lib.face.landmarker import FaceLandmarker

from support.golden import load_case, report
from support.golden import tolerance_numbers as _numbers

pytestmark = pytest.mark.golden


def test_template_maths_from_golden_transforms():
    folder, case = load_case("vid2pose")
    tol = _numbers(case["tolerance"]["same mediapipe 0.10.11 + .task"].split("pose_arr")[1])[0]
    fps = float(case["inputs"]["fps"])
    transforms = np.load(folder / "trans_mat_f32.npy")
    rel = pose_template.relative_poses(transforms)
    report("vid2pose pose_arr", float(np.abs(rel - np.load(folder / "pose_arr.npy")).max()), tol)
    interp = pose_template.resample_poses(rel, fps)
    want = np.load(folder / "pose_arr_interp.npy")
    assert interp.shape == want.shape
    report("vid2pose pose_arr_interp", float(np.abs(interp - want).max()), tol)
    report("vid2pose pose_temp", float(np.abs(pose_template.extract_template(transforms, fps) - np.load(folder / "pose_temp.npy")).max()), tol)
    template = np.load(folder / "pose_temp.npy")
    for n in case["inputs"]["seq_lens"]:
        assert np.array_equal(pose_template.loop_template(template, n), np.load(folder / f"audio2vid_pose_seq_len{n}.npy"))


def test_template_extracted_from_video_frames(face_landmarker_path):
    folder, case = load_case("vid2pose")
    other = case["tolerance"]["other mediapipe version"]
    rot_tol, trans_tol = _numbers(other)[:2]
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "frames").glob("*.png"))]
    with FaceLandmarker(face_landmarker_path) as lm:
        faces = lm.analyze_frames(frames)
    assert all(f is not None for f in faces)
    template = pose_template.extract_template(np.stack([f.transform for f in faces]), float(case["inputs"]["fps"]))
    want = np.load(folder / "pose_temp.npy")
    report("vid2pose template rotations (deg, other mediapipe)", float(np.abs(template[:, :3] - want[:, :3]).max()), rot_tol)
    report("vid2pose template translations (other mediapipe)", float(np.abs(template[:, 3:] - want[:, 3:]).max()), trans_tol)


def test_bad_templates_get_clear_errors():
    with pytest.raises(ValueError, match=r"\(T >= 1, 6\)"):
        pose_template.loop_template(np.zeros((4, 5)), 10)
    with pytest.raises(ValueError, match="frame rate"):
        pose_template.resample_poses(np.zeros((4, 6)), 0)
