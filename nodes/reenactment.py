"""Face reenactment: a source video's expressions and head motion drive the reference face."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..aniportrait_lib.face import reenactment
from . import comfy_models
from . import types as T
from .stage1 import CATEGORY, _images_to_uint8, _uint8_to_images

log = logging.getLogger(__name__)


class FaceReenactment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceReenactment",
            display_name="AniPortrait Face Reenactment",
            category=CATEGORY,
            description="Retargets a source video's face onto the reference face (expressions relative to the source's most neutral "
                        "frame, the source's head rotation, translation re-anchored on the reference) and draws the pose images.",
            inputs=[
                T.FaceLandmarkerModel.Input("face_landmarker"),
                io.Image.Input("source_frames", tooltip="Frames of the driving video (e.g. core Get Video Components)."),
                T.Face.Input("face", tooltip="The reference face (AniPortrait Face Analysis)."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8, tooltip="Output width in pixels."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8, tooltip="Output height in pixels."),
                io.Int.Input("smoothing_window", default=3, min=1, max=61, tooltip="Moving average over head poses (the original uses 3)."),
            ],
            outputs=[io.Image.Output("pose_images")],
        )

    @classmethod
    def execute(cls, face_landmarker, source_frames, face, width, height, smoothing_window) -> io.NodeOutput:
        frames = _images_to_uint8(source_frames, "source frames")
        progress = comfy_models.progress(2 * len(frames))
        faces = []
        for i, frame in enumerate(frames):
            faces.append(face_landmarker.analyze_frames([frame])[0])
            progress(i + 1, 2 * len(frames))
            if faces[-1] is None:  # the original stops reading at the first frame without a face
                break
        faces = reenactment.faces_until_first_miss(faces)
        if len(faces) < len(frames):
            log.warning("AniPortrait: no face in source frame %d; reenacting the first %d of %d frames", len(faces), len(faces), len(frames))
        result = reenactment.retarget(faces, face, smoothing_window)
        src_h, src_w = frames.shape[1:3]
        images = reenactment.render_reenactment(result, src_w, src_h, width, height,
                                                progress=lambda done, total: progress(len(frames) + done, len(frames) + total))
        return io.NodeOutput(_uint8_to_images(images))


NODES = [FaceReenactment]
