"""Audio2Mesh's mouth at rest in silence, through the nodes in-process: AudioFeatures (a core AUDIO of
speech, 1 s of silence, speech) -> Audio2Mesh with the rest inputs at their defaults, changed and off."""
from __future__ import annotations

import re
import shutil
import subprocess
import wave

import numpy as np
import pytest
import torch

from support.comfy_inprocess import comfy_image, ui_text
from support.paths import shared_assets_dir

REST_INPUTS = [("rest_in_pauses", True), ("pause_threshold_db", -30.0), ("min_pause_seconds", 0.3), ("rest_ease_seconds", 0.12)]


@pytest.fixture(scope="module")
def nodes(pack):
    from support import random_weights
    from aniportrait_pack.nodes import audio, face, loaders

    folder = pack.work_dir / "models" / "aniportrait"
    shutil.copyfile(shared_assets_dir() / "face_landmarker.task", folder / "face_landmarker.task")
    random_weights.save_audio_models(folder)
    return type("Nodes", (), dict(audio=audio, face=face, loaders=loaders))


@pytest.fixture(scope="module")
def setup(nodes, tmp_path_factory):
    """(Audio2Mesh model, reference face, features of speech + 1 s silence + speech at 22050 Hz)."""
    from skimage import data

    landmarker = nodes.loaders.LoadFaceLandmarker.execute("face_landmarker.task").result[0]
    face = nodes.face.FaceAnalysis.execute(landmarker, comfy_image(np.ascontiguousarray(data.astronaut()[10:220, 120:330]))).result[0]
    mesh_model = nodes.loaders.LoadAudioModels.execute("audio2mesh.pt", "none").result[0]
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Hello there this is what I say"], check=True, timeout=60)
    with wave.open(str(path)) as w:
        said = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
        rate = w.getframerate()
    loud = np.flatnonzero(np.abs(said) > 1e-3)
    said = said[loud[0]:loud[-1] + 1]
    clip = np.concatenate([said, np.zeros(rate, np.float32), said])
    out = nodes.audio.AudioFeatures.execute({"waveform": torch.from_numpy(clip)[None, None], "sample_rate": rate}, 30.0)
    return mesh_model, face, out.result[0]


def test_rest_inputs_come_last_optional_with_defaults(nodes):
    inputs = nodes.audio.Audio2Mesh.define_schema().inputs
    assert [i.id for i in inputs[:4]] == ["audio2mesh", "audio_features", "face", "whole_clip_seconds"]
    assert [(i.id, i.default) for i in inputs[4:]] == REST_INPUTS
    assert all(i.optional for i in inputs[3:])


def test_audio2mesh_rests_the_mouth_in_the_pause_and_says_so(nodes, setup):
    mesh_model, face, features = setup
    saved_workflow = nodes.audio.Audio2Mesh.execute(mesh_model, features, face)  # a workflow saved before the rest inputs
    on = saved_workflow.result[0].meshes
    off_out = nodes.audio.Audio2Mesh.execute(mesh_model, features, face, rest_in_pauses=False)
    off = off_out.result[0].meshes
    assert ui_text(off_out) == ""
    text = ui_text(saved_workflow)
    assert re.fullmatch(rf"mouth at rest in 1 pause: (0\.9\d|1\.00) s of {features.num_frames / 30:.2f} s", text), text

    changed = np.flatnonzero(np.any(on != off, axis=(1, 2)))
    first_silent = int(np.ceil((features.num_frames - 30) / 2))  # the two sentences are as long: silence in the middle
    assert changed.size >= 25 and changed.min() >= first_silent - 1 and changed.max() <= first_silent + 30
    assert np.array_equal(on[: changed.min()], off[: changed.min()]) and np.array_equal(on[changed.max() + 1:], off[changed.max() + 1:])
    at_rest = on[changed.min() + 4: changed.max() - 3]
    opening = np.linalg.norm(at_rest[:, 13] - at_rest[:, 14], axis=1)
    rest_opening = np.linalg.norm(face.mesh_canonical[13] - face.mesh_canonical[14])
    assert np.all(np.abs(opening - rest_opening) <= 0.05 * rest_opening)


def test_the_settings_reach_the_pause_finder(nodes, setup):
    mesh_model, face, features = setup
    long_minimum = nodes.audio.Audio2Mesh.execute(mesh_model, features, face, 30.0, True, -30.0, 2.0, 0.12)
    assert ui_text(long_minimum) == "no pause of 2 s or more (-30 dB below the speech): the mouth moves throughout"
    plain = nodes.audio.Audio2Mesh.execute(mesh_model, features, face, rest_in_pauses=False).result[0]
    assert np.array_equal(long_minimum.result[0].meshes, plain.meshes)
    with pytest.raises(ValueError, match=r"^the pause threshold is in dB below the speech level, so it must be below 0; got 3$") as info:
        nodes.audio.Audio2Mesh.execute(mesh_model, features, face, 30.0, True, 3.0, 0.3, 0.12)
    assert type(info.value) is ValueError
