"""Motion nodes: give a motion a template's head poses, save templates, project and draw a motion."""
from __future__ import annotations

import os

from comfy_api.latest import io

import folder_paths

from ..aniportrait_lib import data
from ..aniportrait_lib.motion import build as motion_steps
from ..aniportrait_lib.face import analysis, renderer
from ..aniportrait_lib.media import encode
from . import comfy_adapter as comfy
from . import schema, sockets
from .video_out import encode_inputs, video_target


class ApplyPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitApplyPoseTemplate",
            display_name="AniPortrait Apply Pose Template",
            category=schema.MOTION,
            description="Replaces the head poses of a motion by a template, looped back and forth to the clip's length (no halving, no smoothing, as the original).",
            inputs=[sockets.Motion.Input("motion"), sockets.PoseTemplate.Input("pose_template")],
            outputs=[sockets.Motion.Output("posed_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, motion, pose_template) -> io.NodeOutput:
        return io.NodeOutput(motion_steps.apply_pose_template(motion, pose_template))


class SavePoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitSavePoseTemplate",
            display_name="AniPortrait Save Pose Template",
            category=schema.MOTION,
            description="Saves a pose template as .npy in the output folder, never over an existing file "
                        "(copy it to models/aniportrait/pose_templates to load it again).",
            inputs=[sockets.PoseTemplate.Input("pose_template"), io.String.Input("filename_prefix", default="aniportrait/pose_template")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, pose_template, filename_prefix) -> io.NodeOutput:
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        path = data.save_pose_template(pose_template, os.path.join(folder, f"{name}_{counter:05}_.npy"))  # core's counter pattern
        return comfy.output(notes=[f"{pose_template.num_frames} poses saved to {path}"])


class ProjectLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitProjectLandmarks",
            display_name="AniPortrait Project Landmarks",
            category=schema.MOTION,
            description="Projects the per-frame meshes through the reference head transform and the poses to 2D landmarks (63 deg camera).",
            inputs=[
                sockets.Face.Input("face"),
                sockets.Motion.Input("motion"),
                *schema.video_size(),
            ],
            outputs=[sockets.Landmarks.Output("landmarks")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face, motion, width, height) -> io.NodeOutput:
        landmarks = motion_steps.project_motion(motion, face, width, height)
        return comfy.output(landmarks, notes=[analysis.aspect_mismatch_note(face, width, height)])


class RenderPoseImages(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitRenderPoseImages",
            display_name="AniPortrait Render Pose Images",
            category=schema.MOTION,
            description="Draws the lip-coloured landmark images the video model is conditioned on. Channels are stored as the model saw them in training (the original's BGR array), so colours look swapped in previews.",
            inputs=[sockets.Landmarks.Input("landmarks"),
                    io.Int.Input("start_frame", default=0, min=0, max=10 ** 7, optional=True,
                                 tooltip="First frame drawn (for a preview of part of a long clip)."),
                    io.Int.Input("max_frames", default=0, min=0, max=10 ** 7, optional=True,
                                 tooltip="Frames drawn from start_frame; 0 = to the end. A few make a preview; for a video "
                                         "of all pose frames use AniPortrait Pose Video (drawn and encoded in chunks).")],
            outputs=[io.Image.Output("pose_images")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, landmarks, start_frame=0, max_frames=0) -> io.NodeOutput:
        if start_frame >= landmarks.num_frames:
            raise ValueError(f"start_frame {start_frame} is past the last of the {landmarks.num_frames} frames; "
                             f"set it below {landmarks.num_frames}")
        points = landmarks.points[start_frame:start_frame + max_frames if max_frames else None]
        comfy.check_memory("pose_images", frames=len(points), width=landmarks.width, height=landmarks.height)
        frames = renderer.draw_pose_images(points, landmarks.width, landmarks.height, progress=comfy.progress(len(points)))
        return io.NodeOutput(comfy.uint8_to_image_batch(frames))


class PoseVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitPoseVideo",
            display_name="AniPortrait Pose Video",
            category=schema.MOTION,
            description="Draws the pose images (as Render Pose Images) and writes them as an mp4 with the audio, a chunk at "
                        "a time, so a ten-minute clip never sits in memory (as IMAGE it would be 56 GB at 512x512).",
            inputs=[sockets.Landmarks.Input("landmarks"), *encode_inputs(),
                    io.Audio.Input("audio", optional=True, tooltip="The speech, cut to the video's length.")],
            outputs=[io.Video.Output("video")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, landmarks, chunk_frames, quality, crf, audio=None) -> io.NodeOutput:
        codec, path, wav, rate = video_target("pose", quality, crf, audio)
        draw = lambda start, stop: renderer.draw_pose_images(landmarks.points[start:stop], landmarks.width,  # noqa: E731
                                                             landmarks.height)
        with encode.video_writer(path, landmarks.width, landmarks.height, landmarks.fps, codec, landmarks.num_frames,
                                 wav, rate) as writer:
            encode.write_chunks(writer, landmarks.num_frames, chunk_frames, draw,
                                comfy.progress(len(encode.plan_chunks(landmarks.num_frames, chunk_frames))))
        return comfy.output(comfy.video_from_file(path),
                            notes=[f"{landmarks.num_frames} pose frames {landmarks.width}x{landmarks.height} at {landmarks.fps:g} fps"])


NODES = [ApplyPoseTemplate, SavePoseTemplate, ProjectLandmarks, RenderPoseImages, PoseVideo]
