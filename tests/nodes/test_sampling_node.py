"""AniPortrait Video Conditioning and AniPortrait Sampler in-process, with real ComfyUI types: core ``comfy.sd.VAE``
and CLIP vision models, the AniPortrait MODEL loaded through the pack's loader node, on the CPU.

Weights are random (``support.random_weights``); the tests check the nodes' plumbing and messages, the numbers
are the library's (tests/lib/test_sampler.py) and KSampler's equivalence is tests/nodes/test_native_model.py.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from support.golden import load_case

WIDTH = HEIGHT = 64
FRAMES, STEPS = 3, 2
#: window_batch and compile change the order of float sums only: the latents agree to this fraction of their range
#: (random weights amplify rounding; measured up to 2e-5)
REORDERED_SUMS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def comfy_models(video_models):
    """(core VAE, core CLIP vision, the AniPortrait MODEL) with random weights."""
    return video_models


def _images(n: int, seed: int) -> torch.Tensor:
    """A core IMAGE batch (n, 64, 64, 3), float 0..1."""
    return torch.rand(n, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed))


CONDITIONING_INPUTS = ("vae", "clip_vision", "reference_image", "pose_images", "landmarks", "width", "height")


def _execute(pack, comfy_models, **overrides):
    """Video Conditioning -> AniPortrait Sampler, as a workflow wires them; returns the sampler's output."""
    vae, clip, model = comfy_models
    args = dict(vae=vae, clip_vision=clip, reference_image=_images(1, 0), pose_images=_images(FRAMES, 1), width=WIDTH,
                height=HEIGHT, model=model, seed=0, steps=STEPS, cfg=3.5, context_frames=16, context_overlap=4)
    args.update(overrides)
    conditioning = pack.nodes.sampling.VideoConditioning.execute(**{k: args.pop(k) for k in CONDITIONING_INPUTS if k in args})
    positive, negative, latent = conditioning.args
    return pack.nodes.sampling.Sampler.execute(positive=positive, negative=negative, latent_image=latent, **args)


@pytest.fixture(scope="module")
def tiny_run(pack, comfy_models):
    """One real run: 64x64, 2 steps, 3 frames."""
    return _execute(pack, comfy_models)


def test_tiny_run_returns_one_video_latent_like_ksampler(tiny_run) -> None:
    samples = tiny_run.args[0]["samples"]
    assert tuple(samples.shape) == (1, 4, FRAMES, HEIGHT // 8, WIDTH // 8)
    assert samples.dtype == torch.float32 and torch.isfinite(samples).all()


def test_swapping_ksampler_for_the_sampler_is_one_node(pack, comfy_models) -> None:
    """The same wires as core KSampler (names and types), and its output decodes with the same node."""
    import nodes as core_nodes

    ours = pack.nodes.sampling.Sampler.INPUT_TYPES()["required"]
    core = core_nodes.KSampler.INPUT_TYPES()["required"]
    for name in ("model", "positive", "negative", "latent_image", "seed", "steps", "cfg"):
        assert ours[name][0] == core[name][0], name
    vae, clip, model = comfy_models
    positive, negative, latent = pack.nodes.sampling.VideoConditioning.execute(
        vae=vae, clip_vision=clip, reference_image=_images(1, 0), pose_images=_images(FRAMES, 1), width=WIDTH,
        height=HEIGHT).args
    native = core_nodes.common_ksampler(model, 0, 1, 3.5, "ddim", "simple", positive, negative, latent)[0]
    own = pack.nodes.sampling.Sampler.execute(model, 0, 1, 3.5, positive, negative, latent, 16, 4, 1, "off").args[0]
    assert native["samples"].shape == own["samples"].shape
    video = pack.nodes.video_out.DecodeToVideo.execute(own, vae, 30.0, 0, "h264", 19)
    assert video.args[0].get_dimensions() == (WIDTH, HEIGHT)


def test_reference_batch_is_reduced_to_its_first_image_with_a_note(pack, comfy_models) -> None:
    vae, clip, _ = comfy_models
    out = pack.nodes.sampling.VideoConditioning.execute(vae=vae, clip_vision=clip, reference_image=_images(2, 0),
                                                        pose_images=_images(FRAMES, 1), width=WIDTH, height=HEIGHT)
    assert out.ui.as_dict()["text"][0].startswith("the reference image input holds 2 images; only the first one is used.")


def test_a_vae_with_other_latent_channels_is_refused(pack, comfy_models) -> None:
    """A real core VAE with 8 latent channels (the SD1.5 file with its latent-facing layers widened)."""
    import comfy.sd
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(pack.work_dir / "models" / "sd-vae.safetensors"))
    channels = 8
    for key, shape in {"encoder.conv_out.weight": (2 * channels, 512, 3, 3), "encoder.conv_out.bias": (2 * channels,),
                       "quant_conv.weight": (2 * channels, 2 * channels, 1, 1), "quant_conv.bias": (2 * channels,),
                       "post_quant_conv.weight": (channels, channels, 1, 1), "post_quant_conv.bias": (channels,),
                       "decoder.conv_in.weight": (512, channels, 3, 3)}.items():
        sd[key] = torch.randn(shape, dtype=torch.float16) * 0.02
    other = comfy.sd.VAE(sd=sd)
    assert other.latent_channels == channels
    with pytest.raises(ValueError, match=re.escape(
            "the VAE is not an SD1.5 VAE (4 latent channels, 8x downscale); load sd-vae-ft-mse.")):
        _execute(pack, comfy_models, vae=other)


