"""Stage 1 against the original's golden outputs (audio_stage1, projection, renderer)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from aniportrait_lib.audio import features as feats
from aniportrait_lib.data import AudioFeatures
from aniportrait_lib.audio import inference, models, wav2vec
from aniportrait_lib.face import pose_math, renderer
from aniportrait_lib.weights import read_state_dict

from support.golden import load_case, max_abs_err, report
from support.golden import tolerance as tol

pytestmark = pytest.mark.golden


# ---------------------------------------------------------------- renderer
def _renderer_subcases():
    folder, case = load_case("renderer")
    for sub in case["subcases"]:
        call = sub["call"]
        m = re.search(r"image_size=\[(\d+),\s*(\d+)\]", call) or re.search(r"\(\((\d+),\s*(\d+)\)", call)
        width, height = int(m.group(1)), int(m.group(2))
        normed = "normed=True" in call
        expected = next(e for e in sub["expected"] if e.split()[0].endswith(".npy")).split()[0]
        yield folder, sub["input"], expected, width, height, normed, case["tolerance"]


@pytest.mark.parametrize("sub", list(_renderer_subcases()), ids=lambda s: s[1])
def test_renderer_golden_pixel_exact(sub):
    folder, inp, expected, width, height, normed, _ = sub
    out = renderer.draw_pose_image(np.load(folder / inp), width, height, normalized=normed)
    want = np.load(folder / expected)
    assert out.shape == want.shape
    differing = int((out != want).any(axis=-1).sum())
    print(f"[golden] renderer {inp}: {differing} differing pixels of {want.shape[0] * want.shape[1]}")
    assert differing == 0


def test_renderer_draw_order_matches_golden_facts():
    folder, _ = load_case("renderer")
    golden_edges = json.loads((folder / "draw_order_bgr.json").read_text())["edges"]
    ours = [[a, b, part["color"], part["thickness"]] for part in renderer.pose_image_style()["parts"] for a, b in part["edges"]]
    assert ours == golden_edges


# ---------------------------------------------------------------- projection
def test_projection_golden():
    folder, case = load_case("projection")
    limits = case["tolerance"]
    px_tol = tol(limits.split("projected.npy:")[1])
    h, w = [int(v) for v in re.search(r"image_shape=\[(\d+),\s*(\d+)\]", case["calls"][0]["call"]).groups()]
    out = pose_math.project_points(np.load(folder / "mesh.npy"), np.load(folder / "trans_mat.npy"), np.load(folder / "pose.npy"), h, w)
    report("projection px", float(np.abs(out - np.load(folder / "projected.npy")).max()), px_tol)

    for aspect, flat in json.loads((folder / "perspective_matrices.json").read_text()).items():
        assert np.array_equal(pose_math.perspective_matrix(float(aspect)), np.array(flat, dtype=np.float32))

    em_tol = tol(limits.split("euler/matrix:")[1])
    e2m = pose_math.poses_to_matrices(np.concatenate([np.load(folder / "euler_in.npy"), np.load(folder / "translation_in.npy")], axis=1))
    report("euler->matrix", float(np.abs(e2m - np.load(folder / "e2m_out.npy")).max()), em_tol)
    m2e = [pose_math.matrix_to_euler(m) for m in np.load(folder / "m2e_in.npy")]
    report("matrix->euler", float(np.abs(np.stack([e for e, _ in m2e]) - np.load(folder / "m2e_euler_out.npy")).max()), em_tol)
    report("matrix->translation", float(np.abs(np.stack([t for _, t in m2e]) - np.load(folder / "m2e_translation_out.npy")).max()), em_tol)

    sm_tol = tol(limits.split("smoothing:")[1])
    smooth_in = np.load(folder / "smooth_in.npy")
    for path in sorted(folder.glob("smooth_w*_out.npy")):
        window = int(re.search(r"smooth_w(\d+)_out", path.name).group(1))
        out = pose_math.smooth_poses(smooth_in, window)
        assert out.dtype == smooth_in.dtype
        report(f"smooth window {window}", float(np.abs(out - np.load(path)).max()), sm_tol)
    chunks = [np.load(p) for p in sorted(folder.glob("post_chunk*_in.npy"))]
    report("audio2vid pose post-processing", float(np.abs(pose_math.postprocess_poses(chunks) - np.load(folder / "post_out.npy")).max()), sm_tol)


# ---------------------------------------------------------------- audio stage 1
def _read_wav(path):
    from scipy.io import wavfile

    sr, data = wavfile.read(path)
    if data.dtype == np.int16:
        data = data.astype(np.float32) / 32768.0
    data = np.asarray(data, dtype=np.float32)
    wave = data.T if data.ndim == 2 else data[None]
    return torch.from_numpy(np.ascontiguousarray(wave))[None], sr  # [1, C, T]


@pytest.fixture(scope="module")
def audio_case():
    folder, case = load_case("audio_stage1")
    return folder, case


def _wav2vec_overrides(folder, model_path: str) -> dict:
    return json.loads((folder / model_path / "config.json").read_text())


def test_audio_stage1_golden(audio_case):
    folder, case = audio_case
    t = case["tolerance"]
    inputs = case["inputs"]
    width, height = inputs["image_size"]

    wave, sr = _read_wav(folder / "audio.wav")
    values, num_frames = feats.prepare_audio(wave, sr)
    assert num_frames == case["seq_len"]
    report("audio_feature", float(np.abs(values - np.load(folder / "audio_feature.npy")).max()), tol(t["audio_feature"]))

    a2m_sd = read_state_dict(folder / "audio2mesh.pt")
    a2p_sd = read_state_dict(folder / "audio2pose.pt")
    a2m = models.load_audio2mesh(a2m_sd, folder / "audio2mesh.pt")
    a2p = models.load_audio2pose(a2p_sd, folder / "audio2pose.pt")
    # the inferred architecture equals the case's config files
    cfg = wav2vec.make_config(_wav2vec_overrides(folder, inputs["a2m_config"]["model_path"]))
    assert a2m.audio_encoder.config.num_hidden_layers == cfg.num_hidden_layers
    assert a2m.audio_encoder.config.num_attention_heads == cfg.num_attention_heads
    assert a2m.audio_encoder.config.num_conv_pos_embeddings == cfg.num_conv_pos_embeddings
    assert a2m.config.latent_dim == inputs["a2m_config"]["latent_dim"]
    assert a2p.config.latent_dim == inputs["a2p_config"]["latent_dim"]

    features = AudioFeatures(values, num_frames)
    with torch.inference_mode():
        hidden = wav2vec.encode_at_frame_rate(a2m.audio_encoder, torch.from_numpy(values)[None], num_frames)
    report("a2m_encoder_last_hidden", max_abs_err(hidden, np.load(folder / "a2m_encoder_last_hidden.npy")), tol(t["a2m_encoder_last_hidden"]))
    offsets = inference.predict_mesh_offsets(a2m, features)
    raw_mesh = np.load(folder / "a2m_raw_out.npy")
    report("a2m_raw_out", float(np.abs(offsets.reshape(raw_mesh.shape) - raw_mesh).max()), tol(t["a2m_raw_out"]))

    chunks = inference.plan_pose_chunks(values.shape[0], num_frames)
    assert [c.num_frames for c in chunks] == case["chunk_seq_lens"]
    assert [c.end - c.start for c in chunks] == case["chunk_num_samples"]
    raw = inference.predict_raw_poses(a2p, features, style_id=inputs["id_seed"])
    for k, chunk in enumerate(raw):
        report(f"a2p_raw_chunk{k}", float(np.abs(chunk - np.load(folder / f"a2p_raw_chunk{k}.npy")).max()), tol(t["a2p_raw_chunk*"]))
    halved = pose_math.postprocess_poses(raw, window=1)
    report("pose_seq_halved", float(np.abs(halved - np.load(folder / "pose_seq_halved.npy")).max()), tol(t["pose_seq_*"]))
    poses = pose_math.postprocess_poses(raw)
    report("pose_seq_smoothed", float(np.abs(poses - np.load(folder / "pose_seq_smoothed.npy")).max()), tol(t["pose_seq_*"]))

    meshes = offsets.astype(np.float64) + np.load(folder / "ref_lmks3d.npy")
    projected = pose_math.project_points(meshes, np.load(folder / "ref_trans_mat.npy"), poses, height, width)
    report("projected_vertices px", float(np.abs(projected - np.load(folder / "projected_vertices.npy")).max()), tol(t["projected_vertices"]))

    min_equal = tol(t["frame pngs"]) / 100.0
    for png in sorted(folder.glob("frame_*.png")):
        idx = int(re.search(r"frame_(\d+)", png.name).group(1))
        ours = renderer.draw_pose_image(projected[idx], width, height)
        want_bgr = np.asarray(Image.open(png).convert("RGB"))[..., ::-1]
        equal = float((ours == want_bgr).all(axis=-1).mean())
        print(f"[golden] {png.name}: {equal * 100:.3f}% identical pixels")
        assert equal >= min_equal
