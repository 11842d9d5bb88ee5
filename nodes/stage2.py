"""Stage-2 nodes: Lmk2Video model loading and the video sampler (ReferenceNet + PoseGuider + motion UNet)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from comfy_api.latest import io

import comfy.model_management as mm

from ..aniportrait_lib.face import landmarker
from ..aniportrait_lib.video import context, loading, preprocess, sampler
from . import comfy_models, paths
from . import types as T
from .stage1 import CATEGORY, _images_to_uint8

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_CONTEXT = 32  # length of the motion modules' position table

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CHECKPOINT_EXTENSIONS = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")
FILE_INPUTS = {  # input name -> (role in loading.RELEASED_FILES, label)
    "reference_unet_name": ("reference_unet", "ReferenceNet (reference_unet.pth)"),
    "denoising_unet_name": ("denoising_unet", "denoising UNet (denoising_unet.pth)"),
    "motion_module_name": ("motion_module", "motion module (motion_module.pth)"),
    "pose_guider_name": ("pose_guider", "PoseGuider (pose_guider.pth)"),
}


@dataclass
class Lmk2VideoBundle:
    """What flows on an ANIPORTRAIT_LMK2VIDEO socket: the three networks, their ModelPatchers and dtype."""

    models: loading.Lmk2VideoModels
    patchers: list
    dtype: torch.dtype


def _pick_dtype(choice: str) -> torch.dtype:
    if WEIGHT_DTYPES.get(choice) is not None:
        return WEIGHT_DTYPES[choice]
    # ComfyUI's choice for this device: fp16/bf16 on CUDA, fp32 on CPU. Launch flags such as
    # --fp8_e4m3fn-unet or --fp64-unet can make it answer fp8/fp64, which plain torch layers cannot run.
    dtype = mm.unet_dtype(supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        dtype = torch.float16 if mm.should_use_fp16() else torch.float32
    return dtype


class LoadLmk2VideoModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = paths.list_files(*CHECKPOINT_EXTENSIONS)
        inputs = [
            io.Combo.Input(name, options=files, default=loading.RELEASED_FILES[role],
                           tooltip=f"{label} in ComfyUI/models/aniportrait (released AniPortrait weights, loaded unchanged).")
            for name, (role, label) in FILE_INPUTS.items()
        ]
        inputs.append(io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="auto",
                                     tooltip="auto = ComfyUI's choice for your device (fp16/bf16 on GPU, fp32 on CPU)."))
        return io.Schema(
            node_id="AniPortraitLoadLmk2VideoModels",
            display_name="AniPortrait Load Lmk2Video Models",
            category=f"{CATEGORY}/loaders",
            description="Loads ReferenceNet, the denoising UNet + motion module and the PoseGuider (strict key checks). Nothing goes to the GPU until sampling.",
            inputs=inputs,
            outputs=[T.Lmk2VideoModels.Output("lmk2video_models")],
        )

    @classmethod
    def validate_inputs(cls, reference_unet_name, denoising_unet_name, motion_module_name, pose_guider_name, weight_dtype):
        given = dict(reference_unet_name=reference_unet_name, denoising_unet_name=denoising_unet_name,
                     motion_module_name=motion_module_name, pose_guider_name=pose_guider_name)
        for name, (_, label) in FILE_INPUTS.items():
            msg = paths.missing_file_message(given[name], label)
            if msg is not True:
                return msg
        if weight_dtype not in WEIGHT_DTYPES:
            return f"weight_dtype must be one of {list(WEIGHT_DTYPES)}"
        return True

    @classmethod
    def execute(cls, reference_unet_name, denoising_unet_name, motion_module_name, pose_guider_name, weight_dtype) -> io.NodeOutput:
        given = dict(reference_unet_name=reference_unet_name, denoising_unet_name=denoising_unet_name,
                     motion_module_name=motion_module_name, pose_guider_name=pose_guider_name)
        files = {role: paths.resolve(given[name], label) for name, (role, label) in FILE_INPUTS.items()}
        dtype = _pick_dtype(weight_dtype)
        models = loading.load_lmk2video_models(files, device=mm.unet_offload_device(), dtype=dtype)
        patchers = [comfy_models.patcher_for(m) for m in (models.reference_unet, models.video_unet, models.pose_guider)]
        log.info("AniPortrait Lmk2Video models loaded (%s)", dtype)
        return io.NodeOutput(Lmk2VideoBundle(models, patchers, dtype))


class Lmk2VideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLmk2VideoSampler",
            display_name="AniPortrait Lmk2Video Sampler",
            category=CATEGORY,
            description="Animates the reference photo along the pose images (DDIM, v-prediction, context windows). Output latents decode with core VAE Decode.",
            inputs=[
                T.Lmk2VideoModels.Input("lmk2video_models"),
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
    def execute(cls, lmk2video_models, vae, clip_vision, reference_image, pose_images, width, height, steps, cfg, seed,
                context_frames, context_overlap, reference_pose=None) -> io.NodeOutput:
        bundle: Lmk2VideoBundle = lmk2video_models
        if reference_image.shape[0] == 0:
            raise ValueError("the reference_image input is empty; connect the portrait to animate.")
        ref_rgb = landmarker.to_rgb_uint8(_images_to_uint8(reference_image[:1], "reference image")[0])
        poses = _images_to_uint8(pose_images, "pose images")  # resized to width x height by the sampler
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
        context_dim = bundle.models.config.unet["cross_attention_dim"]
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
        device = comfy_models.load_for_inference(*bundle.patchers, memory_required=memory_required)

        windows = len(context.uniform_context_windows(frames, context_frames, context_overlap))
        progress = comfy_models.progress(steps * windows)
        previewer = _previewer(device)

        def callback(done: int, total: int, x0: torch.Tensor) -> None:
            preview = None
            if previewer is not None and (done % windows == 0 or done == total):
                preview = previewer.decode_latent_to_preview_image("JPEG", x0[:, :, x0.shape[2] // 2])
            progress(done, total, preview)

        latents = sampler.sample_video(
            bundle.models, ref_latent.to(device), clip_embeds.to(device), poses,
            steps=steps, cfg=cfg, seed=seed, context_frames=context_frames, context_overlap=context_overlap,
            device=device, dtype=bundle.dtype, callback=callback,
            interrupt_check=mm.throw_exception_if_processing_interrupted,
        )
        samples = sampler.to_vae_space(latents)[0].permute(1, 0, 2, 3).contiguous()  # (F, 4, h, w) raw VAE space
        return io.NodeOutput({"samples": samples.to(mm.intermediate_device())})


def _previewer(device):
    """ComfyUI's latent previewer for SD1.5 latents (None when previews are off)."""
    try:
        import latent_preview
        from comfy import latent_formats

        return latent_preview.get_previewer(device, latent_formats.SD15())
    except Exception:  # previews are a nicety; never fail sampling over them
        log.debug("AniPortrait: no latent previewer", exc_info=True)
        return None


NODES = [LoadLmk2VideoModels, Lmk2VideoSampler]
