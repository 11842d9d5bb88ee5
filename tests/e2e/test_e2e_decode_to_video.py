"""End to end: stage 1 -> Lmk2Video sampler -> AniPortrait Decode To Video -> core SaveVideo -> mp4 with audio."""
from __future__ import annotations

import av
import pytest

from comfy_server import execution_error
from test_e2e_stage2 import _frames_at_30fps, _video_prompt

pytestmark = pytest.mark.e2e


def test_decode_to_video_feeds_core_save_video(stage2_models):
    server = stage2_models
    prompt = _video_prompt(size=(64, 64), steps=2)
    del prompt["19"]  # core CreateVideo: replaced by the streaming node
    prompt["18"] = {"class_type": "AniPortraitDecodeToVideo",
                    "inputs": {"samples": ["17", 0], "vae": ["15", 0], "fps": 30.0, "chunk_frames": 8,
                               "quality": "h264", "crf": 19, "audio": ["2", 0]}}
    prompt["20"]["inputs"]["video"] = ["18", 0]
    history = server.run(prompt, timeout=900)
    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"), err.get("traceback"))
    video = history["outputs"]["20"]["images"][0]
    path = server.output_dir / video["subfolder"] / video["filename"]
    assert path.suffix == ".mp4" and path.stat().st_size > 0
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        assert len(container.streams.audio) == 1, "the mp4 must carry the audio track"
        assert vstream.codec.name == "h264"
        assert (vstream.codec_context.width, vstream.codec_context.height) == (64, 64)
        frames = sum(1 for _ in container.decode(vstream))
    assert frames == _frames_at_30fps(server.input_dir / "short_speech.wav")
