"""Face nodes: analyse the reference photo, track a video's face into a motion or a pose template."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.face import analysis, tracking
from ..aniportrait_lib.motion import pose_template, reenactment
from . import comfy_adapter as comfy
from . import sockets

ON_MISSING_TOOLTIP = ("Frames where no face is found: interpolate = between the nearest frames with a face (held at the ends), "
                      "hold = repeat the last face, stop = end at the first such frame (the original's behaviour).")


def _on_missing_input() -> io.Combo.Input:
    return io.Combo.Input("on_missing", options=list(tracking.ON_MISSING), default="interpolate", tooltip=ON_MISSING_TOOLTIP)


def _track(face_landmarker, frames, what: str, on_missing: str) -> tracking.TrackedFaces:
    images = comfy.image_batch_to_uint8(frames, what)
    return tracking.track_faces(images, face_landmarker, on_missing, comfy.progress(len(images)))


class FaceAnalysis(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceAnalysis",
            display_name="AniPortrait Face Analysis",
            category=comfy.CATEGORY,
            description="Finds the face in the reference photo: 478 landmarks, the canonical 3D mesh, head transform and blendshapes; also draws the reference pose image.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("image", tooltip="Reference portrait (the first image of a batch is used)."),
                io.Int.Input("width", default=0, min=0, max=comfy.MAX_SIZE, step=8, optional=True,
                             tooltip="0 = analyse the photo as it is. Otherwise resize it to the video size first (as the original did), "
                                     "so that landmarks match the photo the sampler stretches to width x height."),
                io.Int.Input("height", default=0, min=0, max=comfy.MAX_SIZE, step=8, optional=True, tooltip="See width."),
            ],
            outputs=[sockets.Face.Output("face"), io.Image.Output("reference_pose")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, image, width=0, height=0) -> io.NodeOutput:
        rgb, note = comfy.first_image_uint8(image, "reference image")
        face, pose_image = analysis.analyze_reference(face_landmarker, rgb, width, height)
        return comfy.output(face, comfy.uint8_to_image_batch(pose_image[None]), notes=[note])


class FaceReenactment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceReenactment",
            display_name="AniPortrait Face Reenactment",
            category=comfy.CATEGORY,
            description="A source video's face as a motion of the reference face: expressions relative to the source's most neutral "
                        "frame, the source's head rotation, translation re-anchored on the reference. Project and render it like any motion.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("source_frames", tooltip="Frames of the driving video (e.g. core Get Video Components)."),
                sockets.Face.Input("face", tooltip="The reference face (AniPortrait Face Analysis)."),
                io.Float.Input("fps", default=30.0, min=1.0, max=240.0, step=0.01, tooltip="Frame rate of the source video (Get Video Components' fps)."),
                io.Int.Input("smoothing_window", default=reenactment.REENACTMENT_SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving average over head poses in frames (the original uses 3)."),
                _on_missing_input(),
            ],
            outputs=[sockets.Motion.Output("motion")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, source_frames, face, fps, smoothing_window, on_missing) -> io.NodeOutput:
        tracked = _track(face_landmarker, source_frames, "source frames", on_missing)
        motion = reenactment.reenact(tracked.faces, face, fps, smoothing_window)
        return comfy.output(motion, notes=[tracked.summary()])


class VideoPoseTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitVideoPoseTemplate",
            display_name="AniPortrait Video Pose Template",
            category=comfy.CATEGORY,
            description="Extracts the head motion of a video (relative to its first frame, resampled to 30 fps, smoothed) as a pose template.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("frames", tooltip="Video frames, e.g. from core Get Video Components."),
                io.Float.Input("fps", default=25.0, min=1.0, max=240.0, step=0.01, tooltip="Frame rate of the video (connect Get Video Components' fps)."),
                io.Int.Input("smoothing_window", default=pose_template.TEMPLATE_SMOOTHING_WINDOW, min=1, max=61,
                             tooltip="Moving-average window in frames at 30 fps (the original uses 5)."),
                _on_missing_input(),
            ],
            outputs=[sockets.PoseTemplate.Output("pose_template")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, frames, fps, smoothing_window, on_missing="interpolate") -> io.NodeOutput:
        tracked = _track(face_landmarker, frames, "frames", on_missing)
        template = pose_template.template_from_faces(tracked.faces, fps, smoothing_window)
        return comfy.output(template, notes=[tracked.summary()])


NODES = [FaceAnalysis, FaceReenactment, VideoPoseTemplate]
