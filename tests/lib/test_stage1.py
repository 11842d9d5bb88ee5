"""Stage-1 behaviour beyond the goldens: full-size layout, lengths the original crashed on, style ids, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aniportrait_lib import weights
from support import random_weights
from aniportrait_lib.data import AudioFeatures
from aniportrait_lib.audio import features as feats
from aniportrait_lib.audio import inference, models

from support.golden import manifest
from support.paths import reference_dir


def _release_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in models.release_state_dict(model).items()}


@pytest.mark.parametrize("name,builder,config", [
    ("audio2mesh", models.build_audio2mesh, models.Audio2MeshConfig(wav2vec={})),
    ("audio2pose", models.build_audio2pose, models.Audio2PoseConfig(wav2vec={})),
])
def test_full_size_models_match_release_manifest(name, builder, config):
    model = builder(config, device="meta")
    ours = _release_shapes(model)
    want = manifest(name)
    assert list(ours) == list(want), weights.describe_mismatch(want, ours)
    assert ours == want
    summary = json.loads((reference_dir() / "manifests" / "summary.json").read_text())[name]
    assert sum(int(np.prod(s)) for s in ours.values()) == summary["num_elements"]


def test_full_size_config_is_inferred_from_release_keys():
    want = manifest("audio2pose")
    fake = {k: torch.empty(v, device="meta") for k, v in want.items()}
    cfg = models.audio2pose_config_from_state_dict(fake)
    built = _release_shapes(models.build_audio2pose(cfg, device="meta"))
    assert built == want


@pytest.fixture(scope="module")
def tiny_models():
    return (models.load_audio2mesh(random_weights.audio2mesh_state_dict(0)), models.load_audio2pose(random_weights.audio2pose_state_dict(1)))


def _features(seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0) -> AudioFeatures:
    n = int(round(seconds * sample_rate))
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / sample_rate
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(n, generator=gen)
    wave = wave.expand(channels, n)[None].clone()  # [1, C, T]
    values, frames = feats.prepare_audio(wave, sample_rate)
    return AudioFeatures(values, frames)


# a partial last frame counts as a frame: 4.99 s at 30 fps = 149.7 frames -> 150
@pytest.mark.parametrize("seconds,frames", [(0.3, 9), (4.99, 150), (5.0, 150), (10.0, 300), (15.0, 450)])
def test_every_length_gives_one_pose_per_mesh_frame(tiny_models, seconds, frames):
    a2m, a2p = tiny_models
    f = _features(seconds)
    assert f.num_frames == frames
    meshes = inference.predict_mesh_offsets(a2m, f)
    poses = inference.predict_poses(a2p, f, style_id=7)
    assert meshes.shape == (f.num_frames, 468, 3)
    assert poses.shape == (f.num_frames, 6)
    assert np.isfinite(poses).all() and np.isfinite(meshes).all()


def test_48k_stereo_clip_is_mixed_down_and_resampled(tiny_models):
    a2m, a2p = tiny_models
    f = _features(2.0, sample_rate=48000, channels=2)
    assert abs(f.input_values.shape[0] - 32000) <= 1
    assert f.num_frames == 60
    assert abs(float(f.input_values.mean())) < 1e-4 and abs(float(f.input_values.std()) - 1) < 1e-3
    assert inference.predict_mesh_offsets(a2m, f).shape[0] == inference.predict_poses(a2p, f).shape[0] == 60


def test_resampling_preserves_a_tone():
    sr = 44100
    t = np.arange(sr) / sr
    wav = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = feats.to_mono_16k(wav[None, None], sr)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / out.shape[0] - 440) < 2


def test_chunk_plan_matches_original_where_it_works_and_fixes_crashes():
    # 10.7 s: the original's [150, 171]; multiple of 150 frames: never an empty chunk
    assert [c.num_frames for c in inference.plan_pose_chunks(171200, 321)] == [150, 171]
    # 10.0 s = 300 frames: the original gave the merged last chunk 150 + 0 frames (150 poses short)
    plan = inference.plan_pose_chunks(160000, 300)
    assert [c.num_frames for c in plan] == [300] and plan[-1].end == 160000
    assert [c.num_frames for c in inference.plan_pose_chunks(240000, 450)] == [150, 300]
    single = inference.plan_pose_chunks(80000, 150)
    assert len(single) == 1 and single[0].num_frames == 150


def test_same_style_id_same_poses_and_ids_matter(tiny_models):
    _, a2p = tiny_models
    f = _features(1.0)
    a = inference.predict_poses(a2p, f, style_id=3)
    b = inference.predict_poses(a2p, f, style_id=3)
    c = inference.predict_poses(a2p, f, style_id=4)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_kv_cached_decoding_equals_full_recompute(tiny_models):
    """The incremental decoder equals the original algorithm (full nn.TransformerDecoder pass per frame)."""
    _, a2p = tiny_models
    f = _features(0.5)
    x = torch.from_numpy(f.input_values)[None]
    with torch.inference_mode():
        fast = a2p.generate(x, f.num_frames, 5)[0]
        slow = a2p.generate_full_recompute(x, f.num_frames, 5)[0]
    assert (fast - slow).abs().max() < 1e-4


def test_wrong_checkpoint_names_first_mismatching_keys(tmp_path):
    sd = random_weights.audio2mesh_state_dict(0)
    sd.pop("in_fn.bias")
    sd["out_fn.weight"] = torch.zeros(3, 3)
    sd["extra.key"] = torch.zeros(1)
    with pytest.raises(weights.CheckpointError) as err:
        models.load_audio2mesh(sd, tmp_path / "audio2mesh.pt")
    msg = str(err.value)
    assert "audio2mesh.pt" in msg and str(tmp_path) in msg
    assert "in_fn.bias" in msg and "extra.key" in msg
    assert "out_fn.weight: expected [1404, 32], found [3, 3]" in msg


def test_audio2pose_file_given_as_audio2mesh_is_rejected():
    with pytest.raises(weights.CheckpointError, match=r"another model's file: expected audio2mesh\.pt \(Audio2Mesh\), found audio2pose\.pt"):
        models.load_audio2mesh(random_weights.audio2pose_state_dict(1), "models/aniportrait/audio2pose.pt")


@pytest.mark.parametrize("wave,sr,match", [
    (torch.zeros(1, 1, 0), 16000, "empty"),
    (torch.zeros(1, 1, 100), 16000, "too short"),
    (torch.full((1, 1, 16000), float("nan")), 16000, "NaN"),
    (torch.zeros(1, 1, 16000), 0, "sample rate"),
    (torch.zeros(2, 2, 2, 2), 16000, "waveform must be"),
])
def test_bad_audio_gets_clear_errors(wave, sr, match):
    with pytest.raises(ValueError, match=match):
        feats.prepare_audio(wave, sr)


def test_style_id_out_of_range(tiny_models):
    _, a2p = tiny_models
    with pytest.raises(ValueError, match="style id"):
        inference.predict_poses(a2p, _features(0.3), style_id=100)


def test_fps_beyond_the_pose_model_limit_is_a_clear_error(tiny_models):
    _, a2p = tiny_models
    values, _ = feats.prepare_audio(torch.randn(1, 1, 16000 * 8), 16000)
    f = AudioFeatures(values, feats.frame_count(values.shape[0], 100), fps=100)
    with pytest.raises(ValueError, match="fps <= 60"):
        inference.predict_poses(a2p, f)
