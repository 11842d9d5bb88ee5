"""Face landmarks: canonical model parsing, the geometry port, and MediaPipe analysis vs the goldens.

All inputs, sizes and tolerances come from the golden case folder (``golden/face``) and its
case.json, so the same tests run on any instance of the case.
"""
from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aniportrait_lib.data import Face
from aniportrait_lib.face.geometry import (
    load_canonical_model,
    metric_geometry,
    parse_geometry_metadata,
    solve_weighted_orthogonal_problem,
)
from aniportrait_lib.face.landmarker import (
    MODEL_URL,
    FaceLandmarker,
    get_landmarker,
    NoFaceError,
)

from support.golden import load_case

log = logging.getLogger(__name__)

_NUM = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"


def _tolerance_text(case: dict, key_part: str) -> str:
    """The tolerance string whose key contains ``key_part``, cut before its 'Measured' remark."""
    for key, text in case["tolerance"].items():
        if key_part in key:
            return re.split(r"[Mm]easured", text)[0]
    raise KeyError(f"no tolerance entry containing '{key_part}' in case.json")


def _num(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, f"could not read the tolerance /{pattern}/ from case.json text: {text!r}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def face_case() -> tuple[Path, dict]:
    return load_case("face")


@pytest.fixture(scope="module")
def cross_version_tol(face_case) -> dict[str, float]:
    text = _tolerance_text(face_case[1], "other mediapipe version")
    return {
        "lmks_xy_px": _num(text, r"lmks x,y:\s*" + _NUM + r"\s*px"),
        "lmks_z": _num(text, r"lmks z:\s*" + _NUM),
        "trans_rot": _num(text, r"trans_mat:\s*" + _NUM + r"\s*on the 3x3"),
        "trans_t": _num(text, r"3x3,\s*" + _NUM + r"\s*on the translation"),
        "lmks3d": _num(text, r"lmks3d:\s*" + _NUM),
        "bs": _num(text, r"\bbs:\s*" + _NUM),
    }


@pytest.fixture(scope="module")
def geometry_tol(face_case) -> dict[str, float]:
    text = _tolerance_text(face_case[1], "recomputed from the golden lmks")
    return {
        "lmks3d": _num(text, r"lmks3d\s*" + _NUM),
        "trans_mat": _num(text, r"trans_mat\s*" + _NUM),
    }


def _image_wh(case: dict) -> tuple[int, int]:
    h, w = case["input"]["image_hw"]
    return int(w), int(h)


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def landmarker(face_landmarker_path):
    lm = FaceLandmarker(face_landmarker_path)
    yield lm
    lm.close()


# ----------------------------------------------------------------------------- (a) canonical model


@pytest.mark.golden
def test_canonical_model_matches_export(face_case, face_landmarker_path):
    folder, case = face_case
    model = load_canonical_model(face_landmarker_path)
    vb = np.load(folder / "canonical_vertex_buffer.npy")
    ib = np.load(folder / "canonical_index_buffer.npy")
    pw = np.load(folder / "procrustes_weights.npy")
    assert model.vertex_buffer.dtype == np.float32 and model.vertex_buffer.shape == vb.shape
    np.testing.assert_array_equal(model.vertex_buffer, vb)
    np.testing.assert_array_equal(model.triangles, ib)
    np.testing.assert_array_equal(model.procrustes_weights, pw)
    # faces.npy is the 1-based index buffer
    np.testing.assert_array_equal(model.triangles + 1, np.load(folder / "faces.npy"))
    # canonical UVs are the last two columns of the runtime mesh buffer
    raw = np.load(folder / "mesh_vertex_buffer_raw.npy")
    np.testing.assert_array_equal(model.uvs, raw[:, 3:].astype(np.float32))


def test_metadata_parser_accepts_packed_fields(face_landmarker_path):
    """The reader handles packed repeated fields too (the .task uses unpacked ones)."""
    import struct

    model = load_canonical_model(face_landmarker_path)

    def varint(v: int) -> bytes:
        out = b""
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])

    def ld(field: int, payload: bytes) -> bytes:
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    floats = struct.pack(f"<{model.vertex_buffer.size}f", *model.vertex_buffer.ravel().tolist())
    idx = b"".join(varint(int(i)) for i in model.triangles.ravel())
    mesh = ld(3, floats) + ld(4, idx)
    basis = b"".join(
        ld(2, varint(1 << 3) + varint(int(i)) + varint(2 << 3 | 5) + struct.pack("<f", float(w)))
        for i, w in enumerate(model.procrustes_weights)
        if w > 0
    )
    parsed = parse_geometry_metadata(ld(1, mesh) + basis + varint(3 << 3) + varint(1))
    np.testing.assert_array_equal(parsed.vertex_buffer, model.vertex_buffer)
    np.testing.assert_array_equal(parsed.triangles, model.triangles)
    np.testing.assert_array_equal(parsed.procrustes_weights, model.procrustes_weights)


