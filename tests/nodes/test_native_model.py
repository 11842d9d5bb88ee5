"""The AniPortrait MODEL on ComfyUI's own samplers, in-process with real core nodes and types.

Random tiny weights in the release layout (``support.random_weights``), 64x64, CPU. The pack's own
sampler (the golden-exact path) is what every native result is compared with.

Equivalence tolerance: core samples in sigma space, where the zero-terminal-SNR schedule starts at
sigma_max = 4518.8; its first Euler/DDIM step subtracts two numbers of that size in float32, which leaves
~2e-4 of rounding in the next model input (the own sampler steps in alpha space and has no such term). The
random tiny network amplifies it to ~1e-3 in the final latents (sampler scale). ``SAMPLER_SCALE_TOLERANCE``
bounds that; the measured numbers are printed and recorded in BENCHMARKS.md.
"""
from __future__ import annotations

import re

import pytest
import torch

WIDTH = HEIGHT = 64
STEPS = 4  # divides 1000: the original's trailing timesteps and core's "simple" sigmas are the same points
CFG = 3.5
SEED = 7
SHORT = 8  # frames of the runs that only need a working video
LONG = 40  # > 16: several context windows, wrap-around included
SAMPLER_SCALE_TOLERANCE = 5e-3
LATENT_SCALE = 0.18215


@pytest.fixture(scope="module")
def setup(video_models):
    """(core VAE, core CLIP vision, the MODEL patcher), random weights."""
    return video_models


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def short_cond(pack, setup):
    with torch.inference_mode():  # module fixtures run outside the per-test inference mode (tests/nodes/conftest.py)
        return _conditioning(pack, setup, SHORT)


def _conditioning(pack, setup, frames: int):
    vae, clip, _ = setup
    out = pack.nodes.sampling.VideoConditioning.execute(vae=vae, clip_vision=clip, reference_image=_images(1, 0),
                                                        pose_images=_images(frames, 1), width=WIDTH, height=HEIGHT)
    return out.args


def _other_pose_cond(setup, cond):
    """``cond`` with other pose frames (same reference, latent and noise)."""
    from aniportrait_pack.aniportrait_lib.sampling.pose_source import ArrayPoseFrames

    positive, negative, latent = cond
    poses = ArrayPoseFrames((_images(SHORT, 99) * 255).round().to(torch.uint8).numpy())
    swap = lambda c: [[c[0][0], {**c[0][1], "aniportrait_poses": poses}]]  # noqa: E731
    return swap(positive), swap(negative), latent


def _ksampler(model, cond, sampler_name="ddim", scheduler="simple", steps=STEPS, cfg=CFG):
    import nodes as core_nodes

    positive, negative, latent = cond
    return core_nodes.common_ksampler(model, SEED, steps, cfg, sampler_name, scheduler, positive, negative,
                                      latent)[0]["samples"]


def _own_sampler(pack, model, cond, steps=STEPS, cfg=CFG):
    """The pack's own sampler on the same model, conditioning and noise as KSampler (raw VAE space)."""
    import comfy.sample

    from aniportrait_pack.aniportrait_lib.sampling import sampler

    positive, negative, latent = cond
    noise = comfy.sample.prepare_noise(latent["samples"], SEED)  # (1, 4, F, h, w): the original's layout too
    conditioning = pack.nodes.comfy_model.video_conditioning(model, positive, negative)
    return sampler.sample_latent(model.model.diffusion_model, conditioning, steps=steps, cfg=cfg, noise=noise,
                                 context_frames=16, context_overlap=4)


