"""Head-pose template nodes: take the head motion from a video (or a saved .npy) instead of Audio2Pose."""
from __future__ import annotations

import logging
import os

import numpy as np
from comfy_api.latest import io

import folder_paths

from ..aniportrait_lib.face import pose_template as templates
from ..aniportrait_lib.face.landmarker import NoFaceError
from . import comfy_models
from . import types as T
from .stage1 import CATEGORY, _images_to_uint8

log = logging.getLogger(__name__)
TEMPLATE_FOLDER = "aniportrait_pose_templates"


def _register_template_folder() -> None:
    if TEMPLATE_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(TEMPLATE_FOLDER, os.path.join(folder_paths.models_dir, "aniportrait", "pose_templates"))


class VideoPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitVideoPoseTemplate",
            display_name="AniPortrait Video Pose Template",
            category=CATEGORY,
            description="Extracts the head motion of a video (relative to its first frame, resampled to 30 fps, smoothed) as a pose template.",
            inputs=[
                T.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("frames", tooltip="Video frames, e.g. from core Get Video Components."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.01, tooltip="Frame rate of the video (connect Get Video Components' fps)."),
                io.Int.Input("smoothing_window", default=templates.TEMPLATE_SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving-average window in frames at 30 fps (the original uses 5)."),
            ],
            outputs=[T.PoseTemplate.Output("pose_template")],
        )

    @classmethod
    def execute(cls, face_landmarker, frames, fps, smoothing_window) -> io.NodeOutput:
        images = _images_to_uint8(frames, "frames")
        progress = comfy_models.progress(len(images))
        transforms = []
        for i, frame in enumerate(images):
            face = face_landmarker.analyze_frames([frame])[0]
            if face is None:
                if i == 0:
                    raise NoFaceError("no face was found in the first video frame; the template is relative to it, so use a video that starts with a visible face.")
                log.warning("AniPortrait: no face in frame %d of %d; the template ends there (as the original)", i, len(images))
                break
            transforms.append(face.transform)
            progress(i + 1, len(images))
        template = templates.extract_template(np.stack(transforms), fps, smoothing_window)
        return io.NodeOutput(template)


class LoadPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        _register_template_folder()
        return io.Schema(
            node_id="AniPortraitLoadPoseTemplate",
            display_name="AniPortrait Load Pose Template",
            category=f"{CATEGORY}/loaders",
            description="Loads a (T, 6) pose template .npy (e.g. the original's pose_temp.npy) from models/aniportrait/pose_templates.",
            inputs=[io.Combo.Input("template_name", options=[n for n in folder_paths.get_filename_list(TEMPLATE_FOLDER) if n.endswith(".npy")],
                                   tooltip="A .npy of rows [rx, ry, rz (degrees), tx, ty, tz] at 30 fps in models/aniportrait/pose_templates.")],
            outputs=[T.PoseTemplate.Output("pose_template")],
        )

    @classmethod
    def execute(cls, template_name) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(TEMPLATE_FOLDER, template_name)
        template = np.load(path, allow_pickle=False)
        if template.ndim != 2 or template.shape[1] != 6:
            raise ValueError(f"'{template_name}' holds an array of shape {template.shape}; a pose template is (frames, 6).")
        return io.NodeOutput(template.astype(np.float64))


class SavePoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitSavePoseTemplate",
            display_name="AniPortrait Save Pose Template",
            category=CATEGORY,
            description="Saves a pose template as .npy in the output folder (copy it to models/aniportrait/pose_templates to load it again).",
            inputs=[T.PoseTemplate.Input("pose_template"), io.String.Input("filename_prefix", default="aniportrait/pose_template")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, pose_template, filename_prefix) -> io.NodeOutput:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        path = os.path.join(folder, f"{name}_{counter:05}.npy")
        np.save(path, np.asarray(pose_template, dtype=np.float64))
        log.info("AniPortrait: pose template (%d frames) saved to %s", len(pose_template), path)
        return io.NodeOutput()


class ApplyPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitApplyPoseTemplate",
            display_name="AniPortrait Apply Pose Template",
            category=CATEGORY,
            description="Replaces the head poses of a motion by a template, looped back and forth to the clip's length (no halving, no smoothing, as the original).",
            inputs=[T.Motion.Input("motion"), T.PoseTemplate.Input("pose_template")],
            outputs=[T.Motion.Output("posed_motion", display_name="motion")],
        )

    @classmethod
    def execute(cls, motion, pose_template) -> io.NodeOutput:
        poses = templates.loop_template(np.asarray(pose_template), motion.num_frames)
        return io.NodeOutput(motion.with_poses(poses.astype(np.float32)))


NODES = [VideoPoseTemplate, LoadPoseTemplate, SavePoseTemplate, ApplyPoseTemplate]
