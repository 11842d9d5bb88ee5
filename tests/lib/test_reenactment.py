"""Face reenactment (vid2vid) against the original's golden case: maths, pose images, full extraction."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from aniportrait_lib.data import Face
from aniportrait_lib.face import pose_math, tracking
from aniportrait_lib.motion import reenactment
from aniportrait_lib.face.landmarker import FaceLandmarker
from aniportrait_lib.face.renderer import draw_pose_image, draw_pose_images
from aniportrait_lib.motion.build import relative_to_reference

from support.golden import load_case, report

golden = pytest.mark.golden

SRC_ARRAYS = ("src_trans_mat", "src_lmks3d", "src_bs", "ref_lmks3d", "ref_trans_mat")


def _same_version_tolerances(case: dict) -> tuple[float, float, bool]:
    """(array tolerance, projected px tolerance, pose images pixel-exact) of the same-version entry."""
    key = next(k for k in case["tolerance"] if k.startswith("same"))
    text = case["tolerance"][key].split("expect", 1)[1]
    arr_tol, px_tol = (float(v) for v in re.findall(r"<=\s*(\d[\d.]*(?:e-?\d+)?)", text)[:2])
    return arr_tol, px_tol, "pixel-exact" in text


def _other_version_tolerances(case: dict) -> dict[str, float]:
    text = case["tolerance"]["other mediapipe version"]
    rot, trans = re.search(r"pose_arr_smooth:\s*([\d.]+)\s*deg\s*/\s*([\d.]+)", text).groups()
    px = re.search(r"projected_vertices:\s*([\d.]+)\s*px", text).group(1)
    pct = re.search(r"pose images:\s*>=\s*([\d.]+)\s*%", text).group(1)
    return {"rot": float(rot), "trans": float(trans), "px": float(px), "equal": float(pct) / 100}


def _source_pngs(folder):
    return sorted((folder / "src").glob("*.png"))


def _frame_size(folder, case) -> tuple[int, int]:
    sizes = {Image.open(p).size for p in _source_pngs(folder)}
    assert len(sizes) == 1
    size = sizes.pop()
    assert list(size) == case["case_values"]["frame_wh"]
    return size


def _output_size(folder, case) -> tuple[int, int]:
    h, w = np.load(folder / f"pose_bgr_{case['case_values']['npy_frames'][0]:02d}.npy").shape[:2]
    return w, h


def _golden_pose_pngs(folder) -> list[np.ndarray]:
    # "RGB view of the BGR array": the PNG holds the renderer's array with channels reversed
    return [np.asarray(Image.open(p).convert("RGB"))[..., ::-1] for p in sorted((folder / "pose").glob("*_rgb.png"))]


def _as_motion(r: reenactment.Reenactment, ref_t: np.ndarray):
    return relative_to_reference(r.meshes, r.transforms, ref_t, 30.0)


def _project_like_original(r, ref_t, w, h) -> np.ndarray:
    """The retargeted result as a Motion relative to the reference, projected at the SOURCE size (as the original)."""
    motion = _as_motion(r, ref_t)
    return pose_math.project_points(motion.meshes, ref_t, motion.poses, h, w)


def _render_like_original(r, ref_t, w, h, ow, oh) -> np.ndarray:
    """The original's vid2vid pose images: drawn at the source size, then cv2-resized to the output size."""
    frames = draw_pose_images(_project_like_original(r, ref_t, w, h), w, h)
    return np.stack([cv2.resize(f, (ow, oh), interpolation=cv2.INTER_LINEAR) for f in frames])


