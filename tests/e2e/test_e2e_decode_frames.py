"""End to end: the audio-to-video prompt decoded to frames (AniPortrait Decode Frames -> core Create Video) instead of
Decode To Video: the IMAGE route the paste-back workflows take."""
from __future__ import annotations

import pytest

from support.media import frames_at_30fps
from support.prompts import video_prompt
from support.reports import saved_mp4

pytestmark = pytest.mark.e2e


def test_decode_frames_feeds_core_create_video(stage2_models):
    server = stage2_models
    prompt = video_prompt(size=(64, 64), steps=2)
    assert prompt["18"]["class_type"] == "AniPortraitDecodeToVideo"
    prompt["18"] = {"class_type": "AniPortraitDecodeFrames", "inputs": {"samples": ["17", 0], "vae": ["15", 0], "chunk_frames": 8}}
    prompt["19"] = {"class_type": "CreateVideo", "inputs": {"images": ["18", 0], "fps": 30.0, "audio": ["2", 0]}}
    prompt["20"]["inputs"]["video"] = ["19", 0]
    video = saved_mp4(server, server.run(prompt, timeout=900), "20")
    assert video["audio_streams"] == 1, "the mp4 must carry the audio track"
    assert video["codec"] == "h264" and video["size"] == (64, 64)
    assert video["frames"] == frames_at_30fps(server.input_dir / "short_speech.wav")
