"""No shipped workflow holds a whole video as IMAGE: long videos stream from disk to disk.

A ten-minute clip is 56.6 GB of 512x512 pose frames or 448 GB of 1080p frames as float32 IMAGE, so the shipped
workflows read videos through the pack's footage (VIDEO in), write them a chunk at a time (Decode To Video, Paste
Back To Video, Pose Video), and keep IMAGE for a few preview frames only.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
PROMPTS = REPO / "tests" / "e2e" / "prompts"

#: nodes that turn a whole clip into an IMAGE batch (or need one)
WHOLE_CLIP_AS_IMAGE = {
    "VAEDecode": "decodes every frame at once: use AniPortrait Decode To Video or Paste Back To Video",
    "CreateVideo": "needs every frame as IMAGE: use AniPortrait Decode To Video, Paste Back To Video or Pose Video",
    "GetVideoComponents": "decodes the whole video into RAM: connect the VIDEO to the AniPortrait node itself",
    "AniPortraitDecodeFrames": "decodes every frame into RAM: use Decode To Video or Paste Back To Video",
    "AniPortraitPasteBack": "holds every pasted frame in RAM: use AniPortrait Paste Back To Video",
}
#: most pose images a preview may draw
PREVIEW_FRAMES = 64


def whole_clip_problems(prompt: dict) -> list[str]:
    """What in an API prompt would hold a whole video as IMAGE, one line each."""
    problems = [f"{node} {spec['class_type']}: {WHOLE_CLIP_AS_IMAGE[spec['class_type']]}"
                for node, spec in prompt.items() if spec["class_type"] in WHOLE_CLIP_AS_IMAGE]
    for node, spec in prompt.items():
        if spec["class_type"] == "AniPortraitRenderPoseImages":
            count = spec["inputs"].get("max_frames", 0)
            if not 0 < count <= PREVIEW_FRAMES:
                problems.append(f"{node} Render Pose Images draws {count or 'every'} frame(s): a preview draws at most "
                                f"{PREVIEW_FRAMES}; use AniPortrait Pose Video for the whole clip")
    return problems


def test_the_check_finds_a_whole_clip_held_as_image():
    prompt = {"1": {"class_type": "GetVideoComponents", "inputs": {}},
              "2": {"class_type": "AniPortraitRenderPoseImages", "inputs": {"landmarks": ["9", 0]}},
              "3": {"class_type": "CreateVideo", "inputs": {}},
              "4": {"class_type": "AniPortraitRenderPoseImages", "inputs": {"max_frames": 16}}}
    assert [p.split(":")[0] for p in whole_clip_problems(prompt)] == ["1 GetVideoComponents", "3 CreateVideo",
                                                                     "2 Render Pose Images draws every frame(s)"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_streams_whole_videos(workflow):
    prompt = json.loads((PROMPTS / f"{workflow.stem}_api.json").read_text())
    assert not whole_clip_problems(prompt), "\n".join(whole_clip_problems(prompt))
    ui_types = {node["type"] for node in json.loads(workflow.read_text())["nodes"]}
    assert not ui_types & set(WHOLE_CLIP_AS_IMAGE), sorted(ui_types & set(WHOLE_CLIP_AS_IMAGE))
    assert "SaveVideo" in ui_types, "every shipped workflow ends in a video"