# ---------------------------------------------------------------- (a) maths from the golden arrays
@golden
def test_retarget_maths_from_golden_arrays():
    folder, case = load_case("vid2vid")
    arr_tol, px_tol, _ = _same_version_tolerances(case)
    src_t, src_m, src_bs, ref_m, ref_t = (np.load(folder / f"{n}.npy") for n in SRC_ARRAYS)
    assert src_t.shape[0] == case["case_values"]["N"]

    assert reenactment.neutral_frame(src_bs) == case["case_values"]["min_bs_idx"]
    np.testing.assert_allclose(src_bs.sum(1), case["case_values"]["bs_sums"], rtol=0, atol=1e-9)

    source = reenactment.source_poses(src_t)
    report("vid2vid pose_arr_source", float(np.abs(source - np.load(folder / "pose_arr_source.npy")).max()), arr_tol)
    anchored = reenactment.anchor_translation(source, ref_t)
    report("vid2vid pose_arr", float(np.abs(anchored - np.load(folder / "pose_arr.npy")).max()), arr_tol)
    assert np.array_equal(anchored[:, :3], source[:, :3])  # rotation untouched

    r = reenactment.retarget_arrays(src_t, src_m, src_bs, ref_m, ref_t)
    assert r.neutral_index == case["case_values"]["min_bs_idx"]
    report("vid2vid pose_arr_smooth", float(np.abs(r.poses - np.load(folder / "pose_arr_smooth.npy")).max()), arr_tol)
    report("vid2vid pose_mat_smooth", float(np.abs(r.transforms - np.load(folder / "pose_mat_smooth.npy")).max()), arr_tol)
    report("vid2vid verts_retarget", float(np.abs(r.meshes - np.load(folder / "verts_retarget.npy")).max()), arr_tol)

    w, h = _frame_size(folder, case)
    want = np.load(folder / "projected_vertices.npy")
    # through the Motion relative to the reference (the one pose representation), as every node projects it
    report("vid2vid projected_vertices via Motion (px)", float(np.abs(_project_like_original(r, ref_t, w, h) - want).max()), px_tol)


def test_relative_motion_reproduces_absolute_transforms():
    """A scaled, rotated reference transform: T_ref @ M(pose_t) @ S_t v == R_t v + t_t for every frame."""
    rng = np.random.default_rng(0)
    meshes = rng.normal(size=(4, 468, 3)) * 5
    absolute = pose_math.poses_to_matrices(rng.normal(size=(4, 6)) * [8, 8, 8, 1, 1, 1] + [0, 0, 0, 0, 0, -40])
    ref = pose_math.poses_to_matrices(np.array([[5.0, -10.0, 3.0, 0.5, -1.0, -45.0]]))[0]
    ref[:3, :3] *= 0.97  # MediaPipe's transforms carry a scale
    motion = relative_to_reference(meshes, absolute, ref, 25.0)
    homog = np.concatenate([meshes, np.ones((4, 468, 1))], axis=2)
    want = np.einsum("tij,tnj->tni", absolute, homog)[..., :3]
    full = np.einsum("ij,tjk->tik", ref, pose_math.poses_to_matrices(motion.poses))
    got = np.einsum("tij,tnj->tni", full, np.concatenate([motion.meshes, np.ones((4, 468, 1))], axis=2))[..., :3]
    assert float(np.abs(got - want).max()) < 1e-9
    assert motion.fps == 25.0 and motion.num_frames == 4


# ---------------------------------------------------------------- (b) pose images
@golden
def test_pose_images_from_golden_arrays():
    folder, case = load_case("vid2vid")
    _, _, exact = _same_version_tolerances(case)
    r = reenactment.retarget_arrays(*(np.load(folder / f"{n}.npy") for n in SRC_ARRAYS))
    (w, h), (ow, oh) = _frame_size(folder, case), _output_size(folder, case)
    ref_t = np.load(folder / "ref_trans_mat.npy")
    frames = _render_like_original(r, ref_t, w, h, ow, oh)
    assert frames.shape == (r.num_frames, oh, ow, 3) and frames.dtype == np.uint8

    for i in case["case_values"]["npy_frames"]:
        want = np.load(folder / f"pose_bgr_{i:02d}.npy")
        diff = int((frames[i] != want).any(-1).sum())
        print(f"[golden] vid2vid pose_bgr_{i:02d}: {diff} differing pixels")
        assert diff == 0 if exact else diff / want[..., 0].size <= 0.01
    pngs = _golden_pose_pngs(folder)
    assert len(pngs) == r.num_frames
    counts = case["case_values"]["nonzero_pixels_per_pose"]
    for i, want in enumerate(pngs):
        diff = int((frames[i] != want).any(-1).sum())
        print(f"[golden] vid2vid pose/{i:02d}_rgb.png: {diff} differing pixels")
        assert diff == 0 if exact else diff / want[..., 0].size <= 0.01
        assert int(frames[i].any(-1).sum()) == counts[i]

    ref_pose = draw_pose_image(np.load(folder / "ref_lmks.npy"), ow, oh, normalized=True)
    assert np.array_equal(ref_pose, np.asarray(Image.open(folder / "ref_pose_rgb.png").convert("RGB"))[..., ::-1])


