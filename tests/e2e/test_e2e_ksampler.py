"""End to end: the shipped KSampler workflow (AniPortrait MODEL + core Context Windows + core KSampler) through a
real server: speech + portrait -> stage 1 -> landmarks -> conditioning -> KSampler -> Decode To Video -> mp4."""
from __future__ import annotations

import copy

import pytest

from support.comfy_server import execution_error, load_workflow, unique_prefix
from support.media import frames_at_30fps
from support.prompts import resize_prompt
from support.reports import assert_plain_user_error, saved_mp4

pytestmark = pytest.mark.e2e


def _ksampler_prompt(size=(64, 64), steps=2, audio="short_speech.wav") -> dict:
    prompt = copy.deepcopy(load_workflow("aniportrait_audio2video_ksampler_api.json"))
    assert prompt["17"]["class_type"] == "KSampler" and prompt["22"]["class_type"] == "ContextWindowsManual"
    prompt["2"]["inputs"]["audio"] = audio
    resize_prompt(prompt, size, ("5", "9", "23"))
    prompt["17"]["inputs"]["steps"] = steps
    prompt["20"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/ksampler_video")
    return prompt


def test_ksampler_workflow_writes_the_full_length_video_with_audio(stage2_models):
    server = stage2_models
    prompt = _ksampler_prompt()
    video = saved_mp4(server, server.run(prompt, timeout=900), "20")
    assert video["audio_streams"] == 1, "the mp4 must carry the audio track"
    assert video["size"] == (64, 64)
    expected = frames_at_30fps(server.input_dir / "short_speech.wav")
    assert expected > 16, "the clip must be longer than one context window"
    assert video["frames"] == expected


def test_conditioning_without_a_pose_input_is_a_clear_execution_error(stage2_models):
    prompt = _ksampler_prompt()
    del prompt["23"]["inputs"]["landmarks"]
    history = stage2_models.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitVideoConditioning"
    assert_plain_user_error(err)
    assert err["exception_message"].startswith("connect either pose_images") and "to the conditioning node; neither is connected" in err["exception_message"], err["exception_message"]
    assert stage2_models.alive()
