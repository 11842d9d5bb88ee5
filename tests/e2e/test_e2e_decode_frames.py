"""End to end: stage 1 -> Lmk2Video sampler -> AniPortrait Decode To Video -> core SaveVideo -> mp4 with audio."""
from __future__ import annotations

import pytest

from support.media import frames_at_30fps
from support.prompts import video_prompt
from support.reports import saved_mp4

pytestmark = pytest.mark.e2e


def test_decode_to_video_feeds_core_save_video(stage2_models):
    server = stage2_models
    prompt = video_prompt(size=(64, 64), steps=2)
    del prompt["19"]  # core CreateVideo: replaced by the streaming node
    prompt["18"] = {"class_type": "AniPortraitDecodeToVideo",
                    "inputs": {"samples": ["17", 0], "vae": ["15", 0], "fps": 30.0, "chunk_frames": 8,
                               "quality": "h264", "crf": 19, "audio": ["2", 0]}}
    prompt["20"]["inputs"]["video"] = ["18", 0]
    video = saved_mp4(server, server.run(prompt, timeout=900), "20")
    assert video["audio_streams"] == 1, "the mp4 must carry the audio track"
    assert video["codec"] == "h264" and video["size"] == (64, 64)
    assert video["frames"] == frames_at_30fps(server.input_dir / "short_speech.wav")