# ----------------------------------------------------------------------------- (b) geometry port


@pytest.mark.golden
def test_geometry_from_golden_landmarks(face_case, face_landmarker_path, geometry_tol):
    folder, case = face_case
    model = load_canonical_model(face_landmarker_path)
    lmks = np.load(folder / "lmks.npy")
    w, h = _image_wh(case)
    mesh, trans = metric_geometry(lmks, w, h, model)
    assert mesh.shape == (468, 3) and trans.shape == (4, 4)
    err_mesh = float(np.abs(mesh - np.load(folder / "lmks3d.npy")).max())
    err_trans = float(np.abs(trans - np.load(folder / "trans_mat.npy")).max())
    print(f"geometry port on golden lmks: lmks3d max err {err_mesh:.3g} cm, trans_mat max err {err_trans:.3g}")
    assert err_mesh <= geometry_tol["lmks3d"]
    assert err_trans <= geometry_tol["trans_mat"]
    # 468 mesh points give the same result as 478 (iris ignored)
    mesh468, trans468 = metric_geometry(lmks[:468], w, h, model)
    np.testing.assert_array_equal(mesh468, mesh)
    np.testing.assert_array_equal(trans468, trans)


def test_procrustes_recovers_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(3, 50)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    scale, t = 1.7, np.array([0.3, -2.0, 5.0])
    tgt = (scale * q @ src + t[:, None]).astype(np.float32)
    weights = rng.uniform(0.0, 1.0, size=50).astype(np.float32)
    weights[:10] = 0
    m = solve_weighted_orthogonal_problem(src, tgt, weights)
    np.testing.assert_allclose(m[:3, :3], scale * q, atol=1e-5)
    np.testing.assert_allclose(m[:3, 3], t, atol=1e-5)
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])


# ----------------------------------------------------------------------------- (c) full analysis