def _sampler_scale_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference of two raw-VAE-space latents, in sampler scale (x 0.18215, the space the nets see)."""
    return float((a.float() - b.float()).abs().max()) * LATENT_SCALE


def _core_context_windows(model, schedule="looped_uniform", fuse="flat"):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    return ContextWindowsManualNode.execute(model, 16, 4, schedule, 1, True, fuse, 2).args[0]


def _recording_windows(model):
    """A clone whose diffusion-model calls record the frames of each core context window (public wrapper API)."""
    import comfy.patcher_extension

    seen: list[list[int]] = []

    def record(executor, *args, **kwargs):
        window = args[-1].get("context_window")
        seen.append(list(window.index_list) if window is not None else [])
        return executor(*args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_record", record)
    return clone, seen


# ------------------------------------------------------------------------------------------------ equivalence


def test_ksampler_ddim_simple_matches_the_own_sampler_on_16_frames(pack, setup) -> None:
    _, _, model = setup
    cond = _conditioning(pack, setup, 16)
    native = _ksampler(model, cond)
    reference = _own_sampler(pack, model, cond)
    assert native.shape == reference.shape == (1, 4, 16, HEIGHT // 8, WIDTH // 8)
    diff = _sampler_scale_diff(native, reference)
    print(f"\n16 frames, ddim/simple vs own sampler: max abs {diff:.2e} (sampler scale; latents up to "
          f"{float(reference.abs().max()) * LATENT_SCALE:.2f})")
    assert diff <= SAMPLER_SCALE_TOLERANCE


def test_40_frames_with_the_original_windows_match_the_own_sampler(pack, setup) -> None:
    """AniPortrait Context Windows: core's window handler with the original's fixed (step-0) windows."""
    _, _, model = setup
    cond = _conditioning(pack, setup, LONG)
    windowed = pack.nodes.sampling.ContextWindows.execute(model, 16, 4).args[0]
    native = _ksampler(windowed, cond)
    reference = _own_sampler(pack, model, cond)
    diff = _sampler_scale_diff(native, reference)
    print(f"\n40 frames, ddim/simple + AniPortrait Context Windows vs own sampler: max abs {diff:.2e}")
    assert diff <= SAMPLER_SCALE_TOLERANCE


def test_core_context_windows_slide_per_step_and_cover_every_frame(pack, setup) -> None:
    """Core Context Windows (Manual), looped_uniform 16/4 closed loop, dim 2: step 0 uses the original's windows,
    later steps shift them (core passes the step index to the schedule; the original always passed 0)."""
    from aniportrait_lib.sampling.context_windows import uniform_context_windows

    _, _, model = setup
    cond = _conditioning(pack, setup, LONG)
    recorded, seen = _recording_windows(_core_context_windows(model))
    native = _ksampler(recorded, cond)
    original = uniform_context_windows(LONG, 16, 4)
    per_step = len(original)
    assert len(seen) == STEPS * per_step  # CFG rows batched: one call per window
    assert seen[:per_step] == original
    assert seen[per_step:2 * per_step] != original
    assert torch.isfinite(native).all()
    diff = _sampler_scale_diff(native, _own_sampler(pack, model, cond))
    print(f"\n40 frames, ddim/simple + core Context Windows (looped_uniform, flat) vs own sampler: max abs {diff:.2e}")


# ------------------------------------------------------------------------------------------------ core samplers


@pytest.mark.parametrize("sampler_name", ["ddim", "euler", "dpmpp_2m"])
@pytest.mark.parametrize("scheduler", ["simple", "ddim_uniform", "beta"])
def test_core_samplers_and_schedulers_make_a_video(setup, short_cond, sampler_name, scheduler) -> None:
    """Every sampler/scheduler pair runs the model: deterministic for a seed, finite, and following the conditioning
    (other pose frames give another video; the noise alone does not decide it)."""
    _, _, model = setup
    out = _ksampler(model, short_cond, sampler_name, scheduler, steps=3)
    assert out.shape == (1, 4, SHORT, HEIGHT // 8, WIDTH // 8) and torch.isfinite(out).all()
    assert torch.equal(out, _ksampler(model, short_cond, sampler_name, scheduler, steps=3))
    other_poses = _other_pose_cond(setup, short_cond)
    assert float((_ksampler(model, other_poses, sampler_name, scheduler, steps=3) - out).abs().max()) > 1e-3


def test_sampler_custom_advanced_equals_ksampler(setup, short_cond) -> None:
    from comfy_extras import nodes_custom_sampler as custom

    _, _, model = setup
    positive, negative, latent = short_cond
    guider = custom.CFGGuider().get_guider(model, positive, negative, CFG)[0]
    sigmas = custom.BasicScheduler().get_sigmas(model, "simple", STEPS, 1.0)[0]
    chosen = custom.KSamplerSelect().get_sampler("ddim")[0]
    noise = custom.RandomNoise().get_noise(SEED)[0]
    out = custom.SamplerCustomAdvanced().sample(noise, guider, chosen, sigmas, latent)[0]["samples"]
    assert torch.equal(out, _ksampler(model, short_cond))


def test_model_sampling_discrete_overrides_the_schedule(setup, short_cond) -> None:
    """v_prediction + zsnr reproduces the model's own schedule exactly; eps (a wrong schedule) changes the video."""
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    _, _, model = setup
    base = _ksampler(model, short_cond)
    same = _ksampler(ModelSamplingDiscrete().patch(model, "v_prediction", True)[0], short_cond)
    other = _ksampler(ModelSamplingDiscrete().patch(model, "eps", False)[0], short_cond)
    assert torch.equal(same, base)
    assert float((other - base).abs().max()) > 1e-2


def test_rescale_cfg_patch_keeps_the_reference_path(setup, short_cond) -> None:
    """A second model patch from another core node (RescaleCFG: a post-CFG function) on top of the model."""
    from comfy_extras.nodes_model_advanced import RescaleCFG

    _, _, model = setup
    denoiser = model.model.diffusion_model
    runs_before = denoiser.reference_runs
    patched = _ksampler(RescaleCFG().patch(model, 0.7)[0], short_cond)
    assert denoiser.reference_runs == runs_before + 1  # ReferenceNet once for the whole run
    assert torch.isfinite(patched).all()
    assert float((patched - _ksampler(model, short_cond)).abs().max()) > 1e-4


