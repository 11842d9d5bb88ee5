"""End to end: video-driven motion through LoadVideo: pose templates (vid2pose) and face reenactment (vid2vid)."""
from __future__ import annotations

import copy
import re
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from support.comfy_server import execution_error, load_workflow, unique_prefix
from support.golden import load_case, tolerance_numbers
from support.media import frames_at_30fps
from support.prompts import node_id
from support.reports import node_text, saved_mp4

pytestmark = pytest.mark.e2e


def _write_lossless_video(path, frames: list[np.ndarray], fps: float) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _tracking_note(history: dict, node: str) -> tuple[int, int]:
    """(frames with a face, frames) from the node's "face found in X of Y frames" note."""
    text = node_text(history, node)
    m = re.search(r"face found in (\d+) of (\d+) frames", text)
    assert m, f"no tracking note on node {node}: {text!r}"
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def head_video(server):
    """The vid2pose golden frames as a lossless video in the server's input folder."""
    folder, case = load_case("vid2pose")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "frames").glob("*.png"))]
    _write_lossless_video(server.input_dir / "head_motion.mkv", frames, case["inputs"]["fps"])
    return folder, case


def test_pose_template_from_a_video_drives_the_head(server, head_video):
    folder, case = head_video
    prompt = copy.deepcopy(load_workflow("aniportrait_pose_template_api.json"))
    save_template = node_id(prompt, "AniPortraitSavePoseTemplate")
    save_images = node_id(prompt, "SaveImage")
    prompt[save_template]["inputs"]["filename_prefix"] = prefix = unique_prefix("aniportrait/pose_template")
    prompt[save_images]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/templated_pose")
    prompt[node_id(prompt, "SaveVideo")]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/templated_pose_video")
    history = server.run(prompt)
    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"))

    saved = sorted(server.output_dir.glob(prefix + "_*.npy"))
    assert len(saved) == 1
    template = np.load(saved[0])
    want = np.load(folder / "pose_temp.npy")
    assert template.shape == want.shape
    rot_tol, trans_tol = tolerance_numbers(case["tolerance"]["other mediapipe version"])[:2]
    assert np.abs(template[:, :3] - want[:, :3]).max() <= rot_tol
    assert np.abs(template[:, 3:] - want[:, 3:]).max() <= trans_tol
    video_frames = len(list((folder / "frames").glob("*.png")))
    assert _tracking_note(history, node_id(prompt, "AniPortraitVideoPoseTemplate")) == (video_frames, video_frames)

    frames = frames_at_30fps(server.input_dir / "aniportrait_speech.wav")
    assert len(history["outputs"][save_images]["images"]) == min(16, frames)  # a preview
    video = saved_mp4(server, history, node_id(prompt, "SaveVideo"))  # every templated pose frame
    assert video["frames"] == frames and video["audio_streams"] == 1


def test_face_reenactment_from_a_video_draws_one_pose_image_per_frame(server):
    folder, case = load_case("vid2vid")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "src").glob("*.png"))]
    _write_lossless_video(server.input_dir / "driving_face.mkv", frames, 25)
    prompt = copy.deepcopy(load_workflow("aniportrait_reenactment_api.json"))
    save = node_id(prompt, "SaveImage")
    prompt[save]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/reenacted_pose")
    prompt[node_id(prompt, "SaveVideo")]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/reenacted_pose_video")
    history = server.run(prompt)
    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"))
    images = history["outputs"][save]["images"]
    assert len(images) == min(16, len(frames))  # a preview; the video holds every frame
    assert saved_mp4(server, history, node_id(prompt, "SaveVideo"))["frames"] == len(frames)
    found, total = _tracking_note(history, node_id(prompt, "AniPortraitFaceReenactment"))
    assert total == len(frames) and found == len(frames)
    from aniportrait_lib.face import renderer

    lips = {tuple(p["color"]) for p in renderer.pose_image_style()["parts"] if p["name"].startswith("lips")}
    first = np.asarray(Image.open(server.output_dir / images[0]["subfolder"] / images[0]["filename"]).convert("RGB"))
    projection = prompt[node_id(prompt, "AniPortraitProjectLandmarks")]["inputs"]
    assert first.shape == (projection["height"], projection["width"], 3)
    colours = {tuple(int(c) for c in px) for px in np.unique(first.reshape(-1, 3), axis=0)}
    assert lips <= colours, f"lip colours not drawn: {sorted(lips - colours)}"