# ---------------------------------------------------------------- (c) full extraction with the installed mediapipe
@pytest.fixture(scope="module")
def extracted(face_landmarker_path):
    folder, case = load_case("vid2vid")
    ow, oh = _output_size(folder, case)
    # the original: PIL RGB -> BGR -> cv2.resize to the generation size (channel-agnostic, so done on RGB here)
    ref_rgb = cv2.resize(np.asarray(Image.open(folder / "ref.png").convert("RGB")), (ow, oh))
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in _source_pngs(folder)]
    black = np.zeros_like(frames[0])
    with FaceLandmarker(face_landmarker_path) as lm:
        ref = lm.analyze(ref_rgb)
        faces = lm.analyze_frames(frames)
        with_gap = lm.analyze_frames([frames[0], black, frames[1]])
        leading_black = lm.analyze_frames([black, frames[0]])
    return folder, case, ref, faces, with_gap, leading_black


@golden
def test_full_extraction_cross_version(extracted):
    folder, case, ref, faces, _, _ = extracted
    tol = _other_version_tolerances(case)
    src = tracking.fill_missing(faces, "stop").faces
    assert len(src) == case["case_values"]["N"]
    r = reenactment.retarget(src, ref)
    w, h = _frame_size(folder, case)
    assert r.frame_size == (w, h)

    bs = np.stack([f.blendshapes for f in src])
    print(f"[golden] vid2vid min_bs_idx {r.neutral_index} (golden {case['case_values']['min_bs_idx']}); "
          f"bs sums max abs err {np.abs(bs.sum(1) - case['case_values']['bs_sums']).max():.3g}")
    assert r.neutral_index == case["case_values"]["min_bs_idx"]

    want = np.load(folder / "pose_arr_smooth.npy")
    report("vid2vid pose_arr_smooth rotation (deg, other mediapipe)", float(np.abs(r.poses[:, :3] - want[:, :3]).max()), tol["rot"])
    report("vid2vid pose_arr_smooth translation (other mediapipe)", float(np.abs(r.poses[:, 3:] - want[:, 3:]).max()), tol["trans"])
    projected = _project_like_original(r, ref.transform, w, h)
    err = np.abs(projected - np.load(folder / "projected_vertices.npy"))
    print(f"[golden] vid2vid projected mean abs err {err.mean():.3g} px")
    report("vid2vid projected_vertices (px, other mediapipe)", float(err.max()), tol["px"])

    ow, oh = _output_size(folder, case)
    frames = _render_like_original(r, ref.transform, w, h, ow, oh)
    ratios = [float((f == g).all(-1).mean()) for f, g in zip(frames, _golden_pose_pngs(folder))]
    print(f"[golden] vid2vid pose images (other mediapipe): min {min(ratios) * 100:.3f}% identical pixels")
    assert min(ratios) >= tol["equal"]


