"""Retired nodes, kept so that workflows saved with them still run: each does what the nodes that replaced it do and
says which they are. Hidden from the node search (deprecated)."""
from __future__ import annotations

from comfy_api.latest import io

from ..aniportrait_lib.media import encode
from . import comfy_adapter as comfy
from . import loaders, sampling, schema

REPLACEMENT = ("AniPortrait Load Video Model (model) and AniPortrait Video Conditioning (positive, negative, latent) "
               "into AniPortrait Sampler, as in workflows/aniportrait_audio2video.json")
SAMPLER_RETIRED = f"AniPortrait Lmk2Video Sampler is retired: replace it with {REPLACEMENT}."
LOADER_RETIRED = f"AniPortrait Load Lmk2Video Models is retired: replace it with {REPLACEMENT}."

#: the retired socket between the two: it carries the AniPortrait MODEL now
_Lmk2VideoModels = io.Custom("ANIPORTRAIT_LMK2VIDEO")


class RetiredLoadLmk2VideoModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLoadLmk2VideoModels", display_name="AniPortrait Load Lmk2Video Models (retired)",
            category=schema.MODELS, is_deprecated=True, description=LOADER_RETIRED,
            inputs=loaders.lmk2video_inputs(), outputs=[_Lmk2VideoModels.Output("lmk2video_models")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, reference_unet_name, denoising_unet_name, motion_module_name, pose_guider_name,
                weight_dtype) -> io.NodeOutput:
        loaded = loaders.LoadVideoModel.execute(reference_unet_name, denoising_unet_name, motion_module_name,
                                                pose_guider_name, weight_dtype)
        return comfy.output(*loaded.args, notes=[LOADER_RETIRED])


class RetiredLmk2VideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AniPortraitLmk2VideoSampler", display_name="AniPortrait Lmk2Video Sampler (retired)",
            category=schema.VIDEO, is_deprecated=True, description=SAMPLER_RETIRED,
            inputs=[
                _Lmk2VideoModels.Input("lmk2video_models"), *sampling.reference_and_pose_inputs(),
                io.Int.Input("steps", default=25, min=1, max=200), io.Float.Input("cfg", default=3.5, min=1.0, max=20.0),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Int.Input("context_frames", default=16, min=1, max=sampling.MAX_CONTEXT),
                io.Int.Input("context_overlap", default=4, min=0, max=sampling.MAX_CONTEXT - 1),
                io.Int.Input("window_batch", default=1, min=1, max=8, optional=True),
                io.Combo.Input("compile", options=["off", "inductor", "cudagraphs"], default="off", optional=True),
                io.Image.Input("reference_pose", optional=True, tooltip="Never had an effect; ignored."),
            ],
            outputs=[io.Latent.Output("latent")],
        )

    @classmethod
    @comfy.user_errors
    def execute(cls, lmk2video_models, vae, clip_vision, reference_image, width, height, steps, cfg, seed,
                context_frames, context_overlap, pose_images=None, landmarks=None, reference_pose=None,
                window_batch=1, compile="off") -> io.NodeOutput:
        positive, negative, latent = sampling.VideoConditioning.execute(
            vae, clip_vision, reference_image, width, height, pose_images=pose_images, landmarks=landmarks).args
        sampled = sampling.Sampler.execute(lmk2video_models, seed, steps, cfg, positive, negative, latent,
                                           context_frames, context_overlap, window_batch or 1, compile or "off")
        # one latent per frame, as this node gave them: the old workflows decode them with core VAE Decode
        frames = encode.frame_latents(sampled.args[0]["samples"]).contiguous()
        return comfy.output({"samples": frames}, notes=[SAMPLER_RETIRED])


NODES = [RetiredLoadLmk2VideoModels, RetiredLmk2VideoSampler]