@pytest.mark.golden
def test_analysis_matches_golden(face_case, landmarker, cross_version_tol, face_landmarker_path, geometry_tol):
    folder, case = face_case
    rgb = _load_rgb(folder / case["input"]["file"])
    w, h = _image_wh(case)
    assert rgb.shape == (h, w, 3)
    face = landmarker.analyze(rgb)

    lmks = np.load(folder / "lmks.npy")
    assert face.landmarks.shape == lmks.shape and face.landmarks.dtype == np.float64
    assert face.image_size == (w, h)
    err = {
        "lmks_xy_px": float(np.abs((face.landmarks[:, :2] - lmks[:, :2]) * np.array([w, h])).max()),
        "lmks_z": float(np.abs(face.landmarks[:, 2] - lmks[:, 2]).max()),
    }
    trans = np.load(folder / "trans_mat.npy")
    err["trans_rot"] = float(np.abs(face.transform[:3, :3] - trans[:3, :3]).max())
    err["trans_t"] = float(np.abs(face.transform[:3, 3] - trans[:3, 3]).max())
    err["lmks3d"] = float(np.abs(face.mesh_canonical - np.load(folder / "lmks3d.npy")).max())
    err["bs"] = float(np.abs(face.blendshapes - np.load(folder / "bs.npy")).max())
    for k, v in err.items():
        print(f"analysis vs golden: {k} max err {v:.3g} (tolerance {cross_version_tol[k]:g})")
    for k, v in err.items():
        assert v <= cross_version_tol[k], f"{k}: {v} > {cross_version_tol[k]}"

    assert face.blendshape_names == case["bs_names"]
    assert face.blendshapes.shape == (len(case["bs_names"]),)
    np.testing.assert_array_equal(
        load_canonical_model(face_landmarker_path).triangles + 1, np.load(folder / "faces.npy")
    )
    np.testing.assert_array_equal(face.transform[3], [0, 0, 0, 1])

    # the shared landmarker, float input in [0, 1] and JSON round trip give the same face
    face_f = get_landmarker(face_landmarker_path).analyze(rgb.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(face_f.landmarks, face.landmarks)
    np.testing.assert_array_equal(face_f.mesh_canonical, face.mesh_canonical)
    again = Face.from_dict(json.loads(json.dumps(face.to_dict())))
    for name in ("landmarks", "mesh_canonical", "transform", "blendshapes"):
        np.testing.assert_array_equal(getattr(again, name), getattr(face, name))
    assert again.blendshape_names == face.blendshape_names and again.image_size == face.image_size

    # frames API: same result, None for a face-less frame
    grey = np.full((h, w, 3), 128, np.uint8)
    frames = landmarker.analyze_frames([rgb, grey])
    assert frames[1] is None
    np.testing.assert_array_equal(frames[0].landmarks, face.landmarks)


# ----------------------------------------------------------------------------- (d) no face


def _no_face_inputs(case: dict) -> dict[str, np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    details = case["no_face"]["details"]
    gh, gw = details["grey"]["shape"][:2]
    coffee = skimage_data.coffee()
    assert list(coffee.shape) == list(details["coffee"]["shape"])
    return {"grey": np.full((gh, gw, 3), 128, np.uint8), "coffee": coffee}


@pytest.mark.golden
@pytest.mark.parametrize("which", ["grey", "coffee"])
def test_no_face_raises(face_case, landmarker, which):
    _, case = face_case
    image = _no_face_inputs(case)[which]
    assert case["no_face"]["details"][which]["extractor_returns"] == "None"
    with pytest.raises(NoFaceError) as info:
        landmarker.analyze(image)
    msg = str(info.value)
    h, w = image.shape[:2]
    assert "no face" in msg and f"{w}x{h}" in msg and "frontal" in msg
    assert isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- (e) bad inputs


@pytest.mark.parametrize(
    "shape,message",
    [
        ((10,), r"must be one image \(H, W, C\); got shape \(10,\)"),
        ((4, 4, 2), "has 2 channels"),
        ((4, 4, 5), "has 5 channels"),
        ((2, 4, 4, 3), r"must be one image \(H, W, C\); got shape \(2, 4, 4, 3\)"),
        ((0, 4, 3), "is empty"),
    ],
)
def test_bad_image_shapes(landmarker, shape, message):
    with pytest.raises(ValueError, match=message):
        landmarker.analyze(np.zeros(shape, np.uint8))


def test_bad_image_dtype(landmarker):
    with pytest.raises(ValueError, match="pixel type int32"):
        landmarker.analyze(np.zeros((8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        landmarker.analyze(np.full((8, 8, 3), np.nan, np.float32))


def test_missing_task_file(tmp_path):
    missing = tmp_path / "face_landmarker.task"
    with pytest.raises(FileNotFoundError) as info:
        FaceLandmarker(missing)
    msg = str(info.value)
    assert str(missing) in msg and MODEL_URL in msg and "models/aniportrait" in msg
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{missing}' was not found")):
        get_landmarker(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{missing}' was not found")):
        load_canonical_model(missing)


def test_invalid_task_file(tmp_path, face_landmarker_path):
    not_zip = tmp_path / "face_landmarker.task"
    not_zip.write_bytes(b"this is not a model")
    with pytest.raises(ValueError) as info:
        FaceLandmarker(not_zip)
    assert MODEL_URL in str(info.value) and "not a" in str(info.value)

    wrong_zip = tmp_path / "other.task"
    with zipfile.ZipFile(wrong_zip, "w") as zf:
        zf.writestr("hand_detector.tflite", b"x")
    with pytest.raises(ValueError, match="geometry_pipeline_metadata_landmarks.binarypb"):
        FaceLandmarker(wrong_zip)

    # right members, broken geometry metadata
    broken = tmp_path / "broken.task"
    with zipfile.ZipFile(face_landmarker_path) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            data = b"\x0a\xff" if name.endswith(".binarypb") else src.read(name)
            dst.writestr(name, data)
    with pytest.raises(ValueError, match=re.escape(MODEL_URL)):
        FaceLandmarker(broken)


def test_face_validation(face_case):
    folder, case = face_case
    good = {
        "landmarks": np.load(folder / "lmks.npy").tolist(),
        "mesh_canonical": np.load(folder / "lmks3d.npy").tolist(),
        "transform": np.load(folder / "trans_mat.npy").tolist(),
        "blendshapes": np.load(folder / "bs.npy").tolist(),
        "blendshape_names": case["bs_names"],
        "image_size": list(_image_wh(case)),
    }
    face = Face.from_dict(good)
    assert face.image_size == _image_wh(case)
    np.testing.assert_allclose(face.landmarks_px()[:, 0], face.landmarks[:, 0] * face.width)
    with pytest.raises(ValueError, match=re.escape("landmarks must have shape (478, 3), got (468, 3)")):
        Face.from_dict({**good, "landmarks": good["landmarks"][:468]})
    with pytest.raises(ValueError, match="face data lacks transform"):
        Face.from_dict({k: v for k, v in good.items() if k != "transform"})


# ----------------------------------------------------------------------------- newer ComfyUI's FACE_LANDMARKS


def test_core_face_landmarks_convert_to_the_packs_own_faces(landmarker):
    """A FACE_LANDMARKS value built in core's layout from the real MediaPipe landmarks of a two-person photo converts
    back to the pack's own analysis of each face (landmarks, canonical mesh, head transform, blendshapes)."""
    from PIL import Image

    from aniportrait_lib.face import core_landmarks
    from aniportrait_lib.face.selection import FaceChoice
    from support.core_landmarks import core_face_landmarks
    from support.paths import shared_assets_dir

    with Image.open(shared_assets_dir() / "multiface" / "utility_hitpaw_video_enhance-1.webp") as im:
        rgb = np.asarray(im.convert("RGB"))
    own = landmarker.detect(rgb)
    assert len(own) == 2
    value = core_face_landmarks([[], own[::-1]], rgb.shape[1], rgb.shape[0])  # core's order need not be ours
    assert core_landmarks.image_size(value) == (rgb.shape[1], rgb.shape[0])
    assert core_landmarks.faces_in_frame(value, 0, landmarker.model) == []
    converted = core_landmarks.faces_in_frame(value, 1, landmarker.model)[::-1]
    for mine, theirs in zip(own, converted):
        assert theirs.image_size == mine.image_size and theirs.blendshape_names == mine.blendshape_names
        np.testing.assert_allclose(theirs.landmarks[:, :2], mine.landmarks[:, :2], atol=1e-6)  # float32 pixels
        np.testing.assert_allclose(theirs.landmarks[:, 2], mine.landmarks[:, 2], atol=1e-5)  # z via the fitted crop scale
        np.testing.assert_allclose(theirs.mesh_canonical, mine.mesh_canonical, atol=1e-4)  # cm (measured 1e-5)
        np.testing.assert_allclose(theirs.transform, mine.transform, atol=1e-5)  # measured 5e-7
        np.testing.assert_allclose(theirs.blendshapes, mine.blendshapes, atol=1e-7)
    child = FaceChoice("nearest", point=(190.0, 100.0)).pick(converted)
    assert child is converted[1]
    with pytest.raises(ValueError, match=r"^frame 2 asked for but face_landmarks covers 2 images; set frame to 0\.\.1$"):
        core_landmarks.faces_in_frame(value, 2, landmarker.model)
    with pytest.raises(ValueError, match=r"^face_landmarks is not core's FACE_LANDMARKS value"):
        core_landmarks.faces_in_frame({"frames": 3}, 0, landmarker.model)
    with pytest.raises(ValueError, match=r"^face_landmarks covers 2 images but the frames input has 3; give core's Detect"):
        core_landmarks.faces_per_frame(value, landmarker.model, 3)