@golden
def test_faceless_frame_policies_on_real_detections(extracted):
    _, _, _, faces, with_gap, leading_black = extracted
    assert with_gap[1] is None and with_gap[2] is not None
    kept = tracking.fill_missing(with_gap, "stop")
    assert len(kept.faces) == 1 and np.array_equal(kept.faces[0].transform, faces[0].transform)
    filled = tracking.fill_missing(with_gap, "interpolate")
    assert len(filled.faces) == 3 and filled.filled == 1
    np.testing.assert_allclose(filled.faces[1].transform, (with_gap[0].transform + with_gap[2].transform) / 2, atol=1e-12)
    assert leading_black[0] is None
    with pytest.raises(ValueError, match="no face was found in the first frame"):
        tracking.fill_missing(leading_black, "stop")
    held = tracking.fill_missing(leading_black, "hold")
    assert np.array_equal(held.faces[0].transform, leading_black[1].transform)


# ---------------------------------------------------------------- (d) errors and small facts
def _fake_face(rng, size=(240, 300)) -> Face:
    t = np.eye(4)
    t[:3, 3] = rng.normal(size=3) + [0, 0, -40]
    return Face(landmarks=rng.uniform(size=(478, 3)), mesh_canonical=rng.normal(size=(468, 3)),
                         transform=t, blendshapes=rng.uniform(size=51),
                         blendshape_names=[f"b{i}" for i in range(51)], image_size=size)


def test_retarget_from_faces_equals_arrays():
    rng = np.random.default_rng(1)
    src = [_fake_face(rng) for _ in range(5)]
    ref = _fake_face(rng, (512, 512))
    a = reenactment.retarget(src, ref)
    b = reenactment.retarget_arrays(np.stack([f.transform for f in src]), np.stack([f.mesh_canonical for f in src]),
                                    np.stack([f.blendshapes for f in src]), ref.mesh_canonical, ref.transform)
    assert a.neutral_index == b.neutral_index == int(np.argmin([f.blendshapes.sum() for f in src]))
    for name in ("meshes", "transforms", "poses"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.frame_size == (240, 300) and b.frame_size is None
    # expression is zero at the neutral frame; translation of frame 0 before smoothing is the reference's
    assert np.array_equal(a.meshes[a.neutral_index], ref.mesh_canonical)
    unsmoothed = reenactment.retarget(src, ref, smoothing_window=1)
    np.testing.assert_allclose(unsmoothed.poses[0, 3:], ref.transform[:3, 3], atol=1e-12)


def test_neutral_frame_first_on_ties():
    bs = np.array([[0.5, 0.5], [0.2, 0.1], [0.1, 0.2], [0.3, 0.3]])
    assert reenactment.neutral_frame(bs) == 1


def test_shape_errors():
    rng = np.random.default_rng(3)
    t = np.tile(np.eye(4), (4, 1, 1))
    m = rng.normal(size=(4, 468, 3))
    bs = rng.uniform(size=(4, 51))
    ref_m, ref_t = rng.normal(size=(468, 3)), np.eye(4)
    with pytest.raises(ValueError, match="source meshes"):
        reenactment.retarget_arrays(t, m[:3], bs, ref_m, ref_t)
    with pytest.raises(ValueError, match="source meshes"):
        reenactment.retarget_arrays(t, m, bs, ref_m[:400], ref_t)
    with pytest.raises(ValueError, match="blendshapes"):
        reenactment.retarget_arrays(t, m, bs[:2], ref_m, ref_t)
    with pytest.raises(ValueError, match="source transforms"):
        reenactment.retarget_arrays(t[:, :3], m, bs, ref_m, ref_t)
    with pytest.raises(ValueError, match="reference transform"):
        reenactment.retarget_arrays(t, m, bs, ref_m, ref_t[:3])
    bad = m.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        reenactment.retarget_arrays(t, bad, bs, ref_m, ref_t)
    with pytest.raises(ValueError, match="blendshapes"):
        reenactment.neutral_frame(np.zeros((0, 51)))
    with pytest.raises(ValueError, match="same size"):
        reenactment.retarget([_fake_face(rng), _fake_face(rng, (100, 100))], _fake_face(rng))
    with pytest.raises(ValueError, match="no source faces"):
        reenactment.retarget([], _fake_face(rng))

