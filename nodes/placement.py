"""Face placement node: the reference face from five points or a box, for faces MediaPipe does not find (drawings, anime)."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.face import placement
from ..aniportrait_lib.face.renderer import draw_pose_image
from . import comfy_adapter as comfy
from . import schema, sockets


class FaceFromPoints(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceFromPoints",
            display_name="AniPortrait Face From Points (by hand)",
            category=schema.FACE,
            description="The reference face placed by hand, for drawings and anime faces MediaPipe does not find: MediaPipe's canonical "
                        "3D face is shaped to the drawing's proportions (eyes, mouth, lower face) and fitted through five points "
                        "(or a box), and given out like AniPortrait Face Analysis' face (neutral expression).",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker", tooltip="Its .task file holds the canonical face model."),
                io.Image.Input("image", tooltip="Reference image (the first image of a batch is used); the points are in its pixels."),
                io.Combo.Input("mode", options=list(placement.MODES), default="points",
                               tooltip="points: five points (and optional named ones); box: the face's box (from the hairline to "
                                       "the chin, cheek to cheek; it may reach past the image, e.g. a chin below the frame)."),
                io.String.Input("position", default="", placeholder="points: x,y; x,y; x,y; x,y; x,y    box: x0,y0,x1,y1",
                                tooltip="Pixels of the image, origin top-left. Points: " + placement.POINTS_FORMAT
                                        + ". Named points sharpen the fit, e.g. '...; chin=200,450; upper_lip=197,368'. JSON [{\"x\":..,\"y\":..}, ...] "
                                        "from a points editor works too, or a JSON object of names ({\"left_eye\": [x, y], ..., \"chin\": [x, y]}). "
                                        "Box: " + placement.BOX_FORMAT + "."),
                io.Combo.Input("fit", options=list(placement.FITS), default="pose",
                               tooltip="points mode: pose = full head pose (turned and tilted heads); frontal = facing the camera, "
                                       "only tilted in the image plane (drawings with unusual proportions). A box is always frontal."),
                io.Mask.Input("mask", optional=True, tooltip="A mask of the face (e.g. from a segmentation node): its bounding box is "
                                                             "used as the box and the position text is ignored."),
                *schema.resize_to_video_size(),
            ],
            outputs=[sockets.Face.Output("face"), io.Image.Output("reference_pose")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, image, mode, position, fit, mask=None, width=0, height=0) -> io.NodeOutput:
        rgb, note = comfy.first_image_uint8(image, "reference image")
        mask_array = None if mask is None else mask.reshape((-1,) + tuple(mask.shape[-2:]))[0].float().cpu().numpy()
        placed, summary = placement.place_reference(face_landmarker.model, (rgb.shape[1], rgb.shape[0]), mode, position, fit,
                                                    mask_array, width, height)
        face = placed.face
        pose_image = draw_pose_image(face.landmarks, face.width, face.height, normalized=True)
        return comfy.output(face, comfy.uint8_to_image_batch(pose_image[None]), notes=[summary, note])


NODES = [FaceFromPoints]
