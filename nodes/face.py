"""Face nodes: analyse the reference photo, track a video's face into a motion or a pose template."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.face import analysis, core_landmarks, selection, tracking
from ..aniportrait_lib.motion import pose_template, reenactment
from ..aniportrait_lib.compose import footage as footage_steps
from . import comfy_adapter as comfy
from . import schema, sockets, video_in
from .core_faces import FaceLandmarks

def _track(face_landmarker, footage, on_missing: str, choose: selection.FaceChoice,
           face_landmarks=None) -> tracking.TrackedFaces:
    """The followed face of every frame of footage (read a frame at a time): found by the pack's landmarker, or read
    from core's FACE_LANDMARKS."""
    if face_landmarks is not None:
        count = footage.num_frames
        detections = core_landmarks.faces_per_frame(face_landmarks, face_landmarker.model, count, footage.size)
        return tracking.track_detections(detections, on_missing, comfy.progress(count), count, choose)
    progress = comfy.progress(len(footage.unique_sources()[0]))
    return footage_steps.track_footage(footage, face_landmarker, on_missing, progress, choose)


def core_landmarks_input() -> io.Input:
    """Optional core FACE_LANDMARKS (newer ComfyUI's Detect Face Landmarks) instead of the pack's own detection."""
    return FaceLandmarks.Input(
        "face_landmarks", optional=True,
        tooltip="Optional: core's face landmarks of these same frames (Detect Face Landmarks, ComfyUI 0.23+); when "
                "connected the faces come from it and the face landmarker only supplies the canonical face model.")


class FaceAnalysis(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceAnalysis",
            display_name="AniPortrait Face Analysis (photo to face)",
            category=schema.FACE,
            description="Finds the face in the reference photo: 478 landmarks, the canonical 3D mesh, head transform and blendshapes; also draws the reference pose image.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("image", tooltip="Reference portrait (the first image of a batch is used)."),
                *schema.resize_to_video_size(),
                *schema.face_choice(),
            ],
            outputs=[sockets.Face.Output("face"), io.Image.Output("reference_pose")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, image, width=0, height=0, which_face="largest", face_index=0,
                face_point="") -> io.NodeOutput:
        choose = selection.FaceChoice.from_inputs(which_face, face_index, face_point)
        rgb, note = comfy.first_image_uint8(image, "reference image")
        face, pose_image = analysis.analyze_reference(face_landmarker, rgb, width, height, choose)
        return comfy.output(face, comfy.uint8_to_image_batch(pose_image[None]), notes=[note])


class FaceReenactment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceReenactment",
            display_name="AniPortrait Face Reenactment",
            category=schema.MOTION,
            description="A source video's face as a motion of the reference face: expressions relative to the source's most neutral "
                        "frame, the source's head rotation, translation re-anchored on the reference. Project and render it like any motion.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                video_in.frames_input("source_frames", "The driving video (Load Video), or its frames as an IMAGE batch."),
                sockets.Face.Input("face", tooltip="The reference face (AniPortrait Face Analysis)."),
                schema.source_fps(30.0),
                io.Int.Input("smoothing_window", default=reenactment.REENACTMENT_SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving average over head poses in frames (the original uses 3)."),
                schema.on_missing(),
                *schema.face_choice(),
                core_landmarks_input(),
            ],
            outputs=[sockets.Motion.Output("motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, source_frames, face, fps, smoothing_window, on_missing, which_face="largest",
                face_index=0, face_point="", face_landmarks=None) -> io.NodeOutput:
        choose = selection.FaceChoice.from_inputs(which_face, face_index, face_point)
        footage = video_in.footage_of(source_frames, "source frames", fps)  # a VIDEO brings its own fps
        tracked = _track(face_landmarker, footage, on_missing, choose, face_landmarks)
        motion = reenactment.reenact(tracked.faces, face, footage.fps, smoothing_window)
        return comfy.output(motion, notes=[tracked.summary()])


class VideoPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitVideoPoseTemplate",
            display_name="AniPortrait Video Pose Template",
            category=schema.MOTION,
            description="Extracts the head motion of a video (relative to its first frame, resampled to 30 fps, smoothed) as a pose template.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                video_in.frames_input("frames", "The video (Load Video), or its frames as an IMAGE batch."),
                schema.source_fps(25.0),
                io.Int.Input("smoothing_window", default=pose_template.TEMPLATE_SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving-average window in frames at 30 fps (the original uses 5)."),
                schema.on_missing(),
                *schema.face_choice(),
                core_landmarks_input(),
            ],
            outputs=[sockets.PoseTemplate.Output("pose_template")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, frames, fps, smoothing_window, on_missing="interpolate", which_face="largest",
                face_index=0, face_point="", face_landmarks=None) -> io.NodeOutput:
        choose = selection.FaceChoice.from_inputs(which_face, face_index, face_point)
        footage = video_in.footage_of(frames, "frames", fps)  # a VIDEO brings its own fps
        tracked = _track(face_landmarker, footage, on_missing, choose, face_landmarks)
        template = pose_template.template_from_faces(tracked.faces, footage.fps, smoothing_window)
        return comfy.output(template, notes=[tracked.summary()])


NODES = [FaceAnalysis, FaceReenactment, VideoPoseTemplate]
