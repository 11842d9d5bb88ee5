"""The Lmk2Video sampler node: ReferenceNet + PoseGuider + motion UNet over context windows -> core LATENT."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aniportrait_lib.video import context_windows, preprocess, sampler
from . import comfy_adapter as comfy
from . import sockets

MIN_SIZE, MAX_SIZE = comfy.MIN_SIZE, comfy.MAX_SIZE
MAX_CONTEXT = 32  # length of the motion modules' position table


class Lmk2VideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLmk2VideoSampler",
            display_name="AniPortrait Lmk2Video Sampler",
            category=comfy.CATEGORY,
            description="Animates the reference photo along the pose images (DDIM, v-prediction, context windows). Output latents decode with core VAE Decode.",
            inputs=[
                sockets.Lmk2VideoModels.Input("lmk2video_models"),
                io.Vae.Input("vae", tooltip="SD1.5 VAE (sd-vae-ft-mse)."),
                io.ClipVision.Input("clip_vision", tooltip="sd-image-variations image encoder (CLIP ViT-L/14 with projection)."),
                io.Image.Input("reference_image", tooltip="The portrait to animate (first image is used)."),
                io.Image.Input("pose_images", tooltip="Lip-coloured pose images from AniPortrait Render Pose Images; one output frame per image."),
                io.Int.Input("width", default=512, min=MIN_SIZE, max=MAX_SIZE, step=8, tooltip="Video width (multiple of 8)."),
                io.Int.Input("height", default=512, min=MIN_SIZE, max=MAX_SIZE, step=8, tooltip="Video height (multiple of 8)."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="DDIM steps."),
                io.Float.Input("cfg", default=3.5, min=1.0, max=20.0, step=0.1, tooltip="Guidance scale; 1.0 skips the unconditional pass (about 2x faster)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed (drawn on the CPU: same seed, same video on any GPU)."),
                io.Int.Input("context_frames", default=16, min=1, max=MAX_CONTEXT, tooltip="Frames per context window (the motion module was trained on 16)."),
                io.Int.Input("context_overlap", default=4, min=0, max=31, tooltip="Frames shared by neighbouring windows; must be smaller than context_frames."),
                io.Image.Input("reference_pose", optional=True,
                               tooltip="Accepted for compatibility with the original pipeline; it has no effect on the result (see docs)."),
            ],
            outputs=[io.Latent.Output("latent")],
        )

    @classmethod
    def validate_inputs(cls, width, height, context_frames, context_overlap):
        # ComfyUI skips the schema's min/max for inputs named here, so check the ranges too
        if not (MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
            return f"width and height must be between {MIN_SIZE} and {MAX_SIZE} (got {width}x{height})"
        if width % 8 or height % 8:
            return f"width and height must be multiples of 8 (got {width}x{height})"
        if not 1 <= context_frames <= MAX_CONTEXT:
            return f"context_frames must be 1..{MAX_CONTEXT}: the motion module handles at most {MAX_CONTEXT} frames at once"
        if not 0 <= context_overlap < context_frames:
            return f"context_overlap ({context_overlap}) must be 0 or more and smaller than context_frames ({context_frames})"
        return True

    @classmethod
    @comfy.user_errors
    def execute(cls, lmk2video_models, vae, clip_vision, reference_image, pose_images, width, height, steps, cfg, seed,
                context_frames, context_overlap, reference_pose=None) -> io.NodeOutput:
        bundle = lmk2video_models
        ref_rgb, note = comfy.first_image_uint8(reference_image, "reference image")
        poses = comfy.image_batch_to_uint8(pose_images, "pose images")  # resized to width x height by the sampler
        if poses.shape[-1] != 3:
            raise ValueError(f"pose_images must be RGB images from AniPortrait Render Pose Images; got {poses.shape[-1]} channels.")
        if getattr(vae, "latent_channels", 4) != 4 or getattr(vae, "downscale_ratio", 8) != 8:
            raise ValueError("the VAE is not an SD1.5 VAE (4 latent channels, 8x downscale); load sd-vae-ft-mse.")

        # reference latent: PIL LANCZOS resize like the original, then core VAE (mean) * 0.18215
        ref_pixels = torch.from_numpy(preprocess.resize_reference(ref_rgb, width, height)).float().div(255.0)[None]
        ref_latent = sampler.from_vae_space(vae.encode(ref_pixels))
        # CLIP image embedding: BICUBIC 224x224 like the original, core CLIP vision projects it
        clip_pixels = torch.from_numpy(preprocess.resize_for_clip(ref_rgb)).float().div(255.0)[None]
        clip_embeds = clip_vision.encode_image(clip_pixels, crop=False)["image_embeds"]
        context_dim = bundle.config.unet["cross_attention_dim"]
        if clip_embeds.shape[-1] != context_dim:
            raise ValueError(
                f"the CLIP vision model gives {clip_embeds.shape[-1]}-d image embeddings but the AniPortrait UNets "
                f"expect {context_dim}-d: load the image encoder of lambdalabs/sd-image-variations-diffusers "
                f"(CLIP ViT-L/14 with projection)."
            )

        frames, (lh, lw) = poses.shape[0], (height // 8, width // 8)
        # activations dominate at video sizes: CFG batch x window x the UNet's widest feature maps
        batch = 2 if cfg > 1.0 else 1
        elem = torch.finfo(bundle.dtype).bits // 8
        memory_required = int(batch * min(frames, context_frames) * lh * lw * 320 * 64 * elem)
        device = comfy.load_for_inference(*bundle.handles, memory_required=memory_required)

        windows = len(context_windows.uniform_context_windows(frames, context_frames, context_overlap))
        progress = comfy.progress(steps * windows, with_previews=True)

        def callback(done: int, total: int, x0: torch.Tensor) -> None:
            show = done % windows == 0 or done == total
            progress(done, total, x0[:, :, x0.shape[2] // 2] if show else None)

        latents = sampler.sample_video(
            bundle, ref_latent.to(device), clip_embeds.to(device), poses,
            steps=steps, cfg=cfg, seed=seed, context_frames=context_frames, context_overlap=context_overlap,
            device=device, dtype=bundle.dtype, callback=callback,
            interrupt_check=comfy.interrupt_check,
        )
        samples = sampler.to_vae_space(latents)[0].permute(1, 0, 2, 3).contiguous()  # (F, 4, h, w) raw VAE space
        return comfy.output({"samples": comfy.to_output_device(samples)}, notes=[note])



NODES = [Lmk2VideoSampler]
