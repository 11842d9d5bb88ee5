"""Compose nodes: crop the face like AniPortrait's training data, paste generated frames back."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib import compose, imaging
from ..aniportrait_lib.compose import footage as footage_steps
from ..aniportrait_lib.face import selection
from . import comfy_adapter as comfy
from . import schema, sockets, video_in


class FaceCrop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitFaceCrop",
            display_name="AniPortrait Face Crop",
            category=schema.COMPOSE,
            description="Crops the face of a photo or video at the video size, framed like AniPortrait's training crops (face "
                        "centred, face box about half the crop width), following the head smoothly in a video. The crop info "
                        "lets AniPortrait Paste Back put the generated frames back. A VIDEO (or aligned frames) is tracked "
                        "a frame at a time and its crops are cut when read, so any length fits in memory.",
            inputs=[
                sockets.FaceLandmarkerModel.Input("face_landmarker"),
                video_in.frames_input("image", "A photo, an IMAGE batch, a VIDEO, or Align Video To Audio's frames."),
                *schema.video_size(),
                io.Float.Input("scale", default=compose.DEFAULT_SCALE, min=1.0, max=6.0, step=0.05,
                               tooltip="Crop width / face size (face size = mean of the landmark box's width and height). "
                                       "2.0 puts the face box at about half the crop width."),
                io.Float.Input("vertical_offset", default=compose.DEFAULT_VERTICAL_OFFSET, min=-0.5, max=0.5, step=0.01,
                               tooltip="Moves the crop down by this fraction of its height (positive = the face sits higher). "
                                       "0 centres the face box, which puts the eyes at about 40% of the height."),
                io.Int.Input("smoothing", default=compose.DEFAULT_SMOOTHING, min=1, max=61,
                             tooltip="Centred moving average of the crop's centre and size over this many frames (1 = off)."),
                schema.on_missing(),
                io.Combo.Input("pad", options=list(compose.PAD_MODES), default="edge",
                               tooltip="Parts of the crop outside the image: edge = repeat the border pixels, constant = black."),
                *schema.face_choice(),
                sockets.Face.Input("face", optional=True,
                                   tooltip="Optional: a face placed by hand (AniPortrait Face From Points on this picture) for "
                                           "drawings the landmarker cannot read; every frame is then cut at its window."),
            ],
            outputs=[io.Image.Output("crops", tooltip="The crops of a photo or IMAGE batch; of a VIDEO or aligned frames only "
                                                      "the first (the reference): the others are in cropped_frames."),
                     sockets.CropInfo.Output("crop_info"),
                     sockets.Footage.Output("cropped_frames", tooltip="Every crop, cut when a node reads it (Video Head Motion)."),
                     sockets.Face.Output("crop_face", tooltip="The face in the first crop's pixels (for Audio2Mesh, Project "
                                                              "Landmarks): a placed face placed again on the crop, keeping "
                                                              "the drawing's shape; a found face moved onto the crop.")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, face_landmarker, image, width, height, scale, vertical_offset, smoothing, on_missing, pad,
                which_face="largest", face_index=0, face_point="", face=None) -> io.NodeOutput:
        frames = None
        if video_in.is_image_batch(image):  # converted once: tracked, then cropped as float levels below
            comfy.check_memory("face_crop", frames=len(image), width=image.shape[2], height=image.shape[1],
                               crop_size=(width, height))
            frames = comfy.image_batch_to_uint8(image, "image")
        source = video_in.footage_of(image if frames is None else frames, "image")
        first_face = face
        notes = []
        if face is not None:
            cropped, info = footage_steps.crop_placed(source, face, (width, height), scale, vertical_offset, pad)
            notes.append("cut at the given face's window in every frame")
        else:
            choose = selection.FaceChoice.from_inputs(which_face, face_index, face_point)
            cropped, info, tracked = footage_steps.crop_footage(source, face_landmarker, (width, height), scale,
                                                                vertical_offset, smoothing, on_missing, pad,
                                                                comfy.progress(len(source.unique_sources()[0])), choose)
            notes.append(tracked.summary())
            first_face = tracked.faces[0]
        if frames is not None:  # all crops, as float levels: a crop pasted back unchanged stays exact
            crops = comfy.levels_to_image_batch(compose.crop_frames(frames[: info.num_frames], info.boxes, info.crop_size, pad))
        else:
            crops = comfy.uint8_to_image_batch(cropped.read_batch(0, 1))
        crop_face = footage_steps.face_in_crop(first_face, info.boxes[0], info.crop_size, face_landmarker.model, source.size)
        return comfy.output(crops, info, cropped, crop_face, notes=notes)


class PasteBack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitPasteBack",
            display_name="AniPortrait Paste Back",
            category=schema.COMPOSE,
            description="Puts generated face frames back into the original photo or video at its full resolution, "
                        "blended with a feathered mask; also outputs the mask.",
            inputs=[
                io.Image.Input("generated", tooltip="Generated frames (any size; stretched onto each crop window)."),
                sockets.CropInfo.Input("crop_info", tooltip="From AniPortrait Face Crop."),
                video_in.frames_input("original", "The photo (1 image: used for every frame) or the frames that were cropped "
                                                  "(as many as generated; all are read into memory: for long videos use "
                                                  "Paste Back To Video).", [io.Image, sockets.Footage]),
                io.Combo.Input("mask", options=list(compose.MASK_MODES), default=compose.DEFAULT_MASK,
                               tooltip="box = the whole crop (keeps head motion); face = the face landmarks' outline, expanded."),
                io.Float.Input("expand", default=compose.DEFAULT_EXPAND, min=0.0, max=1.0, step=0.01,
                               tooltip="face mask only: grows the landmarks' outline by this fraction (forehead, chin)."),
                io.Float.Input("feather", default=compose.DEFAULT_FEATHER, min=0.0, max=compose.MAX_FEATHER, step=0.01,
                               tooltip="Width over which the mask fades in from its edge, as a fraction of the face size "
                                       "(0.05 = 5 px on a 100 px face; 0 = hard edge)."),
                io.Boolean.Input("color_match", default=False,
                                 tooltip="Match the generated colours (LAB mean and spread inside the mask) to the original."),
            ],
            outputs=[io.Image.Output("images"), io.Mask.Output("paste_mask", display_name="mask")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, generated, crop_info, original, mask, expand, feather, color_match) -> io.NodeOutput:
        count = len(original) if video_in.is_image_batch(original) else original.num_frames
        comfy.check_memory("paste_back", frames=max(len(generated), count), width=crop_info.source_size[0],
                           height=crop_info.source_size[1], originals=count,
                           crop_size=(generated.shape[2], generated.shape[1]))
        gen = comfy.image_batch_to_levels(generated, "generated")  # unrounded: a crop pasted back unchanged stays exact
        originals = (comfy.image_batch_to_uint8(original, "original") if video_in.is_image_batch(original)
                     else original.read_batch(0, original.num_frames))
        frames, masks = compose.paste_frames(gen, originals, crop_info, mask, expand, feather, color_match,
                                             comfy.progress(len(gen)))
        return comfy.output(comfy.uint8_to_image_batch(frames), comfy.to_output_device(imaging.uint8_to_float(masks)))


NODES = [FaceCrop, PasteBack]
