"""Stage-1 nodes: audio -> meshes + head poses -> landmarks -> lip-coloured pose images."""
from __future__ import annotations

import logging

import numpy as np
import torch
from comfy_api.latest import io

from ..aniportrait_lib import weights
from ..aniportrait_lib.audio import features as audio_features
from ..aniportrait_lib.audio import models as audio_models
from ..aniportrait_lib.audio import stage1
from ..aniportrait_lib.face import landmarker, pose_math, renderer
from ..aniportrait_lib.motion import MotionSequence, project_motion
from . import comfy_models, paths
from . import types as T

log = logging.getLogger(__name__)
CATEGORY = "AniPortrait"


def _images_to_uint8(images: torch.Tensor, what: str = "image", chunk: int = 64) -> np.ndarray:
    """core IMAGE [N, H, W, C] float 0..1 -> uint8 numpy, in chunks (no full float copy of a long video)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"the {what} input is empty (shape {tuple(images.shape)}); connect at least one image.")
    out = np.empty(tuple(images.shape), dtype=np.uint8)
    for i in range(0, images.shape[0], chunk):
        part = images[i : i + chunk].detach().to("cpu", torch.float32).clamp(0, 1).mul(255.0).round()
        out[i : i + chunk] = part.to(torch.uint8).numpy()
    return out


def _uint8_to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> core IMAGE float 0..1 (exact: k/255 converts back with round(x*255))."""
    import comfy.model_management as mm

    return torch.from_numpy(frames).to(mm.intermediate_device()).float().div_(255.0)


class LoadAudioModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLoadAudioModels",
            display_name="AniPortrait Load Audio Models",
            category=f"{CATEGORY}/loaders",
            description="Loads the released audio2mesh.pt and audio2pose.pt (each carries its own fine-tuned wav2vec2) from models/aniportrait.",
            inputs=[
                io.Combo.Input("audio2mesh_name", options=paths.list_files(".pt", ".pth", ".safetensors"), default="audio2mesh.pt",
                               tooltip="Audio2Mesh checkpoint in ComfyUI/models/aniportrait (released file: audio2mesh.pt)."),
                io.Combo.Input("audio2pose_name", options=paths.list_files(".pt", ".pth", ".safetensors"), default="audio2pose.pt",
                               tooltip="Audio2Pose checkpoint in ComfyUI/models/aniportrait (released file: audio2pose.pt)."),
            ],
            outputs=[T.Audio2MeshModel.Output("audio2mesh"), T.Audio2PoseModel.Output("audio2pose")],
        )

    @classmethod
    def validate_inputs(cls, audio2mesh_name, audio2pose_name):
        for name, what in ((audio2mesh_name, "Audio2Mesh"), (audio2pose_name, "Audio2Pose")):
            msg = paths.missing_file_message(name, what)
            if msg is not True:
                return msg
        return True

    @classmethod
    def execute(cls, audio2mesh_name, audio2pose_name) -> io.NodeOutput:
        mesh_path = paths.resolve(audio2mesh_name, "Audio2Mesh")
        pose_path = paths.resolve(audio2pose_name, "Audio2Pose")
        mesh = audio_models.load_audio2mesh(weights.read_state_dict(mesh_path), mesh_path)
        pose = audio_models.load_audio2pose(weights.read_state_dict(pose_path), pose_path)
        # fp32 on purpose: the original never casts the audio models (reference quirk 9)
        return io.NodeOutput(comfy_models.patcher_for(mesh), comfy_models.patcher_for(pose))


