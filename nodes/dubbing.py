"""Dubbing nodes: a source video on the timeline of new speech, and its head motion driving the face."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aniportrait_lib.motion import dubbing
from ..aniportrait_lib.face import tracking
from . import comfy_adapter as comfy
from . import schema, sockets

LENGTH_RULE_TOOLTIP = ("When audio and video differ in length: loop = the video runs back and forth for the whole audio, "
                       "hold = the last video frame is held, trim = the longer one is cut to the shorter.")


class AlignVideoToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAlignVideoToAudio",
            display_name="AniPortrait Align Video To Audio",
            category=schema.MOTION,
            description="Puts a video's frames on the timeline of new speech at the stage-1 frame rate (nearest frame in time), "
                        "so every later node works frame by frame on the dubbed video.",
            inputs=[
                io.Image.Input("frames", tooltip="The source video's frames (Get Video Components)."),
                schema.source_fps(25.0),
                io.Audio.Input("audio", tooltip="The new speech."),
                io.Combo.Input("length_rule", options=list(dubbing.LENGTH_RULES), default="loop", tooltip=LENGTH_RULE_TOOLTIP),
                io.Float.Input("out_fps", default=30.0, min=1.0, max=60.0, step=1.0, tooltip="Frame rate of the dubbed video (the released models: 30)."),
            ],
            outputs=[io.Image.Output("aligned_frames"), io.Audio.Output("aligned_audio"), io.Float.Output("aligned_fps")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, frames, fps, audio, length_rule, out_fps) -> io.NodeOutput:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
        index, kept = dubbing.align_to_audio(frames.shape[0], fps, waveform, rate, out_fps, length_rule)
        note = (f"{frames.shape[0]} frames at {fps:g} fps -> {len(index)} frames at {out_fps:g} fps "
                f"({length_rule}; audio {waveform.shape[-1] / rate:.2f} s, kept {kept / rate:.2f} s)")
        aligned_audio = {"waveform": waveform[..., :kept], "sample_rate": rate}
        return comfy.output(frames[torch.from_numpy(index)], aligned_audio, float(out_fps), notes=[note])


class VideoHeadMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitVideoHeadMotion",
            display_name="AniPortrait Video Head Motion",
            category=schema.MOTION,
            description="Gives a motion (e.g. Audio2Mesh's mouth and expression) the head pose of each video frame, frame by frame: "
                        "the frames must be framed like the reference (crops from AniPortrait Face Crop) and as many as the motion has.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("frames", tooltip="Aligned video frames, cropped like the reference (AniPortrait Face Crop)."),
                sockets.Face.Input("face", tooltip="The reference face (Face Analysis of one of these crops)."),
                sockets.Motion.Input("motion", tooltip="The motion to give the video's head pose (Audio2Mesh)."),
                schema.on_missing(),
            ],
            outputs=[sockets.Motion.Output("posed_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, frames, face, motion, on_missing) -> io.NodeOutput:
        images = comfy.image_batch_to_uint8(frames, "frames")
        tracked = tracking.track_faces(images, face_landmarker, on_missing, comfy.progress(len(images)))
        transforms = [f.transform for f in tracked.faces]
        posed = dubbing.head_motion_from_video(motion, transforms, face.transform)
        return comfy.output(posed, notes=[tracked.summary()])


NODES = [AlignVideoToAudio, VideoHeadMotion]
