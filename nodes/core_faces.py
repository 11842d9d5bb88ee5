"""Newer ComfyUI's own face landmarks (core FACE_LANDMARKS, ComfyUI 0.23+) as AniPortrait faces.

Core's "Detect Face Landmarks (MediaPipe)" node gives per image a list of faces (see
``aniportrait_lib/face/core_landmarks.py`` for the layout and where it was read). This node turns one face of one
image into the pack's Face; Face Reenactment and Video Pose Template take the whole value for a video through their
optional ``face_landmarks`` input.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.face import core_landmarks, selection
from ..aniportrait_lib.face.renderer import draw_pose_image
from . import comfy_adapter as comfy
from . import schema, sockets

#: core's type (defined by core's comfy_extras/nodes_mediapipe.py); declared here so older cores load the pack too
FaceLandmarks = io.Custom("FACE_LANDMARKS")


class FaceFromCoreLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceFromCoreLandmarks",
            display_name="AniPortrait Face From Core Landmarks",
            category=schema.FACE,
            description="The reference face from core's Detect Face Landmarks (MediaPipe) output (ComfyUI 0.23+): one face of "
                        "one image, given out like AniPortrait Face Analysis' face, with its reference pose image.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker", tooltip="Its .task file holds the canonical face model "
                                                                             "the mesh and head pose are computed with."),
                FaceLandmarks.Input("face_landmarks", tooltip="core Detect Face Landmarks (MediaPipe): face_landmarks."),
                io.Int.Input("frame", default=0, min=0, max=100000,
                             tooltip="Which image of the batch the landmarks were found on (0 = the first)."),
                *schema.face_choice(),
            ],
            outputs=[sockets.Face.Output("face"), io.Image.Output("reference_pose")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, face_landmarks, frame=0, which_face="largest", face_index=0,
                face_point="") -> io.NodeOutput:
        choose = selection.FaceChoice.from_inputs(which_face, face_index, face_point)
        faces = core_landmarks.faces_in_frame(face_landmarks, int(frame), face_landmarker.model)
        if not faces:
            raise ValueError(f"core's face landmarks have no face in image {frame}; pick an image where Detect Face Landmarks "
                             f"found one, or lower its min_confidence")
        face = choose.pick(faces, f"image {frame} of face_landmarks")
        pose_image = draw_pose_image(face.landmarks, face.width, face.height, normalized=True)
        note = f"{len(faces)} faces found, using {choose.describe()}" if len(faces) > 1 else None
        return comfy.output(face, comfy.uint8_to_image_batch(pose_image[None]), notes=[note])


NODES = [FaceFromCoreLandmarks]
