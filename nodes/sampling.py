"""Stage-2 nodes: the video conditioning, the pack's sampler and the MODEL's options (context windows, compile)."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aniportrait_lib.sampling import compiling, pose_source, reference, sampler
from . import comfy_adapter as comfy
from . import comfy_model, schema, sockets

MAX_CONTEXT = 32  # length of the motion modules' position table
CONTEXT_DIM = 768  # the released UNets' cross-attention width (CLIP ViT-L/14 image embeddings)


def reference_and_pose_inputs() -> list:
    """The conditioning's inputs: the encoders, the reference photo, the poses and the size."""
    return [
        schema.vae(),
        io.ClipVision.Input("clip_vision", tooltip="sd-image-variations image encoder (CLIP ViT-L/14 with projection)."),
        io.Image.Input("reference_image", tooltip="The portrait to animate (first image is used)."),
        io.Image.Input("pose_images", optional=True,
                       tooltip="Lip-coloured pose images (AniPortrait Render Pose Images, or edited by other nodes); one output frame per image. Connect this or landmarks."),
        sockets.Landmarks.Input("landmarks", optional=True,
                                tooltip="Landmarks from AniPortrait Project Landmarks: each window's pose images are drawn when needed (same video, far less memory than connecting every pose image). Connect this or pose_images."),
        *schema.video_size(),
    ]


class Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitSampler",
            display_name="AniPortrait Sampler",
            category=schema.VIDEO,
            description="Samples the video with the original AniPortrait's DDIM over its looped context windows, several windows per network call, pose frames drawn per window. Wired like KSampler: swapping the two is one node.",
            inputs=[
                schema.video_model(),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed (drawn on the CPU: same seed, same video on any GPU)."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="DDIM steps."),
                io.Float.Input("cfg", default=3.5, min=1.0, max=20.0, step=0.1, tooltip="Guidance scale; 1.0 skips the negative pass (about 2x faster)."),
                io.Conditioning.Input("positive", tooltip="positive from AniPortrait Video Conditioning."),
                io.Conditioning.Input("negative", tooltip="negative from AniPortrait Video Conditioning."),
                io.Latent.Input("latent_image", tooltip="The empty video latent from AniPortrait Video Conditioning (it sets the length and size)."),
                io.Int.Input("context_frames", default=16, min=1, max=MAX_CONTEXT, tooltip="Frames per context window (the motion module was trained on 16)."),
                io.Int.Input("context_overlap", default=4, min=0, max=MAX_CONTEXT - 1, tooltip="Frames shared by neighbouring windows; smaller than context_frames."),
                io.Int.Input("window_batch", default=1, min=1, max=8,
                             tooltip="Context windows per network call (videos over 16 frames). 4 took 25 % less time on a CPU; not measured on a GPU yet. Needs that many times the activation memory; the video is the same."),
                io.Combo.Input("compile", options=["off", *compiling.BACKENDS], default="off",
                               tooltip="torch.compile the video UNet's ResNet, feed-forward and motion blocks for this run, for a GPU (on a CPU it made the full-size sampler 13-27 % slower). The first run of a size compiles (minutes); later runs reuse it. The video is the same up to float rounding."),
            ],
            outputs=[io.Latent.Output("latent")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, model, seed, steps, cfg, positive, negative, latent_image, context_frames, context_overlap,
                window_batch=1, compile="off") -> io.NodeOutput:
        networks = comfy_model.networks_of(model, "AniPortrait Sampler", " (for other models use KSampler)")
        conditioning = comfy_model.video_conditioning(model, positive, negative)
        frames, (h, w) = conditioning.poses.num_frames, conditioning.reference_latent.shape[-2:]
        load = comfy.sampler_loader(model, frames=frames, width=8 * w, height=8 * h, cfg=cfg, context_frames=context_frames,
                                    context_overlap=context_overlap, window_batch=window_batch)
        backend = None if compile == "off" else compile
        latents = sampler.sample_latent(
            networks, conditioning, latent=latent_image["samples"], steps=steps, cfg=cfg, seed=seed,
            context_frames=context_frames, context_overlap=context_overlap, window_batch=window_batch,
            compile_backend=backend, load=load, dtype=comfy_model.compute_dtype(model),
            progress=comfy.progress(1, with_previews=True))
        note = f"{len(compiling.compile_targets(networks.video_unet))} video-UNet blocks ran compiled with {backend}" if backend else None
        return comfy.output({"samples": comfy.to_output_device(latents)}, notes=[note])


class VideoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitVideoConditioning",
            display_name="AniPortrait Video Conditioning",
            category=schema.VIDEO,
            description="Encodes the reference photo and takes the pose frames (or landmarks, drawn per window): positive, negative and the empty video latent for AniPortrait Sampler or KSampler.",
            inputs=reference_and_pose_inputs(),
            outputs=[io.Conditioning.Output("positive"), io.Conditioning.Output("negative"), io.Latent.Output("latent")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, vae, clip_vision, reference_image, width, height, pose_images=None, landmarks=None) -> io.NodeOutput:
        ref_rgb, note = comfy.first_image_uint8(reference_image, "reference image")
        poses = pose_frames(pose_images, landmarks, "the conditioning node")
        sampler.check_size(width, height, len(poses))
        ref = encode_reference(vae, clip_vision, ref_rgb, width, height, CONTEXT_DIM)
        raw_latent = comfy.to_output_device(sampler.to_vae_space(ref.latent))
        positive = comfy_model.conditioning(ref.clip_embeds, raw_latent, poses, use_reference=True)
        negative = comfy_model.conditioning(ref.clip_embeds, raw_latent, poses, use_reference=False)
        empty = comfy.to_output_device(torch.zeros(1, 4, len(poses), height // 8, width // 8))
        return comfy.output(positive, negative, {"samples": empty}, notes=[note, f"{len(poses)} frames at {width}x{height}"])


class ContextWindows(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitContextWindows",
            display_name="AniPortrait Context Windows (for KSampler)",
            category=schema.VIDEO,
            description="Puts the original AniPortrait's fixed, looped context windows on the MODEL for KSampler (core Context Windows with dim 2 also works, but moves its windows at every step).",
            inputs=[
                schema.video_model(),
                io.Int.Input("context_frames", default=16, min=1, max=MAX_CONTEXT, tooltip="Frames per window (the motion module was trained on 16)."),
                io.Int.Input("context_overlap", default=4, min=0, max=MAX_CONTEXT - 1, tooltip="Frames shared by neighbouring windows; smaller than context_frames."),
            ],
            outputs=[io.Model.Output(tooltip="The model with the original's context windows applied during sampling.")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, model, context_frames, context_overlap) -> io.NodeOutput:
        if context_overlap >= context_frames:
            raise ValueError(f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames}): lower context_overlap.")
        return io.NodeOutput(comfy_model.with_original_context_windows(model, context_frames, context_overlap))


class CompileModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitCompileModel",
            display_name="AniPortrait Compile Model (torch.compile)",
            category=schema.VIDEO,
            description="torch.compile of the video UNet's ResNet, feed-forward and motion blocks while KSampler samples (AniPortrait Sampler has its own compile input); the first run of a size compiles for minutes. For a GPU: on a CPU it was slower.",
            inputs=[
                schema.video_model(),
                io.Combo.Input("backend", options=list(compiling.BACKENDS), default="inductor",
                               tooltip="torch.compile backend (core TorchCompileModel's choices)."),
            ],
            outputs=[io.Model.Output(tooltip="The model, compiled block by block while sampling.")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, model, backend) -> io.NodeOutput:
        compiled, blocks = comfy_model.with_compiled_blocks(model, backend)
        return comfy.output(compiled, notes=[f"{blocks} blocks compiled with {backend} while sampling"])


def encode_reference(vae, clip_vision, ref_rgb, width: int, height: int, context_dim: int) -> reference.Reference:
    """The reference photo through core's VAE and CLIP vision encoders (sampler-scale latent, image embedding)."""
    if getattr(vae, "latent_channels", 4) != 4 or getattr(vae, "downscale_ratio", 8) != 8:
        raise ValueError(reference.VAE_ERROR)  # before encoding: other VAEs may not even take one image
    return reference.prepare_reference(
        ref_rgb, width, height, encode_vae=vae.encode,
        encode_clip=lambda pixels: clip_vision.encode_image(pixels, crop=False)["image_embeds"],
        context_dim=context_dim,
    )


def pose_frames(pose_images, landmarks, node: str = "the sampler") -> pose_source.PoseFrames:
    """The connected pose input as a frame source: IMAGE batch -> uint8 frames held on the host (converted once),
    landmarks -> frames drawn one context window at a time. Neither or both connected is refused."""
    chosen = pose_source.pick_pose_input(pose_images, landmarks, node)
    if chosen is landmarks:
        return pose_source.LandmarkPoseFrames(landmarks)
    return pose_source.ArrayPoseFrames(comfy.image_batch_to_uint8(pose_images, "pose images"))


NODES = [VideoConditioning, Sampler, ContextWindows, CompileModel]