def test_a_clip_vision_with_other_embedding_width_is_refused(pack, comfy_models, tmp_path) -> None:
    """A real core CLIP vision model (small ViT, random weights) whose projection gives 512-d embeddings."""
    import comfy.clip_vision

    config = dict(hidden_act="quick_gelu", hidden_size=64, image_size=224, intermediate_size=128,
                  layer_norm_eps=1e-5, model_type="clip_vision_model", num_attention_heads=4, num_channels=3,
                  num_hidden_layers=2, patch_size=32, projection_dim=512)
    (tmp_path / "clip.json").write_text(json.dumps(config))
    clip = comfy.clip_vision.ClipVisionModel(str(tmp_path / "clip.json"))
    gen = torch.Generator().manual_seed(0)
    clip.load_sd({k: (torch.ones_like(v) if "layer_norm" in k and k.endswith("weight") else
                      torch.randn(v.shape, generator=gen).to(v.dtype) * 0.02) for k, v in clip.get_sd().items()})
    with pytest.raises(ValueError, match=re.escape(
            "the CLIP vision model gives 512-d image embeddings but the AniPortrait UNets expect 768-d: load the "
            "image encoder of lambdalabs/sd-image-variations-diffusers (CLIP ViT-L/14 with projection).")):
        _execute(pack, comfy_models, clip_vision=clip)


def test_width_not_a_multiple_of_8_is_refused(pack, comfy_models) -> None:
    with pytest.raises(ValueError, match=re.escape(
            "width and height must be multiples of 8 (got 68x64): the VAE works at 1/8 size, so use e.g. 64x64.")):
        _execute(pack, comfy_models, width=68)


def test_context_overlap_not_below_context_frames_is_refused(pack, comfy_models) -> None:
    with pytest.raises(ValueError, match=re.escape(
            "context_overlap (8) must be 0 or more and smaller than context_frames (8): lower context_overlap or "
            "raise context_frames.")):
        _execute(pack, comfy_models, context_frames=8, context_overlap=8)


