"""Motion editing nodes: expression/mouth strength and head motion, shift/trim in time, natural blinks,
keyframes for frame interpolation.

They take and give ``ANIPORTRAIT_MOTION``, so they fit after any motion source (audio, template,
reenactment) and before Project Landmarks.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.motion import edit as motion_edit
from . import comfy_adapter as comfy
from . import schema, sockets


def _strength(name: str, tooltip: str, maximum: float = 3.0) -> io.Float.Input:
    return io.Float.Input(name, default=1.0, min=0.0, max=maximum, step=0.05, tooltip=tooltip)


class EditMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitEditMotion",
            display_name="AniPortrait Edit Motion",
            category=schema.MOTION,
            description="Scales a motion's lip movement, its whole expression (measured from the reference face's own mesh) "
                        "and its head motion, or freezes the head, and smooths the meshes over time. The defaults give the "
                        "motion back unchanged.",
            inputs=[
                sockets.Face.Input("face", tooltip="The reference face the motion was made for (its mesh is the neutral face)."),
                sockets.Motion.Input("motion"),
                _strength("mouth_strength", "Lip and mouth movement: 0 = the reference's mouth throughout, 1 = as is, 2 = doubled. Fades out around the lips."),
                _strength("expression_strength", "All face movement (lips, brows, eyes): 0 = the reference's expression throughout, 1 = as is."),
                _strength("head_rotation_scale", "Head rotation about the reference pose: 0 = none, 1 = as is."),
                _strength("head_translation_scale", "Head translation about the reference position: 0 = none, 1 = as is."),
                io.Boolean.Input("freeze_head", default=False, tooltip="Hold the head still at the reference image's pose (overrides both head scales)."),
                io.Int.Input("mesh_smoothing", default=1, min=1, max=31, tooltip="Centred moving average of the face meshes over this many frames (1 = off)."),
            ],
            outputs=[sockets.Motion.Output("edited_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face, motion, mouth_strength, expression_strength, head_rotation_scale, head_translation_scale,
                freeze_head, mesh_smoothing) -> io.NodeOutput:
        edited = motion_edit.edit_motion(face, motion, mouth_strength, expression_strength, head_rotation_scale,
                                         head_translation_scale, freeze_head, mesh_smoothing)
        return io.NodeOutput(edited)


class ShiftMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitShiftMotion",
            display_name="AniPortrait Shift Motion (sync and trim)",
            category=schema.MOTION,
            description="Moves a motion in time by whole frames (to fix audio/video sync) and trims frames off its ends.",
            inputs=[
                sockets.Motion.Input("motion"),
                io.Int.Input("offset_frames", default=0, min=-600, max=600,
                             tooltip="Positive = the face moves later (the first frame is held), negative = earlier (the first frames are dropped). "
                                     "With keep_length, less than the clip's length minus one either way (more would hold one frame throughout)."),
                io.Boolean.Input("keep_length", default=True,
                                 tooltip="Keep the frame count (stays in step with the audio): a later motion loses frames at the end, an earlier one holds its last frame."),
                io.Int.Input("trim_start", default=0, min=0, max=100000, tooltip="Frames dropped from the beginning (after the shift)."),
                io.Int.Input("trim_end", default=0, min=0, max=100000, tooltip="Frames dropped from the end (after the shift)."),
            ],
            outputs=[sockets.Motion.Output("shifted_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, motion, offset_frames, keep_length, trim_start, trim_end) -> io.NodeOutput:
        shifted = motion_edit.shift_motion(motion, offset_frames, keep_length)
        out = motion_edit.trim_motion(shifted, trim_start, trim_end)
        note = f"{motion.num_frames} -> {out.num_frames} frames ({out.num_frames / out.fps:.2f} s at {out.fps:g} fps)"
        return comfy.output(out, notes=[note])


class AddBlinks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitAddBlinks",
            display_name="AniPortrait Add Blinks",
            category=schema.MOTION,
            description="Adds natural eye blinks, which audio does not carry: at random, seeded intervals the upper lids "
                        "close onto the lower ones and open again, except where the motion's eyes are already closed.",
            inputs=[
                sockets.Face.Input("face", tooltip="The reference face the motion was made for (its eyes set the open-eye size)."),
                sockets.Motion.Input("motion"),
                io.Float.Input("blinks_per_minute", default=15.0, min=0.0, max=60.0, step=0.5, tooltip="Average blink rate (people: about 10-20)."),
                io.Int.Input("blink_frames", default=6, min=1, max=30, tooltip="Length of one blink in frames at 30 fps (scaled to the motion's fps)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Same seed, same blinks."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05, tooltip="How far the lids close: 1 = fully shut."),
            ],
            outputs=[sockets.Motion.Output("blinking_motion", display_name="motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face, motion, blinks_per_minute, blink_frames, seed, strength) -> io.NodeOutput:
        plan = motion_edit.plan_blinks(face, motion, blinks_per_minute, blink_frames, seed)
        out = motion_edit.apply_blinks(face, motion, plan, strength)
        note = f"{len(plan.starts)} blinks of {plan.length} frames added"
        skipped = f"{plan.skipped} left out where the eyes are already closed" if plan.skipped else None
        return comfy.output(out, notes=[note, skipped])


class MotionKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitMotionKeyframes",
            display_name="AniPortrait Motion Keyframes",
            category=schema.MOTION,
            description="Keeps every k-th frame of a motion (the original's -acc), so the video model animates k times fewer "
                        "frames; a frame-interpolation node with multiplier = k (core Run Frame Interpolation Model, or RIFE/FILM "
                        "VFI of ComfyUI-Frame-Interpolation) puts the frames between them back, for a video at video_fps.",
            inputs=[
                sockets.Motion.Input("motion"),
                io.Int.Input("every", default=3, min=1, max=8,
                             tooltip="Keep every k-th frame. 2-3 keep lips in sync; the original used 3. 1 keeps every frame."),
            ],
            outputs=[
                sockets.Motion.Output("keyframe_motion", display_name="motion"),
                io.Int.Output("multiplier", tooltip="The frame-interpolation node's multiplier (= every)."),
                io.Float.Output("video_fps", tooltip="Frame rate of the interpolated video (the input motion's)."),
            ],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, motion, every) -> io.NodeOutput:
        kept = motion_edit.keyframes(motion, every)
        full = (kept.num_frames - 1) * every + 1
        note = (f"{motion.num_frames} -> {kept.num_frames} keyframes; interpolated x{every}: {full} frames at "
                f"{motion.fps:g} fps")
        return comfy.output(kept, int(every), float(motion.fps), notes=[note])


NODES = [EditMotion, ShiftMotion, AddBlinks, MotionKeyframes]
