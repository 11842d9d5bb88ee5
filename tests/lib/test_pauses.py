"""A mouth at rest in silence: pauses found in speech-pause-speech audio (espeak-ng), Audio2Mesh offsets
(tiny random model) eased to the reference's mesh in them, speech frames untouched."""
from __future__ import annotations

import math
import subprocess
import wave

import numpy as np
import pytest

from aniportrait_lib.audio import features as feats
from aniportrait_lib.audio import inference, models, pauses
from aniportrait_lib.face.landmarker import FaceLandmarker
from aniportrait_lib.motion import rest
from aniportrait_lib.motion.build import motion_from_mesh_offsets

from support import random_weights

FPS = 30.0
UPPER_LIP, LOWER_LIP = 13, 14  # MediaPipe's inner-lip midpoints


def _espeak(text: str, path) -> tuple[np.ndarray, int]:
    """espeak-ng speech, float32 mono, its leading and trailing silence cut off (the test places the pauses)."""
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=60)
    with wave.open(str(path)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
        rate = w.getframerate()
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return x[loud[0]:loud[-1] + 1], rate


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    first, rate = _espeak("Hello there this is the first part of what I say", folder / "first.wav")
    second, rate2 = _espeak("and here I continue after a pause", folder / "second.wav")
    assert rate == rate2
    return first, second, rate


@pytest.fixture(scope="module")
def face(face_landmarker_path):
    from skimage import data

    with FaceLandmarker(face_landmarker_path) as lm:
        return lm.analyze(np.ascontiguousarray(data.astronaut()[10:220, 120:330]))


@pytest.fixture(scope="module")
def audio2mesh():
    return models.load_audio2mesh(random_weights.audio2mesh_state_dict(0))


def _gap(kind: str, seconds: float, rate: int) -> np.ndarray:
    n = int(round(seconds * rate))
    if kind == "zeros":
        return np.zeros(n, np.float32)
    return (10 ** (-50 / 20) * np.random.default_rng(0).standard_normal(n)).astype(np.float32)  # -50 dBFS room noise


def _clip(speech, kind: str = "zeros", gap_seconds: float = 1.0):
    """speech, pause, speech -> (features, first frame of the pause, first frame of the second speech)."""
    first, second, rate = speech
    wave_ = np.concatenate([first, _gap(kind, gap_seconds, rate), second])
    features = feats.audio_features(wave_, rate, FPS)
    pause_start = math.ceil(first.size / rate * FPS)  # the first frame with no sample of the first speech
    speech_again = math.floor((first.size + int(round(gap_seconds * rate))) / rate * FPS)  # first frame with second speech
    return features, pause_start, speech_again


def _lip_opening(meshes: np.ndarray) -> np.ndarray:
    return np.linalg.norm(meshes[..., UPPER_LIP, :] - meshes[..., LOWER_LIP, :], axis=-1)


@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_the_pause_is_found_between_the_two_sentences(speech, kind):
    features, pause_start, speech_again = _clip(speech, kind)
    found = pauses.find_pauses(features)
    assert len(found) == 1
    start, end = found[0]
    assert pause_start <= start and end <= speech_again, (found, pause_start, speech_again)  # never on a speech frame
    assert (end - start) / FPS >= 0.9  # of the 1 s pause (speech frames at both ends share samples with it)


@pytest.mark.parametrize("kind,gap", [("zeros", 1.0), ("noise", 1.0), ("zeros", 0.5), ("noise", 0.5)])
def test_the_mouth_rests_in_the_pause_and_speech_is_untouched(speech, face, audio2mesh, kind, gap):
    features, pause_start, speech_again = _clip(speech, kind, gap)
    offsets = inference.predict_mesh_offsets(audio2mesh, features)
    rested, found = rest.rest_in_pauses(offsets, features)
    off = motion_from_mesh_offsets(offsets, face, FPS).meshes
    on = motion_from_mesh_offsets(rested, face, FPS).meshes

    in_pause = np.zeros(features.num_frames, bool)
    for start, end in found:
        in_pause[start:end] = True
    assert np.array_equal(on[~in_pause], off[~in_pause])  # bit for bit
    assert not in_pause[:pause_start].any() and not in_pause[speech_again:].any()

    (start, end), = found
    ease = int(round(rest.DEFAULT_EASE_SECONDS * FPS))
    rest_opening = float(_lip_opening(face.mesh_canonical))
    held = slice(start + ease, end - ease)
    error_on = np.abs(_lip_opening(on[held]) - rest_opening) / rest_opening
    error_off = np.abs(_lip_opening(off[held]) - rest_opening) / rest_opening
    ramps = np.r_[start:start + ease, end - ease:end]
    print(f"[rest {kind} {gap:g} s] pause frames {start}-{end} (silence {pause_start}-{speech_again}), rest opening "
          f"{rest_opening:.4f} cm; held frames: opening {_lip_opening(on[held]).min():.4f}-{_lip_opening(on[held]).max():.4f} cm "
          f"(max error {error_on.max():.2%}), without rest {_lip_opening(off[held]).min():.4f}-"
          f"{_lip_opening(off[held]).max():.4f} cm (error {error_off.min():.1%}-{error_off.max():.1%}); ease frames "
          f"{np.round(_lip_opening(on[ramps]), 4).tolist()}")
    assert (end - start) / FPS >= gap - 1.5 / FPS  # all but the frames shared with speech
    assert held.stop - held.start >= (gap - 2 * rest.DEFAULT_EASE_SECONDS) * FPS - 2
    assert error_on.max() <= 0.05
    assert error_off.min() > 0.05  # the model's mouth is not at rest there by itself: the test bites
    # the ease goes monotonically from the speech frame's offsets to none and back
    size = np.linalg.norm(on - face.mesh_canonical, axis=(1, 2))
    assert np.all(np.diff(size[start - 1:start + ease + 1]) < 0) and np.all(np.diff(size[end - ease - 1:end + 1]) > 0)


def test_a_pause_shorter_than_the_minimum_is_untouched(speech, audio2mesh):
    features, pause_start, speech_again = _clip(speech, "zeros", gap_seconds=0.2)
    offsets = inference.predict_mesh_offsets(audio2mesh, features)
    rested, found = rest.rest_in_pauses(offsets, features, min_pause_seconds=0.3)
    assert found == [] and np.array_equal(rested, offsets)
    # the same gap is a pause when the minimum allows it
    assert pauses.find_pauses(features, min_pause_seconds=0.1) != []


def test_continuous_speech_is_unchanged(speech, audio2mesh):
    first, _, rate = speech
    features = feats.audio_features(first, rate, FPS)
    offsets = inference.predict_mesh_offsets(audio2mesh, features)
    rested, found = rest.rest_in_pauses(offsets, features)
    assert found == [] and np.array_equal(rested, offsets)


def test_silence_everywhere_is_all_rest(face, audio2mesh):
    features = feats.audio_features(np.zeros(2 * 16000, np.float32), 16000, FPS)
    offsets = inference.predict_mesh_offsets(audio2mesh, features)
    assert np.abs(offsets).max() > 0.01  # the model moves the face in silence
    rested, found = rest.rest_in_pauses(offsets, features)
    assert found == [(0, features.num_frames)]
    meshes = motion_from_mesh_offsets(rested, face, FPS).meshes
    assert np.array_equal(meshes, np.broadcast_to(face.mesh_canonical, meshes.shape))  # no ease at the clip's ends


def test_leading_silence_starts_at_rest_and_eases_out_before_speech(speech):
    first, _, rate = speech
    features = feats.audio_features(np.concatenate([_gap("zeros", 1.0, rate), first]), rate, FPS)
    found = pauses.find_pauses(features)
    assert found[0][0] == 0 and found[0][1] <= math.floor(FPS)
    weights = rest.rest_weights(found, features.num_frames, 4)
    assert weights[0] == 1.0 and 0 < weights[found[0][1] - 1] < 0.2 and not weights[found[0][1]:].any()


def test_ease_weights():
    w = rest.rest_weights([(10, 30), (40, 43), (50, 60)], 60, 4)
    assert not w[:10].any() and not w[30:40].any() and not w[43:50].any()
    assert np.allclose(w[10:14], 0.5 - 0.5 * np.cos(np.pi * np.arange(1, 5) / 5)) and np.all(w[14:26] == 1)
    assert np.allclose(w[26:30], w[10:14][::-1])
    assert 0 < w[40] < 1 and 0 < w[42] < 1 and w[41] == 1.0  # 3 frames: one-frame ramps
    assert np.all(w[50:54] < 1) and np.all(w[54:60] == 1)  # the clip's end: no ramp down
    assert np.all(rest.rest_weights([(10, 30)], 60, 0)[10:30] == 1)  # ease 0 = a cut


def test_levels_of_a_long_clip_take_one_float_per_frame():
    """Ten minutes at 30 fps: 18000 levels, read one frame at a time (the clip itself is the only big array)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    values = rng.standard_normal(600 * 16000).astype(np.float32)
    values[16000 * 300:16000 * 302] = 0.0  # 2 s of silence in the middle
    features = feats.AudioFeatures(values, feats.frame_count(values.size), FPS)
    tracemalloc.start()
    found = pauses.find_pauses(features)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found == [(9000, 9060)]
    assert peak < 2_000_000, peak  # bytes: levels and flags for 18000 frames, no copy of the 38 MB clip


@pytest.mark.parametrize("kwargs,message", [
    (dict(threshold_db=0.0), r"^the pause threshold is in dB below the speech level, so it must be below 0; got 0$"),
    (dict(min_pause_seconds=-1.0), r"^the minimum pause length must be 0 s or more; got -1$"),
    (dict(ease_seconds=float("nan")), r"^the ease into rest must be 0 s or more; got nan$"),
])
def test_bad_settings_are_plain_errors(kwargs, message):
    features = feats.audio_features(np.zeros(16000, np.float32), 16000, FPS)
    with pytest.raises(ValueError, match=message):
        rest.rest_in_pauses(np.zeros((features.num_frames, 468, 3), np.float32), features, **kwargs)
