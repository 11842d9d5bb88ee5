"""Editing the API-format prompts of tests/e2e/prompts before a test queues them."""
from __future__ import annotations

import copy

from support.comfy_server import load_workflow, unique_prefix


def resize_prompt(prompt: dict, size: tuple[int, int], nodes: tuple[str, ...]) -> None:
    """Set width/height of ``nodes`` (the face analysis, the projection, the sampler: the face is analysed at
    the video size, as in the original)."""
    for node in nodes:
        prompt[node]["inputs"]["width"], prompt[node]["inputs"]["height"] = size


def video_prompt(size=(64, 64), steps=2, audio="short_speech.wav") -> dict:
    """The audio-to-video workflow at ``size`` with ``steps`` sampler steps, saving under a fresh prefix."""
    prompt = copy.deepcopy(load_workflow("aniportrait_audio2video_api.json"))
    prompt["2"]["inputs"]["audio"] = audio
    resize_prompt(prompt, size, ("5", "9", "22"))
    prompt["17"]["inputs"]["steps"] = steps
    prompt["20"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/video")
    return prompt


def node_id(prompt: dict, class_type: str) -> str:
    """The id of the one node of ``class_type`` in an API prompt."""
    ids = [k for k, node in prompt.items() if node["class_type"] == class_type]
    assert len(ids) == 1, f"{len(ids)} {class_type} nodes in the prompt"
    return ids[0]
