"""Stage-1 nodes called in-process with real ComfyUI types: loaders, face, audio and motion nodes."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from support.comfy_inprocess import comfy_image, ui_text
from support.media import real_clip_frames
from support.paths import shared_assets_dir


@pytest.fixture(scope="module")
def nodes(pack):
    from support import random_weights
    from aniportrait_pack.nodes import audio, face, loaders, motion

    folder = pack.work_dir / "models" / "aniportrait"
    shutil.copyfile(shared_assets_dir() / "face_landmarker.task", folder / "face_landmarker.task")
    random_weights.save_audio_models(folder)
    return type("Nodes", (), dict(audio=audio, face=face, loaders=loaders, motion=motion, folder=folder))


@pytest.fixture(scope="module")
def landmarker(nodes):
    return nodes.loaders.LoadFaceLandmarker.execute("face_landmarker.task").result[0]


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[10:220, 120:330])  # 210x210 face crop


def test_face_analysis_resizes_to_the_video_size_and_notes_a_reduced_batch(nodes, landmarker, portrait):
    batch = torch.cat([comfy_image(portrait)] * 2)
    out = nodes.face.FaceAnalysis.execute(landmarker, batch, width=256, height=192)
    face, pose = out.result
    assert face.image_size == (256, 192) and tuple(pose.shape) == (1, 192, 256, 3)
    assert ui_text(out) == "the reference image input holds 2 images; only the first one is used."
    as_is = nodes.face.FaceAnalysis.execute(landmarker, comfy_image(portrait))
    assert as_is.result[0].image_size == (210, 210) and ui_text(as_is) == ""


def test_face_analysis_errors_are_plain_value_errors(nodes, landmarker, portrait):
    with pytest.raises(ValueError, match=r"set both width and height to resize the reference \(got 256x0\)") as info:
        nodes.face.FaceAnalysis.execute(landmarker, comfy_image(portrait), width=256, height=0)
    with pytest.raises(ValueError, match=r"^no face was found in the reference image \(64x64\)") as info:
        nodes.face.FaceAnalysis.execute(landmarker, torch.full((1, 64, 64, 3), 0.5))
    assert type(info.value) is ValueError  # ComfyUI shows the type's module path otherwise (the install path)
    with pytest.raises(ValueError, match=r"the reference image input has pixel values from 0 to 255"):
        nodes.face.FaceAnalysis.execute(landmarker, comfy_image(portrait) * 255)


def test_reenactment_is_a_motion_that_projects_and_renders(nodes, landmarker, portrait):
    ref = nodes.face.FaceAnalysis.execute(landmarker, comfy_image(portrait), width=128, height=128).result[0]
    frames = torch.from_numpy(real_clip_frames("video_wan2_2_14B_s2v-1.webp", 12)).float().div(255.0)  # frame 10 has no face
    out = nodes.face.FaceReenactment.execute(landmarker, frames, ref, 25.0, 3, "interpolate")
    motion = out.result[0]
    assert motion.num_frames == 12 and motion.fps == 25.0
    assert ui_text(out) == "face found in 11 of 12 frames, 1 filled in"
    stopped = nodes.face.FaceReenactment.execute(landmarker, frames, ref, 25.0, 3, "stop")
    assert stopped.result[0].num_frames == 10 and "2 dropped after the first frame without a face" in ui_text(stopped)
    landmarks = nodes.motion.ProjectLandmarks.execute(ref, motion, 128, 128).result[0]
    images = nodes.motion.RenderPoseImages.execute(landmarks).result[0]
    assert tuple(images.shape) == (12, 128, 128, 3)
    assert all(float(img.max()) > 0 for img in images)  # a face is drawn on every frame, the filled one too


def test_pose_template_from_video_saves_without_overwriting_and_reloads(nodes, landmarker, pack):
    frames = torch.from_numpy(real_clip_frames("video_wan2_2_14B_s2v-1.webp", 12)).float().div(255.0)
    out = nodes.face.VideoPoseTemplate.execute(landmarker, frames, 30.0, 1, "hold")  # unsmoothed: row 0 is the first frame
    template = out.result[0]
    assert template.num_frames == 12 and np.allclose(template.poses[0], 0, atol=1e-5)  # float32 maths as the original
    assert ui_text(out) == "face found in 11 of 12 frames, 1 filled in"
    first = nodes.motion.SavePoseTemplate.execute(template, "tests/template")
    second = nodes.motion.SavePoseTemplate.execute(template, "tests/template")
    saved = sorted((pack.work_dir / "output" / "tests").glob("template_*.npy"))
    assert len(saved) == 2 and ui_text(first) != ui_text(second)
    shutil.copyfile(saved[0], nodes.folder / "pose_templates" / "from_video.npy")
    loaded = nodes.loaders.LoadPoseTemplate.execute("from_video.npy").result[0]
    assert np.array_equal(loaded.poses, template.poses)


def test_bad_template_is_refused_on_load_with_the_file_name(nodes):
    np.save(nodes.folder / "pose_templates" / "broken.npy", np.full((4, 6), np.nan))
    with pytest.raises(ValueError, match=r"^'broken.npy' has 4 row\(s\) with NaN or infinite values; a pose template is") as info:
        nodes.loaders.LoadPoseTemplate.execute("broken.npy")
    assert type(info.value) is ValueError


def test_audio_nodes_make_a_motion_with_head_poses(nodes, landmarker, portrait):
    face = nodes.face.FaceAnalysis.execute(landmarker, comfy_image(portrait)).result[0]
    mesh_model, pose_model = nodes.loaders.LoadAudioModels.execute("audio2mesh.pt", "audio2pose.pt").result
    t = torch.linspace(0, 1, 16000)
    speech = torch.sin(2 * torch.pi * 220 * t)[None, None].repeat(2, 1, 1)  # a batch of 2 clips, 1 s at 16 kHz
    out = nodes.audio.AudioFeatures.execute({"waveform": speech, "sample_rate": 16000}, 30.0)
    features = out.result[0]
    assert features.num_frames == 30
    assert ui_text(out).startswith("the audio input holds 2 clips; only the first one is used.")
    motion = nodes.audio.Audio2Mesh.execute(mesh_model, features, face).result[0]
    assert motion.meshes.shape == (30, 468, 3) and not motion.poses.any()
    posed = nodes.audio.Audio2Pose.execute(pose_model, features, motion, 3, 7, 0.5).result[0]
    assert posed.poses.shape == (30, 6) and np.abs(posed.poses).max() > 0
    assert np.array_equal(posed.meshes, motion.meshes)
    short = nodes.audio.AudioFeatures.execute({"waveform": speech[:1, :, :8000], "sample_rate": 16000}, 30.0).result[0]
    with pytest.raises(ValueError, match="the motion has 30 frames but the audio features 15; feed both nodes from the same"):
        nodes.audio.Audio2Pose.execute(pose_model, short, motion, 3, 7, 0.5)


def test_missing_file_is_a_clear_error_naming_the_folders(nodes):
    with pytest.raises(ValueError, match=r"'nothere.pt' was not found") as info:
        nodes.loaders.LoadAudioModels.execute("nothere.pt", "audio2pose.pt")
    assert str(nodes.folder) in str(info.value) and type(info.value) is ValueError


def test_audio_models_without_audio2pose(nodes, landmarker, portrait):
    """audio2pose 'none' (workflows whose head motion comes from a video or a template) loads Audio2Mesh only."""
    options = nodes.loaders.LoadAudioModels.define_schema().inputs[1].options
    assert options[0] == "none" and "audio2pose.pt" in options
    mesh_model, pose_model = nodes.loaders.LoadAudioModels.execute("audio2mesh.pt", "none").result
    assert pose_model is None and mesh_model is not None
    face = nodes.face.FaceAnalysis.execute(landmarker, comfy_image(portrait)).result[0]
    speech = torch.sin(2 * torch.pi * 220 * torch.linspace(0, 1, 16000))[None, None]
    features = nodes.audio.AudioFeatures.execute({"waveform": speech, "sample_rate": 16000}, 30.0).result[0]
    motion = nodes.audio.Audio2Mesh.execute(mesh_model, features, face).result[0]
    with pytest.raises(ValueError, match=r"^no Audio2Pose model came in: AniPortrait Load Audio Models has audio2pose_name "
                                         r"'none'; pick audio2pose\.pt there$") as info:
        nodes.audio.Audio2Pose.execute(pose_model, features, motion, 3, 7, 0.5)
    assert type(info.value) is ValueError