def test_a_latent_that_is_not_the_empty_video_latent_is_refused(pack, comfy_models) -> None:
    vae, clip, model = comfy_models
    positive, negative, latent = pack.nodes.sampling.VideoConditioning.execute(
        vae=vae, clip_vision=clip, reference_image=_images(1, 0), pose_images=_images(FRAMES, 1), width=WIDTH,
        height=HEIGHT).args
    run = lambda latent_image: pack.nodes.sampling.Sampler.execute(  # noqa: E731
        model, 0, 1, 3.5, positive, negative, latent_image, 16, 4, 1, "off")
    with pytest.raises(ValueError, match=re.escape(
            "latent_image has shape (1, 4, 5, 8, 8) but the conditioning makes (1, 4, 3, 8, 8): connect the latent "
            "of the same AniPortrait Video Conditioning node.")):
        run({"samples": torch.zeros(1, 4, 5, 8, 8)})
    with pytest.raises(ValueError, match=re.escape("AniPortrait Sampler starts from noise and ignores a latent's content")):
        run({"samples": torch.ones(1, 4, FRAMES, 8, 8)})


def test_another_model_is_refused(pack, comfy_models) -> None:
    vae, clip, model = comfy_models
    positive, negative, latent = pack.nodes.sampling.VideoConditioning.execute(
        vae=vae, clip_vision=clip, reference_image=_images(1, 0), pose_images=_images(FRAMES, 1), width=WIDTH,
        height=HEIGHT).args
    other = type("OtherModel", (), {"model": type("Base", (), {"diffusion_model": torch.nn.Identity()})()})()
    with pytest.raises(ValueError, match=re.escape(
            "AniPortrait Sampler takes the AniPortrait MODEL: connect AniPortrait Load Video Model (for other models "
            "use KSampler).")):
        pack.nodes.sampling.Sampler.execute(other, 0, 1, 3.5, positive, negative, latent, 16, 4, 1, "off")


def test_weight_dtype_falls_back_when_comfyui_answers_fp8(pack, comfy_models, monkeypatch) -> None:
    """``--fp8_e4m3fn-unet`` makes ComfyUI answer fp8, which plain torch layers cannot run."""
    import comfy.model_management as mm

    from aniportrait_lib.networks.loading import RELEASED_FILES

    adapter = pack.nodes.comfy_adapter
    monkeypatch.setattr(mm, "unet_dtype", lambda *args, **kwargs: torch.float8_e4m3fn)
    monkeypatch.setattr(mm, "should_use_fp16", lambda *args, **kwargs: False)
    assert adapter.pick_weight_dtype(None) == torch.float32
    assert adapter.pick_weight_dtype(torch.bfloat16) == torch.bfloat16  # an explicit choice is kept
    monkeypatch.setattr(mm, "should_use_fp16", lambda *args, **kwargs: True)
    assert adapter.pick_weight_dtype(None) == torch.float16
    monkeypatch.setattr(mm, "should_use_fp16", lambda *args, **kwargs: False)
    names = [RELEASED_FILES[r] for r in ("reference_unet", "denoising_unet", "motion_module", "pose_guider")]
    model = pack.nodes.loaders.LoadVideoModel.execute(*names, "auto").args[0]
    assert next(model.model.diffusion_model.video_unet.parameters()).dtype == torch.float32


# ----------------------------------------------------------------------------- landmarks instead of pose images
def _landmarks(n: int, width: int, height: int):
    """A real projected face (golden ``projection``, 12 frames at 512x512) as ``n`` frames of the pack's
    ``Landmarks`` at ``width x height`` (what Project Landmarks outputs)."""
    from aniportrait_pack.aniportrait_lib.data import Landmarks

    folder, _ = load_case("projection")
    points = np.load(folder / "projected.npy")[:n] * np.array([width / 512.0, height / 512.0])
    return Landmarks(points=np.ascontiguousarray(points), width=width, height=height)


def test_landmarks_input_gives_the_latents_of_its_rendered_pose_images(pack, comfy_models, monkeypatch) -> None:
    """Landmarks (128x96, drawn by the sampler one window at a time) = Render Pose Images' IMAGE batch of the
    same landmarks connected as pose_images, bit for bit (both resized to the 64x64 video)."""
    from aniportrait_pack.aniportrait_lib.face import renderer

    landmarks = _landmarks(FRAMES, 128, 96)
    images = pack.nodes.motion.RenderPoseImages.execute(landmarks).args[0]
    from_images = _execute(pack, comfy_models, pose_images=images).args[0]["samples"]
    drawn: list[int] = []
    draw = renderer.draw_pose_images
    monkeypatch.setattr(renderer, "draw_pose_images", lambda points, *a, **k: (drawn.append(len(points)), draw(points, *a, **k))[1])
    from_landmarks = _execute(pack, comfy_models, pose_images=None, landmarks=landmarks).args[0]["samples"]
    assert torch.equal(from_images, from_landmarks)
    assert drawn == [FRAMES]  # one window, drawn once (its pose features are kept over the steps)


