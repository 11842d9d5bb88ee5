"""End to end: the conditioning's two pose inputs. The shipped audio-to-video prompt feeds it landmarks (drawn window
by window, no IMAGE batch of every pose frame); Render Pose Images' IMAGE batch works too, and neither is a clear
error."""
from __future__ import annotations

import pytest

from support.comfy_server import execution_error
from support.media import frames_at_30fps
from support.prompts import video_prompt
from support.reports import assert_plain_user_error, saved_mp4

pytestmark = pytest.mark.e2e


def _prompt() -> dict:
    """The shipped audio2video API prompt at 72x64, 2 steps, the short speech (support.prompts.video_prompt)."""
    prompt = video_prompt(size=(72, 64))
    assert prompt["22"]["class_type"] == "AniPortraitVideoConditioning" and prompt["22"]["inputs"]["landmarks"] == ["9", 0]
    return prompt


def test_conditioning_fed_by_pose_images_writes_the_full_length_video(stage2_models):
    server = stage2_models
    prompt = _prompt()
    conditioning = prompt["22"]["inputs"]
    del conditioning["landmarks"]
    conditioning["pose_images"] = ["10", 0]  # Render Pose Images, every frame (the shipped preview draws 16)
    prompt["10"]["inputs"]["max_frames"] = 0
    video = saved_mp4(server, server.run(prompt, timeout=900), "20")
    assert video["audio_streams"] == 1, "the mp4 must carry the audio track"
    assert video["size"] == (72, 64)
    assert video["frames"] == frames_at_30fps(server.input_dir / "short_speech.wav")


def test_conditioning_without_a_pose_input_is_a_clear_execution_error(stage2_models):
    prompt = _prompt()
    del prompt["22"]["inputs"]["landmarks"]
    history = stage2_models.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitVideoConditioning"
    assert_plain_user_error(err)
    assert "connect either pose_images" in err["exception_message"] and "neither is connected" in err["exception_message"]
    assert stage2_models.alive()
