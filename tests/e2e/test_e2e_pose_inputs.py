"""End to end: the audio-to-video prompt with the sampler fed by Project Landmarks directly (no Render Pose
Images, so no IMAGE batch of every pose frame exists): same video length, an mp4 with the audio."""
from __future__ import annotations

import copy

import pytest

from support.comfy_server import execution_error, load_workflow, unique_prefix
from support.media import frames_at_30fps
from support.prompts import resize_prompt
from support.reports import assert_plain_user_error, saved_mp4

pytestmark = pytest.mark.e2e


def _landmarks_prompt(size=(72, 64), steps=2, audio="short_speech.wav") -> dict:
    """The shipped audio2video API prompt, shrunk like test_e2e_stage2's, with the sampler's pose input taken
    from Project Landmarks (node 9) and the pose-image nodes (Render Pose Images 10, its preview 21) removed."""
    prompt = copy.deepcopy(load_workflow("aniportrait_audio2video_api.json"))
    assert prompt["10"]["class_type"] == "AniPortraitRenderPoseImages" and prompt["9"]["class_type"] == "AniPortraitProjectLandmarks"
    for node in [k for k, v in prompt.items() if k != "17" and ["10", 0] in v["inputs"].values()] + ["10"]:
        del prompt[node]  # Render Pose Images and what shows its images
    sampler = prompt["17"]["inputs"]
    del sampler["pose_images"]
    sampler["landmarks"] = ["9", 0]
    prompt["2"]["inputs"]["audio"] = audio
    resize_prompt(prompt, size, ("5", "9", "17"))
    sampler["steps"] = steps
    prompt["20"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/landmarks_video")
    return prompt


def test_sampler_fed_by_landmarks_writes_the_full_length_video(stage2_models):
    server = stage2_models
    prompt = _landmarks_prompt()
    assert not any(node["class_type"] == "AniPortraitRenderPoseImages" for node in prompt.values())
    video = saved_mp4(server, server.run(prompt, timeout=900), "20")
    assert video["audio_streams"] == 1, "the mp4 must carry the audio track"
    assert video["size"] == (72, 64)
    assert video["frames"] == frames_at_30fps(server.input_dir / "short_speech.wav")


def test_sampler_without_a_pose_input_is_a_clear_execution_error(stage2_models):
    prompt = _landmarks_prompt()
    del prompt["17"]["inputs"]["landmarks"]
    history = stage2_models.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitLmk2VideoSampler"
    assert_plain_user_error(err)
    assert "connect either pose_images" in err["exception_message"] and "neither is connected" in err["exception_message"]
    assert stage2_models.alive()