def test_neither_or_both_pose_inputs_are_refused(pack, comfy_models) -> None:
    with pytest.raises(ValueError, match=re.escape(
            "connect either pose_images (e.g. from Render Pose Images) or landmarks (from Project Landmarks, rendered "
            "window by window) to the conditioning node; neither is connected.")) as info:
        _execute(pack, comfy_models, pose_images=None)
    assert type(info.value) is ValueError
    with pytest.raises(ValueError, match=re.escape(
            "connect only one of pose_images and landmarks to the conditioning node, not both: it follows the one "
            "that is connected.")):
        _execute(pack, comfy_models, landmarks=_landmarks(FRAMES, WIDTH, HEIGHT))


def test_pose_inputs_are_optional_sockets(pack) -> None:
    inputs = pack.nodes.sampling.VideoConditioning.INPUT_TYPES()
    optional = inputs["optional"]
    assert optional["pose_images"][0] == "IMAGE" and optional["landmarks"][0] == "ANIPORTRAIT_LANDMARKS"
    assert "pose_images" not in inputs["required"] and "landmarks" not in inputs["required"]


def test_window_batch_input_gives_the_same_latents(pack, comfy_models) -> None:
    poses = _images(24, 3)  # two context windows of 16 frames
    one = _execute(pack, comfy_models, pose_images=poses).args[0]["samples"]
    two = _execute(pack, comfy_models, pose_images=poses, window_batch=2).args[0]["samples"]
    assert tuple(two.shape) == (1, 4, 24, HEIGHT // 8, WIDTH // 8)
    assert (two - one).abs().max() < REORDERED_SUMS_TOLERANCE * one.abs().max()


def test_compile_input_runs_inductor_code_and_gives_the_same_latents(pack, comfy_models) -> None:
    """The real default backend end to end: inductor generates and builds C++ for the CPU here (a GPU build uses
    Triton); the blocks' float sums run in another order, so the latents agree up to rounding."""
    from aniportrait_pack.aniportrait_lib.sampling.compiling import compile_targets

    networks = comfy_models[2].model.diffusion_model
    plain = _execute(pack, comfy_models).args[0]["samples"]
    run = _execute(pack, comfy_models, compile="inductor")
    compiled = run.args[0]["samples"]
    assert (compiled - plain).abs().max() < REORDERED_SUMS_TOLERANCE * plain.abs().max()
    blocks = len(compile_targets(networks.video_unet))
    assert run.ui.as_dict()["text"] == (f"{blocks} video-UNet blocks ran compiled with inductor",)
    assert not any(type(m).__name__ == "OptimizedModule" for m in networks.video_unet.modules())


def test_compiled_blocks_capture_weights_streamed_by_low_vram_loads(pack, comfy_models) -> None:
    """Under --lowvram core's layers cast (stream) their weights in every call: the compiled blocks must capture
    that too. Backend cudagraphs: on a CPU torch skips the CUDA graphs and runs the captured graphs as they are, so
    the latents stay exact."""
    castable = [m for m in comfy_models[2].model.diffusion_model.modules() if hasattr(m, "comfy_cast_weights")]
    assert len(castable) > 50
    base = _execute(pack, comfy_models).args[0]["samples"]
    for m in castable:
        m.comfy_cast_weights = True
    try:
        streamed = _execute(pack, comfy_models).args[0]["samples"]
        compiled = _execute(pack, comfy_models, compile="cudagraphs").args[0]["samples"]
    finally:
        for m in castable:
            del m.comfy_cast_weights  # back to the class default
    assert torch.equal(streamed, base)
    assert torch.equal(compiled, base)
