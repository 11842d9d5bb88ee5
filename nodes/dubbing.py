"""Dubbing nodes: a source video on the timeline of new speech, and its head motion driving the face."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.compose import footage as footage_steps
from ..aniportrait_lib.media.frames import Footage
from ..aniportrait_lib.motion import dubbing
from . import comfy_adapter as comfy
from . import schema, sockets, video_in

LENGTH_RULE_TOOLTIP = ("When audio and video differ in length: loop = the video runs back and forth for the whole audio, "
                       "hold = the last video frame is held, trim = the longer one is cut to the shorter.")


class AlignVideoToAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAlignVideoToAudio",
            display_name="AniPortrait Align Video To Audio",
            category=schema.MOTION,
            description="Puts a video on the timeline of new speech at the stage-1 frame rate (nearest frame in time), "
                        "so every later node works frame by frame on the dubbed video. Nothing is copied: the aligned "
                        "frames are read from the video when a node needs them, so a ten-minute video stays on disk.",
            inputs=[
                video_in.frames_input("frames", "The source video (Load Video), or its frames as an IMAGE batch."),
                schema.source_fps(25.0),
                io.Audio.Input("audio", tooltip="The new speech."),
                io.Combo.Input("length_rule", options=list(dubbing.LENGTH_RULES), default="loop", tooltip=LENGTH_RULE_TOOLTIP),
                io.Float.Input("out_fps", default=30.0, min=1.0, max=60.0, step=1.0, tooltip="Frame rate of the dubbed video (the released models: 30)."),
            ],
            outputs=[sockets.Footage.Output("aligned_frames"), io.Audio.Output("aligned_audio"), io.Float.Output("aligned_fps")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, frames, fps, audio, length_rule, out_fps) -> io.NodeOutput:
        source = video_in.footage_of(frames, "frames", fps)
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
        index, kept = dubbing.align_to_audio(source.num_frames, source.fps, waveform, rate, out_fps, length_rule)
        aligned = Footage(source.reader, source.index[index], float(out_fps), length_rule)
        note = (f"{source.num_frames} frames at {source.fps:g} fps -> {len(index)} frames at {out_fps:g} fps "
                f"({length_rule}; audio {waveform.shape[-1] / rate:.2f} s, kept {kept / rate:.2f} s)")
        aligned_audio = {"waveform": waveform[..., :kept], "sample_rate": rate}
        return comfy.output(aligned, aligned_audio, float(out_fps), notes=[note])


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
                video_in.frames_input("frames", "The crops of the aligned video (AniPortrait Face Crop's cropped frames), "
                                                "framed like the reference.", [io.Image, sockets.Footage]),
                sockets.Face.Input("face", tooltip="The reference face (Face Analysis of one of these crops)."),
                sockets.Motion.Input("motion", tooltip="The motion to give the video's head pose (Audio2Mesh)."),
                schema.on_missing(),
            ],
            outputs=[sockets.Motion.Output("posed_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, frames, face, motion, on_missing) -> io.NodeOutput:
        if video_in.is_image_batch(frames) and len(frames) == 1 < motion.num_frames:
            raise ValueError(f"the frames input holds 1 image for a motion of {motion.num_frames} frames; connect AniPortrait "
                             "Face Crop's cropped_frames output (its crops output holds only the first crop of a video)")
        crops = video_in.footage_of(frames, "frames", motion.fps)
        tracked = footage_steps.track_footage(crops, face_landmarker, on_missing, comfy.progress(len(crops.unique_sources()[0])))
        transforms = [f.transform for f in tracked.faces]
        posed = dubbing.head_motion_from_video(motion, transforms, face.transform)
        return comfy.output(posed, notes=[tracked.summary()])


NODES = [AlignVideoToAudio, VideoHeadMotion]
