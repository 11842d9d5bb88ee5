"""Decoding the video latents: to an mp4 a chunk at a time (Decode To Video), or to IMAGE frames for short clips."""
from __future__ import annotations

import uuid

import torch
from comfy_api.latest import io

from ..aniportrait_lib.media import encode
from . import comfy_adapter as comfy
from . import schema


class DecodeToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitDecodeToVideo",
            display_name="AniPortrait Decode To Video (latents to mp4)",
            category=schema.VIDEO,
            description=("Decodes latents with the core VAE a chunk of frames at a time straight into an mp4 (H.264 + AAC "
                         "audio) in ComfyUI's temp folder, so a long video never sits in RAM as one IMAGE batch. Core Save "
                         "Video with format/codec auto or mp4/h264 saves it without re-encoding."),
            inputs=[
                io.Latent.Input("samples", tooltip="Latents from AniPortrait Sampler or from KSampler with the AniPortrait MODEL."),
                schema.vae(),
                io.Float.Input("fps", default=30.0, min=1.0, max=120.0, step=1.0, tooltip="Frame rate of the video (the motion's fps)."),
                io.Int.Input("chunk_frames", default=16, min=0, max=1024,
                             tooltip="Frames decoded at once; 0 = as many as half the free memory allows (at most 64)."),
                *codec_inputs(),
                io.Audio.Input("audio", optional=True, tooltip="The speech, written as AAC and cut to the video's length."),
            ],
            outputs=[io.Video.Output("video")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, samples, vae, fps, chunk_frames, quality, crf, audio=None) -> io.NodeOutput:
        latents = frame_latents(samples, vae)
        ratio = getattr(vae, "upscale_ratio", 8)
        scale = ratio if isinstance(ratio, int) else 8  # video VAEs report a (t, h, w) tuple
        num, _, h, w = latents.shape
        if chunk_frames == 0:
            chunk_frames = encode.auto_chunk_frames(num, w * scale, h * scale, comfy.free_ram_bytes() or 2 ** 31,
                                                    comfy.decode_bytes_per_frame(vae, h, w), comfy.free_vram_bytes())
        codec, path, wav, rate = video_target("video", quality, crf, audio)
        progress = comfy.progress(len(encode.plan_chunks(num, chunk_frames)))
        result = encode.decode_to_video(latents, lambda x: decode_latents(vae, x), path, fps, chunk_frames, codec, wav, rate,
                                        scale, progress=progress)
        return comfy.output(comfy.video_from_file(path), notes=[result.summary(fps)])


class DecodeFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitDecodeFrames",
            display_name="AniPortrait Decode Frames (latents to images)",
            category=schema.VIDEO,
            description=("Decodes the video latent of AniPortrait Sampler or KSampler (1, 4, frames, h, w) with the core "
                         "VAE a chunk of frames at a time into an IMAGE batch, for nodes that take frames (Paste Back, "
                         "previews). The whole clip is then in RAM: for long videos use Decode To Video."),
            inputs=[
                io.Latent.Input("samples", tooltip="Latents from AniPortrait Sampler or from KSampler with the AniPortrait MODEL."),
                schema.vae(),
                io.Int.Input("chunk_frames", default=16, min=1, max=1024, tooltip="Frames decoded at once."),
            ],
            outputs=[io.Image.Output("images")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, samples, vae, chunk_frames) -> io.NodeOutput:
        latents = frame_latents(samples, vae)
        chunks = encode.plan_chunks(latents.shape[0], chunk_frames)
        progress = comfy.progress(len(chunks))
        images = []
        for done, chunk in enumerate(chunks, 1):
            images.append(comfy.to_output_device(decode_latents(vae, latents[chunk.start:chunk.stop])))
            progress(done, len(chunks))
        return io.NodeOutput(torch.cat(images))


def codec_inputs() -> list:
    """quality and crf of the mp4 a node writes."""
    return [
        io.Combo.Input("quality", options=list(encode.QUALITIES), default="h264",
                       tooltip="h264: H.264 yuv420p at the crf below (plays everywhere). lossless: H.264 RGB crf 0 "
                               "(bit exact, large, not for browsers)."),
        io.Int.Input("crf", default=19, min=0, max=51, tooltip="H.264 quality: lower is better and larger (x264 default 23)."),
    ]


def video_target(kind: str, quality: str, crf: int, audio: dict | None) -> tuple[encode.Codec, str, object, int]:
    """What a node that writes an mp4 needs: the codec, a fresh file in ComfyUI's temp folder
    (``aniportrait_<kind>_<random>.<ext>``) and the core AUDIO's ``(waveform, sample_rate)`` (``(None, 0)`` without)."""
    codec = encode.pick_codec(quality, crf)
    path = f"{comfy.temp_directory()}/aniportrait_{kind}_{uuid.uuid4().hex[:12]}.{codec.extension}"
    wav, rate = (audio["waveform"], int(audio["sample_rate"])) if audio is not None else (None, 0)
    return codec, path, wav, rate


def encode_inputs() -> list:
    """chunk_frames, quality and crf of a node that writes an mp4 a chunk at a time."""
    return [io.Int.Input("chunk_frames", default=16, min=1, max=1024, tooltip="Frames decoded and written at once."),
            *codec_inputs()]


def frame_latents(samples: dict, vae) -> torch.Tensor:
    """The LATENT's frames (frames, 4, h, w), checked against the VAE's latent channels."""
    latents = encode.frame_latents(samples["samples"])
    encode.check_latents(latents, getattr(vae, "latent_channels", 4))
    return latents


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """core ``VAE.decode`` of one chunk -> (n, H, W, 3) float 0..1."""
    return vae.decode(latents)


NODES = [DecodeToVideo, DecodeFrames]
