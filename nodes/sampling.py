"""The Lmk2Video sampler node: ReferenceNet + PoseGuider + motion UNet over context windows -> core LATENT."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..aniportrait_lib.sampling import compiling, pose_source, reference, sampler
from . import comfy_adapter as comfy
from . import comfy_model, sockets

MIN_SIZE, MAX_SIZE = comfy.MIN_SIZE, comfy.MAX_SIZE
MAX_CONTEXT = 32  # length of the motion modules' position table
CONTEXT_DIM = 768  # the released UNets' cross-attention width (CLIP ViT-L/14 image embeddings)


def reference_and_pose_inputs() -> list:
    """The inputs both stage-2 entry points share: the encoders, the reference photo, the poses and the size."""
    return [
        io.Vae.Input("vae", tooltip="SD1.5 VAE (sd-vae-ft-mse)."),
        io.ClipVision.Input("clip_vision", tooltip="sd-image-variations image encoder (CLIP ViT-L/14 with projection)."),
        io.Image.Input("reference_image", tooltip="The portrait to animate (first image is used)."),
        io.Image.Input("pose_images", optional=True,
                       tooltip="Lip-coloured pose images (AniPortrait Render Pose Images, or edited by other nodes); one output frame per image. Connect this or landmarks."),
        sockets.Landmarks.Input("landmarks", optional=True,
                                tooltip="Landmarks from AniPortrait Project Landmarks: each window's pose images are drawn when needed (same video, far less memory than connecting every pose image). Connect this or pose_images."),
        io.Int.Input("width", default=512, min=MIN_SIZE, max=MAX_SIZE, step=8, tooltip="Video width (multiple of 8)."),
        io.Int.Input("height", default=512, min=MIN_SIZE, max=MAX_SIZE, step=8, tooltip="Video height (multiple of 8)."),
    ]


class Lmk2VideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLmk2VideoSampler",
            display_name="AniPortrait Lmk2Video Sampler",
            category=comfy.CATEGORY,
            description="Animates the reference photo along the pose images, or along landmarks drawn window by window (DDIM, v-prediction, context windows). Output latents decode with core VAE Decode.",
            inputs=[
                sockets.Lmk2VideoModels.Input("lmk2video_models"),
                *reference_and_pose_inputs(),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="DDIM steps."),
                io.Float.Input("cfg", default=3.5, min=1.0, max=20.0, step=0.1, tooltip="Guidance scale; 1.0 skips the unconditional pass (about 2x faster)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed (drawn on the CPU: same seed, same video on any GPU)."),
                io.Int.Input("context_frames", default=16, min=1, max=MAX_CONTEXT, tooltip="Frames per context window (the motion module was trained on 16)."),
                io.Int.Input("context_overlap", default=4, min=0, max=31, tooltip="Frames shared by neighbouring windows; must be smaller than context_frames."),
                io.Int.Input("window_batch", default=1, min=1, max=8, optional=True,
                             tooltip="Context windows per network call (videos over 16 frames). 4 took 25 % less time on a CPU; on a GPU it is not measured yet. Needs that many times the activation memory (keep 1 on small cards); the video is the same."),
                io.Combo.Input("compile", options=["off", *compiling.BACKENDS], default="off", optional=True,
                               tooltip="torch.compile the video UNet's ResNet, feed-forward and motion blocks for this run, for a GPU (on a CPU it made the full-size sampler 13-27 % slower). The first run of a size compiles (minutes, no progress meanwhile); later runs of that size reuse it. inductor needs a working Triton on a GPU; the video is the same up to float rounding."),
                io.Image.Input("reference_pose", optional=True,
                               tooltip="Accepted for compatibility with the original pipeline; it has no effect on the result (see docs)."),
            ],
            outputs=[io.Latent.Output("latent")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, lmk2video_models, vae, clip_vision, reference_image, width, height, steps, cfg, seed,
                context_frames, context_overlap, pose_images=None, landmarks=None, reference_pose=None,
                window_batch=1, compile="off") -> io.NodeOutput:
        # ranges are the schema's (ComfyUI checks them per input); cross-input rules are the library's
        models = lmk2video_models
        ref_rgb, note = comfy.first_image_uint8(reference_image, "reference image")
        poses = pose_frames(pose_images, landmarks)  # len(poses) frames; resized to width x height by the sampler
        sampler.check_inputs(width, height, len(poses), steps, cfg, context_frames, context_overlap)
        window_batch = 1 if window_batch is None else window_batch
        comfy.check_memory("sampler", frames=len(poses), width=width, height=height, cfg=cfg, context_frames=context_frames,
                           context_overlap=context_overlap, dtype=models.dtype, models=models.handles,
                           window_batch=window_batch)
        ref = encode_reference(vae, clip_vision, ref_rgb, width, height, models.config.unet["cross_attention_dim"])
        memory = sampler.estimate_memory(len(poses), width, height, cfg, context_frames, models.dtype, window_batch,
                                         context_overlap)
        device = comfy.load_for_inference(*models.handles, memory_required=memory, partial=True)
        total = sampler.count_window_evaluations(len(poses), steps, context_frames, context_overlap)
        backend = None if compile in (None, "off") else compile
        latents = sampler.sample_video(
            models, ref.latent.to(device), ref.clip_embeds.to(device), poses,
            steps=steps, cfg=cfg, seed=seed, context_frames=context_frames, context_overlap=context_overlap,
            device=device, dtype=models.dtype, progress=comfy.progress(total, with_previews=True),
            window_batch=window_batch, compile_backend=backend,
        )
        blocks = len(compiling.compile_targets(models.video_unet)) if backend else 0
        compiled = f"{blocks} video-UNet blocks ran compiled with {backend}" if backend else None
        return comfy.output({"samples": comfy.to_output_device(sampler.to_frame_batch(latents))}, notes=[note, compiled])


class VideoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitVideoConditioning",
            display_name="AniPortrait Video Conditioning",
            category=comfy.CATEGORY,
            description="Reference photo + pose frames -> positive/negative CONDITIONING and an empty video LATENT (1, 4, frames, h, w: one latent frame per pose frame) for core KSampler / SamplerCustomAdvanced with the AniPortrait MODEL. For videos longer than 16 frames put context windows on the model: AniPortrait Context Windows (the original's windows) or core Context Windows (Manual) with dim 2 (looped_uniform, 16/4, closed_loop on, fuse flat). Decode with AniPortrait Decode To Video.",
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
            display_name="AniPortrait Context Windows",
            category=comfy.CATEGORY,
            description="Samples videos longer than one window in the original AniPortrait's context windows (fixed, looped, averaged) through core's context-window handler. Core Context Windows (Manual) also works (dim 2) but moves its windows at every step.",
            inputs=[
                io.Model.Input("model", tooltip="The AniPortrait MODEL (AniPortrait Load Video Model)."),
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
            display_name="AniPortrait Compile Model",
            category=comfy.CATEGORY,
            description="torch.compile for the AniPortrait MODEL, block by block (every ResNet, feed-forward and motion block of the video UNet), through core's compile wrapper: applied while sampling, the model itself is unchanged. The first run compiles (minutes); later runs of the same size reuse it. Meant for a GPU (not measured there yet; on a CPU it made the full-size sampler slower). Needs a working Triton for inductor.",
            inputs=[
                io.Model.Input("model", tooltip="The AniPortrait MODEL (AniPortrait Load Video Model)."),
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


NODES = [Lmk2VideoSampler, VideoConditioning, ContextWindows, CompileModel]
