"""End to end: LoadImage + LoadAudio -> stage 1 -> Video Conditioning -> AniPortrait Sampler -> Decode To Video ->
SaveVideo -> mp4; and a workflow saved with the retired stage-2 nodes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.comfy_server import execution_error, load_workflow, unique_prefix
from support.media import frames_at_30fps
from support.prompts import resize_prompt, video_prompt
from support.reports import assert_missing_file_reported_once, assert_plain_user_error, saved_mp4

pytestmark = pytest.mark.e2e


def test_stage2_nodes_registered_with_the_retired_ones_hidden(server):
    info = server.object_info()
    sampler_inputs = info["AniPortraitSampler"]["input"]["required"]
    assert [sampler_inputs[n][0] for n in ("model", "positive", "negative", "latent_image")] == [
        "MODEL", "CONDITIONING", "CONDITIONING", "LATENT"]
    assert info["AniPortraitSampler"]["output"] == ["LATENT"]
    for retired in ("AniPortraitLoadLmk2VideoModels", "AniPortraitLmk2VideoSampler"):
        assert info[retired]["deprecated"] is True  # the frontend leaves deprecated nodes out of its search


def test_a_workflow_with_the_retired_nodes_still_runs_and_names_the_replacement(stage2_models):
    """The audio-to-video workflow as saved before the stage-2 nodes were merged (the API twin of that version, with
    core VAE Decode + Create Video): it still makes its mp4, and both retired nodes say what replaces them."""
    server = stage2_models
    old = json.loads((Path(__file__).parent / "retired" / "aniportrait_audio2video_api.json").read_text())
    resize_prompt(old, (64, 64), ("5", "9", "17"))
    old["2"]["inputs"]["audio"] = "short_speech.wav"
    old["17"]["inputs"]["steps"] = 2
    old["20"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/retired")
    history = server.run(old, timeout=900)
    video = saved_mp4(server, history, "20")
    assert video["frames"] == frames_at_30fps(server.input_dir / "short_speech.wav")
    replacement = ("replace it with AniPortrait Load Video Model (model) and AniPortrait Video Conditioning (positive, "
                   "negative, latent) into AniPortrait Sampler, as in workflows/aniportrait_audio2video.json.")
    for node_id, name in (("17", "AniPortrait Lmk2Video Sampler"), ("14", "AniPortrait Load Lmk2Video Models")):
        assert history["outputs"][node_id]["text"] == [f"{name} is retired: {replacement}"]


def test_audio_to_video_workflow_writes_mp4_with_audio(stage2_models):
    server = stage2_models
    prompt = video_prompt(size=(72, 64))
    video = saved_mp4(server, server.run(prompt, timeout=900), "20")
    assert video["audio_streams"] == 1, "the mp4 must carry the audio track"
    assert video["size"] == (72, 64) and abs(video["fps"] - 30.0) < 1e-6
    assert video["frames"] == frames_at_30fps(server.input_dir / "short_speech.wav")


def test_size_not_multiple_of_8_is_a_clear_execution_error(stage2_models):
    prompt = video_prompt(size=(64, 64))
    prompt["22"]["inputs"]["width"] = 68  # stage 1 stays valid: the conditioning is the one to say it
    history = stage2_models.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitVideoConditioning"
    assert_plain_user_error(err)
    msg = err["exception_message"]
    assert "multiples of 8 (got 68x64)" in msg, msg
    assert stage2_models.alive()


def test_context_overlap_not_below_context_frames_is_a_clear_execution_error(stage2_models):
    prompt = video_prompt()
    prompt["17"]["inputs"]["context_frames"] = 4
    prompt["17"]["inputs"]["context_overlap"] = 4
    history = stage2_models.run(prompt)
    err = execution_error(history)
    assert err is not None and err["node_type"] == "AniPortraitSampler"
    assert_plain_user_error(err)
    assert "context_overlap (4) must be 0 or more and smaller than context_frames (4)" in err["exception_message"]
    assert stage2_models.alive()


# ids without "ui" (as in pose_g-ui-der) so that `-k "not ui"` keeps them
@pytest.mark.parametrize("input_name", ["reference_unet_name", "denoising_unet_name", "motion_module_name", "pose_guider_name"],
                         ids=lambda name: name.split("_")[0])
def test_missing_stage2_file_is_reported_once_naming_file_and_folder(stage2_models, input_name):
    prompt = video_prompt()
    prompt["14"]["inputs"][input_name] = f"missing_{input_name}.pth"
    history = stage2_models.run(prompt)
    assert_missing_file_reported_once(history, "AniPortraitLoadVideoModel", prompt["14"]["inputs"], input_name,
                                      stage2_models.models_dir / "aniportrait")
    assert stage2_models.alive()


@pytest.mark.parametrize("name", ["aniportrait_stage1", "aniportrait_audio2video", "aniportrait_audio2video_ksampler", "aniportrait_pose_template", "aniportrait_reenactment",
                                  "aniportrait_photo_paste_back", "aniportrait_dubbing", "aniportrait_two_speakers"])
def test_ui_workflows_match_their_api_twins_and_the_live_nodes(server, name):
    """The drag-and-drop UI files are what tests/support/make_ui_workflow.py makes from the API twin and /object_info."""
    from support.make_ui_workflow import api_to_ui

    from support.comfy_server import REPO_ROOT

    api = load_workflow(f"{name}_api.json")
    committed = json.loads((REPO_ROOT / "workflows" / f"{name}.json").read_text())
    assert committed == api_to_ui(api, server.object_info()), f"regenerate workflows/{name}.json with tests/support/make_ui_workflow.py"
    graph_nodes = [n["type"] for n in committed["nodes"] if n["type"] not in ("Note", "MarkdownNote")]  # notes are UI-only
    assert sorted(graph_nodes) == sorted(n["class_type"] for n in api.values())


def test_cancel_stops_the_sampler_promptly_and_the_server_keeps_working(stage2_models):
    import time

    import requests

    server = stage2_models
    log_start = server.log.stat().st_size
    prompt = video_prompt(size=(64, 64), steps=200, audio="aniportrait_speech.wav")
    queued = server.queue(prompt)
    assert queued.status_code == 200, queued.text
    pid = queued.json()["prompt_id"]
    deadline = time.time() + 300
    while b"AniPortrait sampling:" not in server.log.read_bytes()[log_start:]:  # the sampler loop has started
        assert time.time() < deadline, "the sampler never started"
        time.sleep(0.5)
    time.sleep(2.0)
    requests.post(f"{server.url}/interrupt", timeout=30)
    cancelled_at = time.time()
    while pid not in (history := requests.get(f"{server.url}/history/{pid}", timeout=30).json()):
        assert time.time() - cancelled_at < 60, "cancel did not stop the sampler within 60 s"
        time.sleep(0.5)
    kinds = [kind for kind, _ in history[pid]["status"]["messages"]]
    assert "execution_interrupted" in kinds
    assert "20" not in history[pid].get("outputs", {}), "an interrupted run must not write a video"
    assert server.alive()


def test_the_server_serves_each_nodes_help_page_where_the_frontend_asks(server):
    """The frontend asks ``/extensions/<pack folder>/docs/<node id>.md``; the folder is the node's module."""
    import requests

    info = server.object_info()["AniPortraitSampler"]
    folder = info["python_module"].split(".")[-1]
    page = requests.get(f"{server.url}/extensions/{folder}/docs/AniPortraitSampler.md", timeout=30)
    assert page.status_code == 200 and page.text.startswith("# AniPortrait Sampler")
