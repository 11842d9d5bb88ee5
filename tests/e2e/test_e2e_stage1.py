"""End to end: the vendored ComfyUI server runs the stage-1 API prompt (tests/e2e/prompts/) with tiny random models."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from aniportrait_lib.face import renderer

from support.comfy_server import execution_error, load_workflow, unique_prefix
from support.media import frames_at_30fps
from support.reports import assert_missing_file_reported_once, assert_plain_user_error, node_text, saved_mp4

pytestmark = pytest.mark.e2e

NODE_IDS = [
    "AniPortraitLoadAudioModels", "AniPortraitLoadFaceLandmarker", "AniPortraitFaceAnalysis", "AniPortraitAudioFeatures",
    "AniPortraitAudio2Mesh", "AniPortraitAudio2Pose", "AniPortraitProjectLandmarks", "AniPortraitRenderPoseImages",
    "AniPortraitVideoPoseTemplate", "AniPortraitLoadPoseTemplate", "AniPortraitSavePoseTemplate", "AniPortraitApplyPoseTemplate",
    "AniPortraitFaceReenactment", "AniPortraitLoadVideoModel", "AniPortraitVideoConditioning", "AniPortraitSampler",
    "AniPortraitEditMotion", "AniPortraitShiftMotion", "AniPortraitAddBlinks", "AniPortraitFaceCrop", "AniPortraitPasteBack",
    "AniPortraitAlignVideoToAudio", "AniPortraitVideoHeadMotion", "AniPortraitFaceFromPoints",
]


def _stage1_prompt(changes: dict | None = None) -> dict:
    prompt = copy.deepcopy(load_workflow("aniportrait_stage1_api.json"))
    prompt["11"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/pose")
    prompt["13"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/pose_video")
    for (node, key), value in (changes or {}).items():
        prompt[node]["inputs"][key] = value
    return prompt


def test_every_node_is_registered(server):
    info = server.object_info()
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, f"nodes missing from /object_info: {missing}"
    for n in NODE_IDS:
        assert info[n]["category"].startswith("AniPortrait")


def test_stage1_workflow_renders_lip_coloured_frames(server):
    history = server.run(_stage1_prompt())
    err = execution_error(history)
    assert err is None, err and err.get("exception_message")
    assert history["status"]["status_str"] == "success"
    images = history["outputs"]["11"]["images"]
    expected_frames = frames_at_30fps(server.input_dir / "aniportrait_speech.wav")
    assert len(images) == min(16, expected_frames)  # a preview: the first 16 frames
    assert f"-> {expected_frames} frames at 30 fps" in node_text(history, "6")

    palette = {tuple(p["color"]) for p in renderer.pose_image_style()["parts"]}
    lips = {tuple(p["color"]) for p in renderer.pose_image_style()["parts"] if p["name"].startswith("lips")}
    for entry in (images[0], images[len(images) // 2], images[-1]):
        frame = np.asarray(Image.open(server.output_dir / entry["subfolder"] / entry["filename"]).convert("RGB"))
        assert frame.shape == (512, 512, 3)
        colours = {tuple(int(c) for c in px) for px in np.unique(frame.reshape(-1, 3), axis=0)} - {(0, 0, 0)}
        assert colours and colours <= palette, f"unexpected colours {sorted(colours - palette)[:5]}"
        assert lips <= colours, f"lip colours not drawn: {sorted(lips - colours)}"

    video = saved_mp4(server, history, "13")  # every pose frame, drawn and encoded in chunks, with the speech
    assert video["frames"] == expected_frames and video["fps"] == 30.0 and video["audio_streams"] == 1
    assert video["size"] == (512, 512)


def test_image_without_face_gets_clear_error_and_server_survives(server):
    history = server.run(_stage1_prompt({("1", "image"): "grey.png"}))
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitFaceAnalysis"
    assert "no face" in err["exception_message"].lower()
    assert_plain_user_error(err)
    assert server.alive()


def test_batch_of_reference_images_uses_the_first_and_says_so(server):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "aniportrait_reference.png"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}},
        "4": {"class_type": "AniPortraitLoadFaceLandmarker", "inputs": {"model_name": "face_landmarker.task"}},
        "5": {"class_type": "AniPortraitFaceAnalysis", "inputs": {"face_landmarker": ["4", 0], "image": ["2", 0], "width": 512, "height": 512}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 1]}},
    }
    history = server.run(prompt)
    err = execution_error(history)
    assert err is None, err and err.get("exception_message")
    assert "the reference image input holds 3 images; only the first one is used." in node_text(history, "5")
    assert len(history["outputs"]["6"]["images"]) == 1


@pytest.mark.parametrize("node,input_name", [("3", "audio2mesh_name"), ("3", "audio2pose_name"), ("4", "model_name")])
def test_missing_model_file_is_reported_once_naming_file_and_folder(server, node, input_name):
    prompt = _stage1_prompt({(node, input_name): f"missing_{input_name}.pt"})
    history = server.run(prompt)
    assert_missing_file_reported_once(history, prompt[node]["class_type"], prompt[node]["inputs"], input_name,
                                      server.models_dir / "aniportrait")
    assert server.alive()


def test_checkpoint_with_wrong_keys_names_them(server):
    history = server.run(_stage1_prompt({("3", "audio2mesh_name"): "broken_audio2mesh.pt"}))
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitLoadAudioModels"
    msg = err["exception_message"]
    assert "broken_audio2mesh.pt" in msg and "in_fn.weightt" in msg and "in_fn.weight " in msg
    assert_plain_user_error(err)
    assert server.alive()


def test_empty_audio_gets_clear_error(server):
    prompt = _stage1_prompt()
    prompt["2"] = {"class_type": "EmptyAudio", "inputs": {"duration": 0.0, "sample_rate": 16000, "channels": 1}}
    history = server.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitAudioFeatures"
    assert "empty" in err["exception_message"].lower()
    assert_plain_user_error(err)
    assert server.alive()