class LoadFaceLandmarker(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLoadFaceLandmarker",
            display_name="AniPortrait Load Face Landmarker",
            category=f"{CATEGORY}/loaders",
            description=f"MediaPipe Face Landmarker model ({landmarker.MODEL_FILE_NAME}) from models/aniportrait. Download: {landmarker.MODEL_URL}",
            inputs=[io.Combo.Input("model_name", options=paths.list_files(".task"), default=landmarker.MODEL_FILE_NAME,
                                   tooltip=f"face_landmarker.task in ComfyUI/models/aniportrait; download from {landmarker.MODEL_URL}")],
            outputs=[T.FaceLandmarkerModel.Output("face_landmarker")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return paths.missing_file_message(model_name, "MediaPipe Face Landmarker (face_landmarker.task)")

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        path = paths.resolve(model_name, "MediaPipe Face Landmarker (face_landmarker.task)")
        landmarker.check_task_file(path)
        return io.NodeOutput(landmarker.get_landmarker(path))


class FaceAnalysis(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceAnalysis",
            display_name="AniPortrait Face Analysis",
            category=CATEGORY,
            description="Finds the face in the reference photo: 478 landmarks, the canonical 3D mesh, head transform and blendshapes; also draws the reference pose image.",
            inputs=[
                T.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("image", tooltip="Reference portrait (first image of the batch is used)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=8, optional=True,
                             tooltip="0 = analyse the photo as it is. Otherwise resize it to the video size first (as the original did), "
                                     "so that landmarks match the photo the sampler stretches to width x height."),
                io.Int.Input("height", default=0, min=0, max=4096, step=8, optional=True, tooltip="See width."),
            ],
            outputs=[T.Face.Output("face"), io.Image.Output("reference_pose")],
        )

    @classmethod
    def execute(cls, face_landmarker, image, width=0, height=0) -> io.NodeOutput:
        if image.shape[0] > 1:
            log.warning("AniPortrait Face Analysis: got %d images, using the first", image.shape[0])
        rgb = _images_to_uint8(image[:1], "reference image")[0]
        if width and height and (rgb.shape[1], rgb.shape[0]) != (width, height):
            import cv2

            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        elif bool(width) != bool(height):
            raise ValueError(f"set both width and height to resize the reference (got {width}x{height}), or leave both 0.")
        face = face_landmarker.analyze(rgb)
        pose = renderer.draw_pose_image(face.landmarks, face.width, face.height, normalized=True)
        return io.NodeOutput(face, _uint8_to_images(pose[None]))


class AudioFeatures(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAudioFeatures",
            display_name="AniPortrait Audio Features",
            category=CATEGORY,
            description="Prepares a core AUDIO clip for AniPortrait's wav2vec2 encoders: mono, 16 kHz, whole-clip normalisation, frame count at the video fps.",
            inputs=[
                io.Audio.Input("audio"),
                io.Float.Input("fps", default=30.0, min=1.0, max=60.0, step=1.0,
                               tooltip="Video frame rate. The released models were trained at 30 fps."),
            ],
            outputs=[T.AudioFeatures.Output("audio_features")],
        )

    @classmethod
    def execute(cls, audio, fps) -> io.NodeOutput:
        values, frames = audio_features.prepare_audio(audio["waveform"], int(audio["sample_rate"]), fps)
        log.info("AniPortrait: %.2f s of audio -> %d frames at %g fps", values.shape[0] / audio_features.SAMPLE_RATE, frames, fps)
        return io.NodeOutput(stage1.AudioFeatures(values, frames, fps))


class Audio2Mesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAudio2Mesh",
            display_name="AniPortrait Audio2Mesh",
            category=CATEGORY,
            description="Predicts the per-frame 3D face mesh (lip and expression motion) from audio; head pose starts neutral.",
            inputs=[T.Audio2MeshModel.Input("audio2mesh"), T.AudioFeatures.Input("audio_features"), T.Face.Input("face")],
            outputs=[T.Motion.Output("motion")],
        )

    @classmethod
    def execute(cls, audio2mesh, audio_features, face) -> io.NodeOutput:
        device = comfy_models.load_for_inference(audio2mesh)
        offsets = stage1.predict_mesh_offsets(audio2mesh.model, audio_features, device)
        meshes = offsets.astype(np.float64) + face.mesh_canonical[None]
        poses = np.zeros((meshes.shape[0], 6), dtype=np.float32)
        return io.NodeOutput(MotionSequence(meshes, poses, audio_features.fps))


class Audio2Pose(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAudio2Pose",
            display_name="AniPortrait Audio2Pose",
            category=CATEGORY,
            description="Predicts head motion from audio (autoregressive), then halves rotations and smooths like the original.",
            inputs=[
                T.Audio2PoseModel.Input("audio2pose"),
                T.AudioFeatures.Input("audio_features"),
                T.Motion.Input("motion"),
                io.Int.Input("style_id", default=stage1.DEFAULT_STYLE_ID, min=0, max=audio_models.NUM_STYLE_IDS - 1,
                             tooltip="Speaking style (0-99). The original picked one at random on every run; here it is yours to choose."),
                io.Int.Input("smoothing_window", default=pose_math.SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving-average window in frames (1 = no smoothing). Larger = calmer head."),
                io.Float.Input("rotation_scale", default=pose_math.ROTATION_SCALE, min=0.0, max=2.0, step=0.05,
                               tooltip="Scales predicted head rotations (the original uses 0.5)."),
            ],
            outputs=[T.Motion.Output("posed_motion", display_name="motion")],
        )

    @classmethod
    def execute(cls, audio2pose, audio_features, motion, style_id, smoothing_window, rotation_scale) -> io.NodeOutput:
        if motion.num_frames != audio_features.num_frames:
            raise ValueError(
                f"the motion has {motion.num_frames} frames but the audio features {audio_features.num_frames}; "
                f"feed both nodes from the same AniPortrait Audio Features node."
            )
        device = comfy_models.load_for_inference(audio2pose)
        poses = stage1.predict_poses(audio2pose.model, audio_features, style_id, smoothing_window, rotation_scale,
                                     device, comfy_models.progress(audio_features.num_frames))
        return io.NodeOutput(motion.with_poses(poses))


class ProjectLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitProjectLandmarks",
            display_name="AniPortrait Project Landmarks",
            category=CATEGORY,
            description="Projects the per-frame meshes through the reference head transform and the poses to 2D landmarks (63 deg camera).",
            inputs=[
                T.Face.Input("face"),
                T.Motion.Input("motion"),
                io.Int.Input("width", default=512, min=64, max=4096, step=8, tooltip="Output width in pixels."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8, tooltip="Output height in pixels."),
            ],
            outputs=[T.Landmarks.Output("landmarks")],
        )

    @classmethod
    def execute(cls, face, motion, width, height) -> io.NodeOutput:
        if abs(face.width / face.height - width / height) > 0.01:
            log.warning("AniPortrait: the face was analysed on a %dx%d image but the video is %dx%d; set width/height on "
                        "AniPortrait Face Analysis to the video size so the landmarks match the stretched reference photo",
                        face.width, face.height, width, height)
        return io.NodeOutput(project_motion(motion, face.transform, width, height))


class RenderPoseImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitRenderPoseImages",
            display_name="AniPortrait Render Pose Images",
            category=CATEGORY,
            description="Draws the lip-coloured landmark images the video model is conditioned on. Channels are stored as the model saw them in training (the original's BGR array), so colours look swapped in previews.",
            inputs=[T.Landmarks.Input("landmarks")],
            outputs=[io.Image.Output("pose_images")],
        )

    @classmethod
    def execute(cls, landmarks) -> io.NodeOutput:
        frames = renderer.draw_pose_images(landmarks.points, landmarks.width, landmarks.height,
                                           progress=comfy_models.progress(landmarks.num_frames))
        return io.NodeOutput(_uint8_to_images(frames))


NODES = [LoadAudioModels, LoadFaceLandmarker, FaceAnalysis, AudioFeatures, Audio2Mesh, Audio2Pose, ProjectLandmarks, RenderPoseImages]
