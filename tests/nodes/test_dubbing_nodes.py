"""Dubbing nodes in-process: a real clip aligned to new audio, and its head motion driving the face."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from support.comfy_inprocess import node_landmarker, ui_text
from support.media import real_clip_frames


@pytest.fixture(scope="module")
def nodes(pack):
    from aniportrait_pack.nodes import dubbing, face

    return dubbing, face, node_landmarker(pack)


def test_align_video_to_audio_per_rule(nodes):
    dubbing, _, _ = nodes
    frames = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 2, 2, 3) / 10
    audio = {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}  # 1 s
    out = dubbing.AlignVideoToAudio.execute(frames, 25.0, audio, "loop", 30.0)
    aligned, aligned_audio, fps = out.result
    assert aligned.num_frames == 30 and fps == 30.0 and aligned_audio["waveform"].shape[-1] == 16000
    shown = (aligned.read_batch(0, 30)[:, 0, 0, 0] / 25.5).round().astype(int).tolist()  # frames are read, not copied
    assert shown[:12] == [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 8, 9] and shown[12:15] == [8, 7, 6]  # back and forth after 0.4 s
    assert ui_text(out) == "10 frames at 25 fps -> 30 frames at 30 fps (loop; audio 1.00 s, kept 1.00 s)"
    trimmed, trimmed_audio, _ = dubbing.AlignVideoToAudio.execute(frames, 25.0, audio, "trim", 30.0).result
    assert trimmed.num_frames == 12 and trimmed_audio["waveform"].shape[-1] == 6400  # 0.4 s of video


def test_video_head_motion_follows_the_real_head(nodes):
    from aniportrait_pack.aniportrait_lib.data import Motion
    from aniportrait_pack.aniportrait_lib.motion.build import project_motion

    dubbing, face_nodes, landmarker = nodes
    frames = torch.from_numpy(real_clip_frames("api_kling_avatar2-1.webp", 12)).float().div(255.0)
    face = face_nodes.FaceAnalysis.execute(landmarker, frames[:1]).result[0]
    still = Motion(np.repeat(face.mesh_canonical[None], 12, axis=0), np.zeros((12, 6)), 30.0)
    out = dubbing.VideoHeadMotion.execute(landmarker, frames, face, still, "interpolate")
    posed = out.result[0]
    assert ui_text(out) == "face found in 12 of 12 frames"
    assert float(np.abs(posed.poses[0]).max()) < 1e-9  # frame 0 is the reference itself
    projected = project_motion(posed, face, face.width, face.height).points
    detected = np.stack([f.landmarks_px()[:468] for f in landmarker.analyze_frames((frames.numpy() * 255).round().astype(np.uint8))])
    error = np.linalg.norm(projected - detected, axis=-1)
    print(f"[dubbing] projected reference mesh vs each frame's landmarks: mean {error.mean():.2f} px, max {error.max():.2f} px")
    assert error[0].max() < 0.5  # the reference frame: the same face
    assert error.mean() < 3.0  # other frames: the head pose follows; only the frame-0 expression differs


def test_video_head_motion_needs_one_frame_per_motion_frame(nodes):
    from aniportrait_pack.aniportrait_lib.data import Motion

    dubbing, face_nodes, landmarker = nodes
    frames = torch.from_numpy(real_clip_frames("api_kling_avatar2-1.webp", 3)).float().div(255.0)
    face = face_nodes.FaceAnalysis.execute(landmarker, frames[:1]).result[0]
    motion = Motion(np.repeat(face.mesh_canonical[None], 5, axis=0), np.zeros((5, 6)))
    with pytest.raises(ValueError, match="the video gives 3 head poses for a motion of 5 frames; align the video to the audio first") as info:
        dubbing.VideoHeadMotion.execute(landmarker, frames, face, motion, "interpolate")
    assert type(info.value) is ValueError


def test_video_head_motion_names_the_output_to_connect_for_a_single_crop(nodes):
    """A workflow saved before Face Crop read videos wires its crops (now the first crop only) into Video Head Motion."""
    from aniportrait_pack.aniportrait_lib.data import Motion

    dubbing, face_nodes, landmarker = nodes
    frames = torch.from_numpy(real_clip_frames("api_kling_avatar2-1.webp", 1)).float().div(255.0)
    face = face_nodes.FaceAnalysis.execute(landmarker, frames).result[0]
    motion = Motion(np.repeat(face.mesh_canonical[None], 5, axis=0), np.zeros((5, 6)))
    with pytest.raises(ValueError, match=r"^the frames input holds 1 image for a motion of 5 frames; connect AniPortrait "
                                         r"Face Crop's cropped_frames output \(its crops output holds only the first crop "
                                         r"of a video\)$"):
        dubbing.VideoHeadMotion.execute(landmarker, frames, face, motion, "interpolate")
