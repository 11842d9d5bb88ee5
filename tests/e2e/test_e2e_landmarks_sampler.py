"""End to end: the audio-to-video prompt with the sampler fed by Project Landmarks directly (no Render Pose
Images, so no IMAGE batch of every pose frame exists): same video length, an mp4 with the audio."""
from __future__ import annotations

import copy
import math
import wave

import av
import pytest

from comfy_server import execution_error, load_workflow, unique_prefix
from conftest import assert_plain_user_error

pytestmark = pytest.mark.e2e


def _frames_at_30fps(path) -> int:
    with wave.open(str(path)) as w:
        n, rate = w.getnframes(), w.getframerate()
    return math.ceil(round(n * 16000 / rate) / 16000 * 30)


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
    w, h = size
    for node in ("5", "9", "17"):  # face analysed at the video size, as the original
        prompt[node]["inputs"]["width"], prompt[node]["inputs"]["height"] = w, h
    sampler["steps"] = steps
    prompt["20"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/landmarks_video")
    return prompt


def test_sampler_fed_by_landmarks_writes_the_full_length_video(stage2_models):
    server = stage2_models
    prompt = _landmarks_prompt()
    assert not any(node["class_type"] == "AniPortraitRenderPoseImages" for node in prompt.values())
    history = server.run(prompt, timeout=900)
    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"), err.get("traceback"))
    video = history["outputs"]["20"]["images"][0]
    path = server.output_dir / video["subfolder"] / video["filename"]
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    expected = _frames_at_30fps(server.input_dir / "short_speech.wav")
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        assert len(container.streams.audio) == 1, "the mp4 must carry the audio track"
        frames = sum(1 for _ in container.decode(vstream))
        assert (vstream.codec_context.width, vstream.codec_context.height) == (72, 64)
    assert frames == expected


def test_sampler_without_a_pose_input_is_a_clear_execution_error(stage2_models):
    prompt = _landmarks_prompt()
    del prompt["17"]["inputs"]["landmarks"]
    history = stage2_models.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitLmk2VideoSampler"
    assert_plain_user_error(err)
    assert "connect either pose_images" in err["exception_message"] and "neither is connected" in err["exception_message"]
    assert stage2_models.alive()
