"""Paste Back To Video: generated latents decoded, pasted into the source and encoded, a chunk at a time."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.compose import paste_video
from ..aniportrait_lib.media import encode
from ..aniportrait_lib.media.frames import Footage
from . import comfy_adapter as comfy
from . import schema, sockets, video_in
from .video_out import decode_latents, encode_inputs, frame_latents, video_target


class PasteBackToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitPasteBackToVideo",
            display_name="AniPortrait Paste Back To Video",
            category=schema.COMPOSE,
            description=("Decodes the generated latents a chunk at a time, pastes each frame into its source frame at full "
                         "resolution and writes the result as an mp4 with the audio, so a long video never sits in memory. "
                         "A video keeps its own frame rate: every source frame appears once, in order, with the generated "
                         "frame nearest in time. Works after AniPortrait Sampler and after KSampler."),
            inputs=[
                io.Latent.Input("samples", tooltip="Latents from AniPortrait Sampler or from KSampler with the AniPortrait MODEL."),
                schema.vae(),
                sockets.CropInfo.Input("crop_info", tooltip="From AniPortrait Face Crop."),
                video_in.frames_input("original", "What was cropped: the photo, the VIDEO, or Align Video To Audio's "
                                                  "aligned frames (then the output has the source video's frame rate)."),
                io.Float.Input("fps", default=30.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frame rate of the generated frames on a photo or IMAGE batch (a video's own rate is used "
                                       "for a VIDEO or aligned frames)."),
                *compose_inputs(),
                *encode_inputs(),
                io.Audio.Input("audio", optional=True, tooltip="The speech (aligned audio for dubbing), cut to the video's length."),
            ],
            outputs=[io.Video.Output("video")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, samples, vae, crop_info, original, fps, mask, expand, feather, color_match, chunk_frames, quality,
                crf, audio=None) -> io.NodeOutput:
        latents = frame_latents(samples, vae)
        footage = _original_footage(original, latents.shape[0], fps)
        comfy.check_memory("paste_video", chunk_frames=chunk_frames, width=footage.size[0], height=footage.size[1])
        plan = paste_video.plan_paste(footage, crop_info, latents.shape[0])
        codec, path, wav, rate = video_target("paste", quality, crf, audio)
        width, height = footage.size
        decode = lambda start, stop: decode_latents(vae, latents[start:stop]).float().cpu().numpy() * 255.0  # noqa: E731
        with encode.video_writer(path, width, height, plan.fps, codec, plan.num_frames, wav, rate) as writer:
            paste_video.paste_into_video(decode, plan, footage, crop_info, writer, mask, expand, feather, color_match,
                                         chunk_frames, comfy.progress(len(encode.plan_chunks(plan.num_frames, chunk_frames))))
            has_audio = writer.has_audio
        note = (f"{plan.num_frames} frames {width}x{height} at {plan.fps:g} fps from {latents.shape[0]} generated frames, "
                f"{'with' if has_audio else 'without'} audio; {codec.label}")
        return comfy.output(comfy.video_from_file(path), notes=[note])


def compose_inputs() -> list:
    """mask, expand, feather and color_match, as on AniPortrait Paste Back."""
    from .compose import PasteBack

    names = ("mask", "expand", "feather", "color_match")
    return [i for i in PasteBack.define_schema().inputs if i.id in names]


def _original_footage(original, num_generated: int, fps: float) -> Footage:
    """A photo shown for every generated frame, or the frames' footage."""
    if video_in.is_image_batch(original) and original.shape[0] == 1:
        return paste_video.photo_timeline(comfy.image_batch_to_uint8(original, "original"), num_generated, fps)
    return video_in.footage_of(original, "original", fps)


NODES = [PasteBackToVideo]
