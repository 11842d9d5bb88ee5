"""Loader nodes: model files and pose templates from ComfyUI's model folders.

A file that is missing is reported by ComfyUI's own combo check, on the input that names it; a file
that is present but wrong gets the loader's error naming the file, the folder and the first bad keys.
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aniportrait_lib import data, weights
from ..aniportrait_lib.audio import models as audio_models
from ..aniportrait_lib.face import landmarker
from ..aniportrait_lib.networks import loading
from . import comfy_adapter as comfy
from . import comfy_model
from . import schema, sockets

WEIGHT_DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
LMK2VIDEO_FILES = {  # input name -> (role in loading.RELEASED_FILES, label)
    "reference_unet_name": ("reference_unet", "ReferenceNet (reference_unet.pth)"),
    "denoising_unet_name": ("denoising_unet", "denoising UNet (denoising_unet.pth)"),
    "motion_module_name": ("motion_module", "motion module (motion_module.pth)"),
    "pose_guider_name": ("pose_guider", "PoseGuider (pose_guider.pth)"),
}


def lmk2video_inputs() -> list:
    """The four released Lmk2Video files and the weight dtype."""
    inputs = [schema.model_file(name, loading.RELEASED_FILES[role], f"{label}: released AniPortrait weights, loaded unchanged.")
              for name, (role, label) in LMK2VIDEO_FILES.items()]
    inputs.append(io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="auto",
                                 tooltip="auto = ComfyUI's choice for your device (fp16/bf16 on GPU, fp32 on CPU)."))
    return inputs


def _lmk2video_files(reference_unet_name, denoising_unet_name, motion_module_name, pose_guider_name) -> dict[str, str]:
    chosen = dict(reference_unet_name=reference_unet_name, denoising_unet_name=denoising_unet_name,
                  motion_module_name=motion_module_name, pose_guider_name=pose_guider_name)
    return {role: comfy.resolve_model_file(chosen[name], label) for name, (role, label) in LMK2VIDEO_FILES.items()}


class LoadAudioModels(io.ComfyNode):
    #: the audio2pose_name option for workflows whose head motion comes from elsewhere (video, pose template)
    NO_AUDIO2POSE = "none"

    @classmethod
    def define_schema(cls) -> io.Schema:
        pose_input = schema.model_file("audio2pose_name", "audio2pose.pt", "Audio2Pose checkpoint (released file: audio2pose.pt)."
                      + " none: no Audio2Pose (head motion from a video or a pose template).")
        pose_input.options = [cls.NO_AUDIO2POSE] + list(pose_input.options)
        return io.Schema(
            node_id="AniPortraitLoadAudioModels",
            display_name="AniPortrait Load Audio Models",
            category=schema.MODELS,
            description="Loads the released audio2mesh.pt and audio2pose.pt (each carries its own fine-tuned wav2vec2) from "
                        "models/aniportrait. audio2pose 'none' loads no Audio2Pose, for head motion from a video or pose template.",
            inputs=[
                schema.model_file("audio2mesh_name", "audio2mesh.pt", "Audio2Mesh checkpoint (released file: audio2mesh.pt)."),
                pose_input,
            ],
            outputs=[sockets.Audio2MeshModel.Output("audio2mesh"), sockets.Audio2PoseModel.Output("audio2pose")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, audio2mesh_name, audio2pose_name) -> io.NodeOutput:
        mesh_path = comfy.resolve_model_file(audio2mesh_name, "Audio2Mesh")
        mesh = audio_models.load_audio2mesh(weights.read_state_dict(mesh_path), mesh_path)
        pose = None  # AniPortrait Audio2Pose says what to pick when it gets none
        if audio2pose_name != cls.NO_AUDIO2POSE:
            pose_path = comfy.resolve_model_file(audio2pose_name, "Audio2Pose")
            pose = comfy.patcher_for(audio_models.load_audio2pose(weights.read_state_dict(pose_path), pose_path))
        # fp32 on purpose: the original never casts the audio models (reference quirk 9)
        return io.NodeOutput(comfy.patcher_for(mesh), pose)


class LoadFaceLandmarker(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLoadFaceLandmarker",
            display_name="AniPortrait Load Face Landmarker",
            category=schema.MODELS,
            description=f"MediaPipe Face Landmarker model ({landmarker.MODEL_FILE_NAME}) from models/aniportrait. Download: {landmarker.MODEL_URL}",
            inputs=[schema.model_file("model_name", landmarker.MODEL_FILE_NAME, f"face_landmarker.task, download from {landmarker.MODEL_URL}.", (".task",))],
            outputs=[sockets.FaceLandmarkerModel.Output("face_landmarker")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, model_name) -> io.NodeOutput:
        path = comfy.resolve_model_file(model_name, "MediaPipe Face Landmarker (face_landmarker.task)")
        return io.NodeOutput(landmarker.get_landmarker(path))


class LoadVideoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLoadVideoModel",
            display_name="AniPortrait Load Video Model",
            category=schema.MODELS,
            description="Loads the released ReferenceNet, denoising UNet, motion module and PoseGuider (strict key checks) as one core MODEL for AniPortrait Sampler, KSampler and other model nodes. Condition it with AniPortrait Video Conditioning.",
            inputs=lmk2video_inputs(),
            outputs=[io.Model.Output("model")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, reference_unet_name, denoising_unet_name, motion_module_name, pose_guider_name, weight_dtype) -> io.NodeOutput:
        files = _lmk2video_files(reference_unet_name, denoising_unet_name, motion_module_name, pose_guider_name)
        dtype = comfy.pick_weight_dtype(WEIGHT_DTYPES[weight_dtype])
        return comfy.output(comfy_model.load_model(files, dtype), notes=[f"AniPortrait MODEL in {str(dtype).removeprefix('torch.')}"])


class LoadPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLoadPoseTemplate",
            display_name="AniPortrait Load Pose Template",
            category=schema.MOTION,
            description="Loads a pose template .npy (e.g. the original's pose_temp.npy) from models/aniportrait/pose_templates.",
            inputs=[io.Combo.Input("template_name", options=comfy.list_template_files(),
                                   tooltip=f"A .npy in ComfyUI/models/aniportrait/pose_templates: {data.TEMPLATE_HELP}.")],
            outputs=[sockets.PoseTemplate.Output("pose_template")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, template_name) -> io.NodeOutput:
        template = data.load_pose_template(comfy.resolve_template_file(template_name))
        return comfy.output(template, notes=[f"{template.num_frames} poses ({template.num_frames / template.fps:.1f} s)"])


NODES = [LoadAudioModels, LoadFaceLandmarker, LoadVideoModel, LoadPoseTemplate]
