"""Long clips: Audio2Mesh in cross-faded windows (bounded memory), Audio2Pose chunks decoded as one batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support import random_weights
from aniportrait_lib.audio import features as feats
from aniportrait_lib.audio import inference, models, wav2vec
from aniportrait_lib.data import AudioFeatures
from aniportrait_lib.weights import read_state_dict

from support.golden import load_case, report
from support.golden import tolerance as tol


@pytest.fixture(scope="module")
def tiny_models():
    return (models.load_audio2mesh(random_weights.audio2mesh_state_dict(0)), models.load_audio2pose(random_weights.audio2pose_state_dict(1)))


def _features(seconds: float, seed: int = 0) -> AudioFeatures:
    n = int(round(seconds * 16000))
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    wave = 0.3 * torch.sin(2 * torch.pi * 220 * t) * (1 + torch.sin(2 * torch.pi * 2 * t)) + 0.05 * torch.randn(n, generator=gen)
    values, frames = feats.prepare_audio(wave[None, None], 16000)
    return AudioFeatures(values, frames)


@pytest.mark.parametrize("seconds", [0.3, 4.0, 12.0])
def test_short_clips_identical_to_the_whole_clip_pass(tiny_models, seconds):
    a2m, _ = tiny_models
    f = _features(seconds)
    with torch.inference_mode():
        want = a2m(torch.from_numpy(f.input_values)[None], f.num_frames)[0].numpy().reshape(f.num_frames, -1, 3)
    assert inference.mesh_window(f) is None
    assert np.array_equal(inference.predict_mesh_offsets(a2m, f), want)
    assert np.array_equal(inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=None), want)
    # a limit just above the clip keeps the whole-clip pass too
    assert np.array_equal(inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=seconds + 0.01, window_seconds=1.0, overlap_seconds=0.2), want)


def test_streamed_conv_features_equal_the_whole_clip_conv(tiny_models):
    a2m, _ = tiny_models
    x = torch.from_numpy(_features(7.3).input_values)[None]
    with torch.inference_mode():
        whole = a2m.audio_encoder.feature_extractor(x)
        for piece in (1, 37, 256, 10_000):
            streamed = wav2vec.conv_features_streamed(a2m.audio_encoder, x, piece_frames=piece)
            assert streamed.shape == whole.shape
            assert float((streamed - whole).abs().max()) <= 1e-5 * float(whole.abs().max())


@pytest.mark.parametrize("frames,window,overlap", [(10, 20, 4), (100, 20, 4), (47, 20, 4), (39, 20, 4), (1000, 600, 120), (601, 600, 60)])
def test_window_plan_covers_the_clip_with_the_overlap(frames, window, overlap):
    plan = wav2vec.plan_windows(frames, window, overlap)
    assert plan[0][0] == 0 and plan[-1][1] == frames
    assert all(b - a == min(window, frames) for a, b in plan)
    assert all(b0 - a1 >= overlap for (_, b0), (a1, _) in zip(plan, plan[1:]))


def test_windowed_mesh_deviation_is_small(tiny_models):
    """A clip longer than a small test limit: windowed vs whole-clip pass, measured and bounded."""
    a2m, _ = tiny_models
    f = _features(24.0)
    whole = inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=None)
    win = inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=5.0, window_seconds=8.0, overlap_seconds=2.0)
    assert win.shape == whole.shape
    err = float(np.abs(win - whole).max())
    rel = err / float(np.abs(whole).max())
    print(f"[long] windowed vs whole Audio2Mesh (tiny, 24 s, 8 s windows, 2 s overlap): max abs {err:.3g} cm, {rel:.3%} of the largest offset")
    assert 0 < err and rel < 0.02


def test_long_clip_never_runs_the_encoder_on_more_than_a_window(tiny_models, monkeypatch):
    """Memory: the transformer (O(T^2) attention) and the conv stack only ever see a window / a piece."""
    a2m, _ = tiny_models
    f = _features(21.0)
    window = inference.mesh_window(f, whole_clip_seconds=5.0, window_seconds=4.0, overlap_seconds=1.0)
    assert window == (120, 30)
    seen_frames, seen_samples = [], []
    transformer, convs = a2m.audio_encoder.encoder, a2m.audio_encoder.feature_extractor.conv_layers

    def frames_hook(_module, args):
        seen_frames.append(args[0].shape[1])

    def samples_hook(_module, args):
        seen_samples.append(args[0].shape[-1])

    handles = [transformer.register_forward_pre_hook(frames_hook), convs[0].register_forward_pre_hook(samples_hook),
               convs[0].conv.register_forward_pre_hook(samples_hook)]
    try:
        inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=5.0, window_seconds=4.0, overlap_seconds=1.0)
    finally:
        for h in handles:
            h.remove()
    assert seen_frames and max(seen_frames) <= 120 and len(seen_frames) == len(wav2vec.plan_windows(f.num_frames, 120, 30))
    piece_samples = (wav2vec.CONV_PIECE_FRAMES - 1) * 320 + 400
    assert seen_samples and max(seen_samples) <= piece_samples < f.input_values.shape[0]
    # the whole-clip pass (the default below the limit) does see the whole clip
    seen_frames.clear()
    handle = transformer.register_forward_pre_hook(frames_hook)
    try:
        inference.predict_mesh_offsets(a2m, _features(3.0))
    finally:
        handle.remove()
    assert seen_frames == [90]


@pytest.mark.parametrize("seconds", [0.3, 10.0, 15.0, 21.4])
def test_batched_pose_decoding_equals_chunk_by_chunk(tiny_models, seconds):
    _, a2p = tiny_models
    f = _features(seconds, seed=3)
    steps = []
    one = inference.predict_raw_poses(a2p, f, style_id=11, batched=False)
    batch = inference.predict_raw_poses(a2p, f, style_id=11, progress=lambda n, total: steps.append((n, total)))
    assert [c.shape for c in batch] == [c.shape for c in one]
    err = max(float(np.abs(a - b).max()) for a, b in zip(one, batch))
    print(f"[long] batched vs chunk-by-chunk Audio2Pose ({seconds} s, {len(one)} chunks): {err:.3g}")
    assert err < 1e-4
    # progress: frames done, increasing, ending at the clip's frame count
    assert steps[-1] == (f.num_frames, f.num_frames)
    assert all(b[0] > a[0] for a, b in zip(steps, steps[1:]))


def test_batched_pose_decoding_in_groups(tiny_models):
    _, a2p = tiny_models
    f = _features(26.0, seed=4)
    full = inference.predict_raw_poses(a2p, f, style_id=2)
    grouped = inference.predict_raw_poses(a2p, f, style_id=2, max_batch=2)
    assert len(full) == 5
    assert max(float(np.abs(a - b).max()) for a, b in zip(full, grouped)) < 1e-4


def test_batched_decoder_with_mixed_lengths_equals_generate(tiny_models):
    _, a2p = tiny_models
    lengths = [7, 30, 1, 30, 18]
    gen = torch.Generator().manual_seed(5)
    with torch.inference_mode():
        xs = [torch.randn(1, int(n / 30 * 16000) + 400, generator=gen) for n in lengths]
        mems = [a2p.encode_audio(x, n)[0] for x, n in zip(xs, lengths)]
        memory = torch.zeros(len(lengths), max(lengths), mems[0].shape[-1])
        for b, m in enumerate(mems):
            memory[b, : m.shape[0]] = m
        out = a2p.generate_batched(memory, lengths, 9)
        for b, (x, n) in enumerate(zip(xs, lengths)):
            want = a2p.generate(x, n, 9)[0]
            assert float((out[b, :n] - want).abs().max()) < 1e-4
            assert not out[b, n:].any()


@pytest.mark.golden
def test_batched_pose_decoding_on_the_golden_case():
    folder, case = load_case("audio_stage1")
    from scipy.io import wavfile

    sr, data = wavfile.read(folder / "audio.wav")
    wave = torch.from_numpy(data.astype(np.float32) / 32768.0)[None, None]
    values, frames = feats.prepare_audio(wave, sr)
    a2p = models.load_audio2pose(read_state_dict(folder / "audio2pose.pt"), folder / "audio2pose.pt")
    raw = inference.predict_raw_poses(a2p, AudioFeatures(values, frames), style_id=case["inputs"]["id_seed"], batched=True)
    for k, chunk in enumerate(raw):
        report(f"batched a2p_raw_chunk{k}", float(np.abs(chunk - np.load(folder / f"a2p_raw_chunk{k}.npy")).max()), tol(case["tolerance"]["a2p_raw_chunk*"]))