def test_reference_net_runs_once_per_sampling_run_and_is_forgotten_after(pack, setup) -> None:
    _, _, model = setup
    cond = _conditioning(pack, setup, LONG)
    denoiser = model.model.diffusion_model
    before = denoiser.reference_runs
    _ksampler(_core_context_windows(model), cond)  # 4 steps x 4 windows = 16 model calls
    assert denoiser.reference_runs == before + 1
    assert denoiser._references == [] and denoiser._pose_caches == {}


def test_easycache_skips_model_calls(setup, short_cond, monkeypatch) -> None:
    from comfy_extras.nodes_easycache import EasyCacheNode

    _, _, model = setup
    denoiser = model.model.diffusion_model
    calls = []
    original_predict = denoiser.predict
    monkeypatch.setattr(denoiser, "predict", lambda call: calls.append(1) or original_predict(call))
    _ksampler(model, short_cond, steps=10)
    plain = len(calls)
    calls.clear()
    cached = EasyCacheNode.execute(model, 3.0, 0.0, 1.0, False).args[0]
    out = _ksampler(cached, short_cond, steps=10)
    print(f"\nEasyCache (threshold 3.0): {len(calls)} model calls instead of {plain}")
    assert torch.isfinite(out).all()
    assert len(calls) < plain


def test_previews_and_progress_follow_every_step(setup, short_cond, monkeypatch) -> None:
    import comfy.utils
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod

    _, _, model = setup
    monkeypatch.setattr(latent_preview.args, "preview_method", LatentPreviewMethod.Latent2RGB)
    updates = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: updates.append((value, total, preview)))
    _ksampler(model, short_cond)
    steps = [(v, t) for v, t, p in updates if p is not None]
    assert steps == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert updates[-1][2][1].size == (WIDTH // 8, HEIGHT // 8)  # (format, PIL image, max size): first frame, latent to RGB


def test_cancel_stops_sampling_and_frees_the_features(setup, short_cond, monkeypatch) -> None:
    """Cancel as the server does it: its progress hook raises once ComfyUI is told to interrupt."""
    import comfy.model_management as mm
    import comfy.patcher_extension
    import comfy.utils

    _, _, model = setup
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: mm.throw_exception_if_processing_interrupted())

    def cancel_after_first(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        mm.interrupt_current_processing(True)
        return out

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_cancel", cancel_after_first)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _ksampler(clone, short_cond, steps=10)
    finally:
        mm.interrupt_current_processing(False)
    assert model.model.diffusion_model._references == []


# ------------------------------------------------------------------------------------------------ model building


def test_every_weight_layer_is_a_comfy_ops_layer_that_can_stream_its_weights(setup, short_cond) -> None:
    """Low-VRAM loading casts weights per call for layers with ``comfy_cast_weights``; forcing it on every layer
    (what a partial load does) gives the same video."""
    from torch import nn

    _, _, model = setup
    denoiser = model.model.diffusion_model
    plain = [n for n, m in denoiser.named_modules() if type(m) in (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)]
    assert plain == []
    castable = [m for m in denoiser.modules() if hasattr(m, "comfy_cast_weights")]
    assert len(castable) > 50
    base = _ksampler(model, short_cond)
    for m in castable:
        m.comfy_cast_weights = True
    try:
        streamed = _ksampler(model, short_cond)
    finally:
        for m in castable:
            del m.comfy_cast_weights  # back to the class default
    assert torch.allclose(streamed, base, atol=1e-5)


def test_full_size_layers_keep_the_release_keys_after_replacement() -> None:
    """Full-size video UNet on ``meta``: swapping in host layer classes leaves every key and shape unchanged."""
    from torch import nn

    from aniportrait_lib.networks import unet
    from aniportrait_lib.networks.layers import replace_layers

    class HostLinear(nn.Linear):
        pass

    class HostConv(nn.Conv2d):
        pass

    model = unet.build_video_unet(device="meta")
    before = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    replace_layers(model, {nn.Linear: HostLinear, nn.Conv2d: HostConv})
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == before
    assert not any(type(m) in (nn.Linear, nn.Conv2d) for m in model.modules())


# ------------------------------------------------------------------------------------------------ user errors


def test_conditioning_refuses_a_size_that_is_not_a_multiple_of_8(pack, setup) -> None:
    vae, clip, _ = setup
    with pytest.raises(ValueError, match=r"^width and height must be multiples of 8 \(got 60x64\)"):
        pack.nodes.sampling.VideoConditioning.execute(vae=vae, clip_vision=clip, reference_image=_images(1, 0),
                                                      pose_images=_images(2, 1), width=60, height=64)


def test_a_latent_of_another_length_is_refused_with_what_to_do(setup, short_cond) -> None:
    _, _, model = setup
    positive, negative, _ = short_cond
    other = {"samples": torch.zeros(1, 4, SHORT + 2, HEIGHT // 8, WIDTH // 8)}
    with pytest.raises(ValueError, match=r"the latent has 10 frames but the pose input has 8: make the empty latent "
                                         r"with the same AniPortrait Video Conditioning node"):
        _ksampler(model, (positive, negative, other))


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_ksampler_samples_videos_shorter_than_the_window_overlap(pack, setup, frames) -> None:
    """Core asks the model for its memory per call shape; 1-4 frame videos once failed there with the context
    overlap message (the frame count was taken for the window length)."""
    _, _, model = setup
    out = _ksampler(model, _conditioning(pack, setup, frames), steps=2)
    assert out.shape == (1, 4, frames, HEIGHT // 8, WIDTH // 8) and torch.isfinite(out).all()


def test_an_image_latent_is_refused_naming_the_video_conditioning(setup, short_cond) -> None:
    """Core's Empty Latent Image (4-D) instead of the video latent: one sentence on what to connect."""
    import nodes as core_nodes

    _, _, model = setup
    positive, negative, _ = short_cond
    image_latent = core_nodes.EmptyLatentImage().generate(WIDTH, HEIGHT, 1)[0]
    with pytest.raises(ValueError, match=re.escape(
            "the AniPortrait model samples video latents (1, 4, frames, h, w), not image latents (batch, 4, h, w): "
            "connect the latent from AniPortrait Video Conditioning (not Empty Latent Image or another image latent).")):
        _ksampler(model, (positive, negative, image_latent))


# ------------------------------------------------------------------------------------------------ torch.compile


def test_compiled_blocks_give_the_same_video_and_leave_the_model_unchanged(pack, setup, short_cond) -> None:
    """AniPortrait Compile Model swaps in one compiled object per heavy block while sampling (backend ``eager`` here:
    torch's graph capture without code generation, which needs no compiler); the pose and reference caches stay
    outside the graphs; torch's recompile limit leaves room for every block while sampling (without that, the
    ResNet blocks' ninth weight shape onwards ran uncompiled)."""
    import torch._dynamo
    from diffusers.models.resnet import ResnetBlock2D
    from torch._dynamo.utils import counters

    import comfy.utils

    _, _, model = setup
    base = _ksampler(model, short_cond)
    torch._dynamo.reset()
    counters.clear()
    compiled, blocks = pack.nodes.comfy_model.with_compiled_blocks(model, "eager")
    unet = model.model.diffusion_model.video_unet
    resnets = sum(isinstance(m, ResnetBlock2D) for m in unet.modules())
    motion_blocks = sum(type(m).__name__ == "TemporalTransformerBlock" for m in unet.modules())
    assert resnets > 0 and motion_blocks > 0 and blocks > resnets + motion_blocks  # + the spatial feed-forwards
    out = _ksampler(compiled, short_cond)
    assert torch.allclose(out, base, atol=1e-5)
    assert counters["stats"]["unique_graphs"] > 8, "the ResNet blocks alone need more than the default limit"
    assert [reason for reason in counters["unimplemented"] if "recompile" in reason.lower()] == []
    first = "diffusion_model.video_unet.down_blocks.0.resnets.0"
    assert type(comfy.utils.get_attr(model.model, first)) is ResnetBlock2D, "compiled blocks are swapped back after sampling"
    assert pack.nodes.sampling.CompileModel.execute(compiled, "inductor").ui is not None
    with pytest.raises(ValueError, match=re.escape("AniPortrait Compile Model takes the AniPortrait MODEL")):
        pack.nodes.sampling.CompileModel.execute(type("Other", (), {"model": object()})(), "inductor")


def test_a_failing_compiler_on_the_model_gets_one_sentence(pack, setup, short_cond) -> None:
    import torch._dynamo

    _, _, model = setup

    def no_triton_here(graph, example_inputs):
        raise RuntimeError("Cannot find a working triton installation.\n(more)")

    torch._dynamo.reset()
    compiled, _ = pack.nodes.comfy_model.with_compiled_blocks(model, no_triton_here)
    expected = ("torch.compile with the no_triton_here backend failed on this machine (RuntimeError: Cannot find a "
                "working triton installation.): bypass AniPortrait Compile Model, or install what no_triton_here "
                "needs (a working Triton on a GPU, a C++ compiler on the CPU).")
    with pytest.raises(ValueError) as failure:
        _ksampler(compiled, short_cond)
    assert str(failure.value) == expected
    assert torch.isfinite(_ksampler(model, short_cond)).all(), "the uncompiled model still samples"
