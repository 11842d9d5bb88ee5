"""End to end: video-driven motion through LoadVideo: pose templates (vid2pose) and face reenactment (vid2vid)."""
from __future__ import annotations

import copy
import math
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from comfy_server import execution_error, load_workflow, unique_prefix
from conftest import load_case, tolerance_numbers

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
    prompt["11"]["inputs"]["filename_prefix"] = prefix = unique_prefix("aniportrait/pose_template")
    prompt["15"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/templated_pose")
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

    with wave.open(str(server.input_dir / "aniportrait_speech.wav")) as w:
        frames = math.ceil(round(w.getnframes() * 16000 / w.getframerate()) / 16000 * 30)
    assert len(history["outputs"]["15"]["images"]) == frames


def test_face_reenactment_from_a_video_draws_one_pose_image_per_frame(server):
    folder, case = load_case("vid2vid")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((folder / "src").glob("*.png"))]
    _write_lossless_video(server.input_dir / "driving_face.mkv", frames, 25)
    prompt = copy.deepcopy(load_workflow("aniportrait_reenactment_api.json"))
    prompt["11"]["inputs"]["filename_prefix"] = unique_prefix("aniportrait/reenacted_pose")
    history = server.run(prompt)
    err = execution_error(history)
    assert err is None, err and (err.get("node_type"), err.get("exception_message"))
    images = history["outputs"]["11"]["images"]
    assert len(images) == len(frames)
    from aniportrait_lib.face import renderer

    lips = {tuple(p["color"]) for p in renderer.pose_image_style()["parts"] if p["name"].startswith("lips")}
    first = np.asarray(Image.open(server.output_dir / images[0]["subfolder"] / images[0]["filename"]).convert("RGB"))
    assert first.shape == (prompt["10"]["inputs"]["height"], prompt["10"]["inputs"]["width"], 3)
    colours = {tuple(int(c) for c in px) for px in np.unique(first.reshape(-1, 3), axis=0)}
    assert len(colours & lips) >= len(lips) // 2, "the lips must be drawn in their segment colours"
