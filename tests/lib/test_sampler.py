"""Stage-2 sampler: DDIM scheduler, context windows, preprocessing and the full Lmk2Video pipeline.

Golden tests compare with cases produced by the original AniPortrait code (``golden/scheduler``,
``golden/pipeline``); every size, length, seed and tolerance is read from the case files. The other tests
use the pipeline case's tiny checkpoints (loaded through the real loading code) with synthetic inputs.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from aniportrait_lib.sampling.context_windows import frame_coverage, uniform_context_windows
from aniportrait_lib.sampling.evaluation import Lmk2VideoModel
from aniportrait_lib.sampling.preprocess import CLIP_MEAN, CLIP_STD, prepare_pose_tensor, resize_for_clip, resize_reference
from aniportrait_lib.sampling.reference import VAE_ERROR, embed_reference, encode_reference, prepare_reference
from aniportrait_lib.sampling.sampler import LATENT_SCALE, VideoConditioning, make_noise, sample_video
from aniportrait_lib.sampling.scheduler import SCHEDULER_KWARGS, AniPortraitDDIM, make_scheduler

from support.original_pipeline import clip_preprocess, decode_latents, encode_reference_latent, vae_preprocess

from support.golden import load_case
from support.golden import max_abs_err as _max_err
from support.golden import tolerance as _tol

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# scheduler
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_scheduler_golden() -> None:
    folder, case = load_case("scheduler")
    sched = make_scheduler()
    timesteps = sched.set_timesteps(len(case["timesteps"]))
    assert timesteps.dtype == torch.int64
    assert np.array_equal(timesteps.numpy(), np.load(folder / "timesteps.npy"))
    assert timesteps.tolist() == case["timesteps"]

    err_a = _max_err(sched.alphas_cumprod, np.load(folder / "alphas_cumprod.npy"))
    betas_expected = np.load(folder / "betas.npy").astype(np.float64)
    # beta_t = 1 - abar_t / abar_{t-1} with sqrt(abar) = (sqrt(abar_orig) - last) * scale cancels in float32
    # near the end of the schedule: one-ulp differences of cumprod/sqrt between torch builds/CPUs move those
    # betas by a few 1e-6 (seen: 1.4e-6 at t < 990 and 3.0e-6 at t = 998 on torch 2.11; the exact float64
    # value differs from the golden's float32 one by up to 4.0e-6). Tolerance per entry: 1e-6 or the float32
    # rounding bound 16 * eps32 * cond_t, cond_t = (1 - beta_t) * last / sqrt(abar_t), whichever is larger.
    # The sampler never reads betas, only alphas_cumprod (held to 1e-6 everywhere).
    b64 = torch.linspace(SCHEDULER_KWARGS["beta_start"], SCHEDULER_KWARGS["beta_end"], len(betas_expected),
                         dtype=torch.float64)
    sqrt_orig = torch.cumprod(1 - b64, 0).sqrt()
    last = float(sqrt_orig[-1])
    sqrt_new = ((sqrt_orig - last) * (float(sqrt_orig[0]) / (float(sqrt_orig[0]) - last))).numpy()
    cond = (1 - betas_expected) * last / np.maximum(sqrt_new, 1e-30)
    beta_tol = np.maximum(1e-6, 16 * np.finfo(np.float32).eps * cond)
    beta_err = np.abs(sched.betas.numpy().astype(np.float64) - betas_expected)
    err_b = float(beta_err.max())
    print(f"scheduler alphas_cumprod max err {err_a:.3g}, betas {err_b:.3g} "
          f"(max err/tol {float((beta_err / beta_tol).max()):.3g})")
    assert err_a <= 1e-6
    assert (beta_err <= beta_tol).all(), f"betas off at t={np.nonzero(beta_err > beta_tol)[0].tolist()}"
    assert float(sched.alphas_cumprod[-1]) == 0.0

    info = json.loads((folder / "scheduler_info.json").read_text())
    if "init_noise_sigma" in info:
        assert sched.init_noise_sigma == pytest.approx(float(info["init_noise_sigma"]))
    if "final_alpha_cumprod" in info:
        assert float(sched.final_alpha_cumprod) == pytest.approx(float(info["final_alpha_cumprod"]))

    for call in case["step_calls"]:
        k = call["k"]
        t = int(timesteps[call["timestep_index"]])
        assert t == call["timestep"]
        assert sched.prev_timestep(t) == call["prev_timestep"]
        out = sched.step(
            torch.from_numpy(np.load(folder / f"step{k}_model_output.npy")), t,
            torch.from_numpy(np.load(folder / f"step{k}_sample.npy")),
        )
        e_prev = _max_err(out.prev_sample, np.load(folder / f"step{k}_prev_sample.npy"))
        e_x0 = _max_err(out.pred_original_sample, np.load(folder / f"step{k}_pred_original_sample.npy"))
        print(f"scheduler step {k} (t={t}): prev_sample max err {e_prev:.3g}, pred_original_sample {e_x0:.3g}")
        assert e_prev <= 1e-5 and e_x0 <= 1e-5


def test_scheduler_config_and_quirks() -> None:
    sched = make_scheduler()
    assert SCHEDULER_KWARGS["prediction_type"] == "v_prediction"
    assert SCHEDULER_KWARGS["timestep_spacing"] == "trailing"
    assert sched.set_timesteps(3).tolist() == [999, 666, 332]
    # prev_t = t - 1000 // N, not the next listed timestep
    assert sched.prev_timestep(666) == 333
    # at t=999 (zero terminal SNR) x0 = -v
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    out = sched.step(v, 999, x)
    assert torch.allclose(out.pred_original_sample, -v)
    # the last step (prev_t < 0) returns x0 (alpha_prev = 1)
    sched.set_timesteps(25)
    out = sched.step(v, 39, x)
    assert torch.allclose(out.prev_sample, out.pred_original_sample, atol=1e-6)
    with pytest.raises(ValueError, match=r"steps must be between 1 and \d+, got 0"):
        sched.set_timesteps(0)


def test_scheduler_matches_diffusers() -> None:
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(**SCHEDULER_KWARGS)
    ours = AniPortraitDDIM()
    assert _max_err(ours.alphas_cumprod, ref.alphas_cumprod) <= 1e-7
    gen = torch.Generator().manual_seed(0)
    for n in (1, 3, 7, 25, 50):
        ref.set_timesteps(n)
        ours.set_timesteps(n)
        assert ours.timesteps.tolist() == ref.timesteps.tolist()
        x = torch.randn(1, 4, 3, 5, 5, generator=gen)
        v = torch.randn(1, 4, 3, 5, 5, generator=gen)
        for t in ours.timesteps.tolist():
            assert _max_err(ours.step(v, t, x).prev_sample, ref.step(v, t, x, eta=0.0).prev_sample) <= 1e-6


# ------------------------------------------------------------------------------------------------------------
# context windows
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_context_windows_golden() -> None:
    folder, _ = load_case("pipeline")
    data = json.loads((folder / "context_windows_uniform.json").read_text())
    assert data["windows"], "no windows in the golden file"
    n_checked = 0
    for n_frames, by_overlap in data["windows"].items():
        for key, expected in by_overlap.items():
            overlap = int(key.replace("overlap", ""))
            got = uniform_context_windows(int(n_frames), 16, overlap)
            assert got == expected, f"N={n_frames} overlap={overlap}: {got} != {expected}"
            assert min(frame_coverage(got, int(n_frames))) >= 1
            n_checked += 1
    print(f"context windows: {n_checked} (N, overlap) cases match")


def test_context_windows_wrap_and_validation() -> None:
    assert uniform_context_windows(20) == [list(range(16)), list(range(12, 20)) + list(range(8))]
    assert uniform_context_windows(5) == [list(range(5))]
    assert uniform_context_windows(1) == [[0]]
    assert uniform_context_windows(10, 4, 0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    for kwargs, message in (
        (dict(num_frames=0), "needs at least 1 frame, got 0"),
        (dict(num_frames=20, context_frames=0), "context_frames must be at least 1, got 0"),
        (dict(num_frames=20, context_frames=16, context_overlap=16), r"context_overlap \(16\) must be smaller than context_frames \(16\)"),
        (dict(num_frames=20, context_frames=16, context_overlap=20), r"context_overlap \(20\) must be smaller than context_frames \(16\)"),
        (dict(num_frames=20, context_overlap=-1), "context_overlap must be >= 0, got -1"),
        (dict(num_frames=20, context_stride=0), "context_stride must be at least 1, got 0"),
    ):
        with pytest.raises(ValueError, match=message):
            uniform_context_windows(**kwargs)


class _Recorder(torch.nn.Module):
    """Wraps a module and records its calls (args/kwargs) and outputs."""

    def __init__(self, inner: torch.nn.Module, transform: Any = None) -> None:
        super().__init__()
        self.inner = inner
        self.transform = transform
        self.calls: list[tuple[tuple, dict, Any]] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.inner(*args, **kwargs)
        if self.transform is not None:
            out = self.transform(out)
        self.calls.append((args, kwargs, out))
        return out


def _wrapped(models: Any, **transforms: Any) -> SimpleNamespace:
    return SimpleNamespace(
        reference_unet=_Recorder(models.reference_unet, transforms.get("reference_unet")),
        video_unet=_Recorder(models.video_unet, transforms.get("video_unet")),
        pose_guider=_Recorder(models.pose_guider, transforms.get("pose_guider")),
    )


def _sample(models: Any, ref_latent: torch.Tensor, clip_embeds: torch.Tensor, poses: Any, *,
            pose_cache_bytes: int = 1 << 30, pose_cache_host_bytes: int | None = None, **settings: Any) -> torch.Tensor:
    """:func:`sample_video` on the networks of ``models`` with the original's conditioning of these inputs."""
    model = Lmk2VideoModel(models.reference_unet, models.video_unet, models.pose_guider, pose_cache_bytes,
                           pose_cache_host_bytes)
    return sample_video(model, VideoConditioning.of_reference(ref_latent, clip_embeds, poses), **settings)


class _RecordingDDIM(AniPortraitDDIM):
    """Scheduler that keeps every step's (t, sample, model_output, prev_sample, x0)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor) -> Any:
        out = super().step(model_output, timestep, sample)
        self.records.append(dict(t=int(timestep), sample=sample.clone(), model_output=model_output.clone(),
                                 prev_sample=out.prev_sample.clone(), x0=out.pred_original_sample.clone()))
        return out


def _synthetic_inputs(case: dict, folder: Path, num_frames: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Reference latent / CLIP embedding of the case size and ``num_frames`` pose frames (golden frames ping-pong)."""
    p = case["params"]
    h, w = int(p["height"]) // 8, int(p["width"]) // 8
    gen = torch.Generator().manual_seed(7)
    ref_latent = torch.randn(1, 4, h, w, generator=gen)
    clip_embeds = torch.randn(1, int(p["cross_dim"]), generator=gen)
    base = np.load(folder / "in_pose_images_uint8.npy")
    loop = np.concatenate([base, base[::-1]], axis=0)
    reps = -(-num_frames // len(loop))
    poses = np.concatenate([loop] * reps, axis=0)[:num_frames]
    return ref_latent, clip_embeds, np.ascontiguousarray(poses)


# ------------------------------------------------------------------------------------------------------------
# full pipeline golden
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.golden
def test_pipeline_golden(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    from diffusers import AutoencoderKL
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection

    folder, case = pipeline_case
    p = case["params"]
    tol = case["tolerance"]
    width, height, n_frames = int(p["width"]), int(p["height"]), int(p["video_length"])

    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True).eval()
    image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder / "image_encoder"),
                                                                  local_files_only=True).eval()
    ref_image = Image.open(folder / "in_ref_image.png").convert("RGB")
    poses = np.load(folder / "in_pose_images_uint8.npy")
    assert poses.shape[0] == n_frames and poses.shape[1:3] == (height, width)

    errors: dict[str, float] = {}
    with torch.no_grad():
        clip_pixels = clip_preprocess(np.asarray(ref_image))
        errors["clip_pixel_values"] = _max_err(clip_pixels, np.load(folder / "clip_pixel_values.npy"))
        clip_embeds = image_encoder(clip_pixels).image_embeds
        errors["clip_image_embeds"] = _max_err(clip_embeds, np.load(folder / "clip_image_embeds.npy"))
        vae_in = vae_preprocess(np.asarray(ref_image), width, height)
        errors["vae_ref_input"] = _max_err(vae_in, np.load(folder / "vae_ref_input.npy"))
        ref_latent = encode_reference_latent(vae, vae_in)
        errors["ref_image_latents"] = _max_err(ref_latent, np.load(folder / "ref_image_latents.npy"))
        # the same through the library's reference step, the case's encoders passed as callables
        mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        ref = prepare_reference(
            ref_image, width, height,
            encode_vae=lambda px: vae.encode(px.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean,
            encode_clip=lambda px: image_encoder((px.permute(0, 3, 1, 2) - mean) / std).image_embeds,
            context_dim=int(p["cross_dim"]),
        )
        errors["prepare_reference_latent"] = _max_err(ref.latent, np.load(folder / "ref_image_latents.npy"))
        errors["prepare_reference_clip"] = _max_err(ref.clip_embeds, np.load(folder / "clip_image_embeds.npy"))
        ref_pose = prepare_pose_tensor(np.load(folder / "in_ref_pose_uint8.npy")[None])[:, :, 0]
        errors["ref_pose_tensor"] = _max_err(ref_pose, np.load(folder / "ref_pose_tensor.npy"))

        init = make_noise((1, 4, n_frames, height // 8, width // 8), int(p["gen_seed"]))
        init_expected = np.load(folder / "init_latents.npy")
        assert np.array_equal(init.numpy(), init_expected), "init latents are not reproduced exactly"
        errors["init_latents"] = _max_err(init, init_expected)

        models = _wrapped(tiny_models)
        sched = _RecordingDDIM()
        progress: list[tuple[int, int]] = []
        latents = _sample(
            models, ref_latent, clip_embeds, poses,
            steps=int(p["num_inference_steps"]), cfg=float(p["guidance_scale"]), seed=int(p["gen_seed"]),
            progress=lambda i, n, preview=None: progress.append((i, n)), scheduler=sched,
        )
        # the original ran the guider on the CFG batch (two copies of the window's frames, which give the same
        # batch statistics); the pack runs it on one copy, which every row of the window reads
        pose_fea = models.pose_guider.calls[0][2]
        for k, fea in enumerate(pose_fea):
            expected = np.load(folder / f"pose_fea_window0_{k}.npy")
            assert all(np.array_equal(expected[0], row) for row in expected), "the original's CFG rows differ"
            errors[f"pose_fea_window0_{k}"] = _max_err(fea, expected[:1])
        assert [r["t"] for r in sched.records] == case["timesteps"]
        for k, rec in enumerate(sched.records):
            for name in ("sample", "model_output", "prev_sample"):
                errors[f"step{k}_{name}"] = _max_err(rec[name], np.load(folder / f"step{k}_{name}.npy"))
        errors["final_latents"] = _max_err(latents, np.load(folder / "final_latents.npy"))
        video = decode_latents(vae, latents)
        errors["out_video"] = _max_err(video, np.load(folder / "out_video.npy"))

    for name, err in errors.items():
        print(f"pipeline {name}: max abs err {err:.3g}")

    # structure of the run
    n_windows = len(uniform_context_windows(n_frames, 16, 4))
    assert len(models.reference_unet.calls) == 1
    # the original calls the pose guider per step and window; its output only depends on the window, so the
    # sampler computes it once per window (the per-step recomputation is checked equal in the long-video test)
    assert len(case["pose_guider_calls_input_shapes"]) == int(p["num_inference_steps"]) * n_windows
    assert len(models.pose_guider.calls) == n_windows
    for call, shape in zip(models.pose_guider.calls, case["pose_guider_calls_input_shapes"]):
        assert list(call[0][0].shape) == [1, *shape[1:]]
    assert len(models.video_unet.calls) == int(p["num_inference_steps"]) * n_windows
    assert progress == [(i + 1, len(progress)) for i in range(len(progress))]
    assert len(progress) == int(p["num_inference_steps"]) * n_windows
    assert tuple(video.shape) == tuple(case["expected"]["out_video.npy"])

    assert errors["clip_pixel_values"] <= _tol(tol["clip_pixel_values"])
    assert errors["ref_image_latents"] <= _tol(tol["ref_image_latents"])
    assert errors["prepare_reference_latent"] <= _tol(tol["ref_image_latents"])
    # the case lists no tolerance for these two: the VAE input is preprocessed pixels like clip_pixel_values, the
    # CLIP embedding an encoder output of such pixels like ref_image_latents
    assert errors["vae_ref_input"] <= _tol(tol["clip_pixel_values"])
    assert errors["ref_pose_tensor"] == 0.0  # uint8 arithmetic: exact
    assert errors["clip_image_embeds"] <= _tol(tol["ref_image_latents"])
    assert errors["prepare_reference_clip"] <= _tol(tol["ref_image_latents"])
    fea_tol = _tol(load_case("pose_guider")[1]["tolerance"]["out_fea*"])  # the pose guider's own golden case
    for k in range(5):
        assert errors[f"pose_fea_window0_{k}"] <= fea_tol
    lat_tol = _tol(tol["step*/final_latents"])
    for name, err in errors.items():
        if name.startswith("step") or name == "final_latents":
            assert err <= lat_tol, f"{name}: {err} > {lat_tol}"
    assert errors["out_video"] <= _tol(tol["out_video"])


# ------------------------------------------------------------------------------------------------------------
# CFG semantics
# ------------------------------------------------------------------------------------------------------------
def _perturb_features(features: list[torch.Tensor]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return [f + torch.randn(f.shape, generator=gen).to(f.dtype) for f in features]


def test_uncond_branch_ignores_reference_features(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 18)
    kwargs = dict(steps=1, cfg=3.5, seed=3)
    plain = _wrapped(tiny_models)
    _sample(plain, ref_latent, clip_embeds, poses, **kwargs)
    perturbed = _wrapped(tiny_models, reference_unet=_perturb_features)
    _sample(perturbed, ref_latent, clip_embeds, poses, **kwargs)

    # the reference UNet ran once, for the positive row only (the negative rows never read its features)
    (ref_args, ref_kwargs, _), = plain.reference_unet.calls
    context = ref_args[1]
    assert context.shape[0] == 1 and torch.equal(context[0, 0], clip_embeds[0])

    assert len(plain.video_unet.calls) == len(perturbed.video_unet.calls) >= 1
    for (args_a, _, out_a), (args_b, _, out_b) in zip(plain.video_unet.calls, perturbed.video_unet.calls):
        sample, _, states, _, features, mask = args_a
        assert sample.shape[0] == 2
        assert torch.count_nonzero(states[0]) == 0, "uncond row must get a zero CLIP embedding"
        assert mask.tolist() == [False, True]
        assert features is not None
        assert torch.equal(args_a[0], args_b[0])  # same latents (single step: nothing diverged yet)
        # uncond prediction unchanged by the reference features, cond prediction changed
        assert _max_err(out_a[0], out_b[0]) <= 1e-6, "the uncond branch used the reference features"
        assert _max_err(out_a[1], out_b[1]) > 1e-3, "the cond branch ignored the reference features"


def test_cfg_one_skips_uncond_branch(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    folder, case = pipeline_case
    n_frames = 18
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, n_frames)
    models = _wrapped(tiny_models)
    steps = 2
    latents = _sample(models, ref_latent, clip_embeds, poses, steps=steps, cfg=1.0, seed=5)
    n_windows = len(uniform_context_windows(n_frames))
    assert torch.isfinite(latents).all()
    (ref_args, _, _), = models.reference_unet.calls
    assert ref_args[0].shape[0] == 1 and ref_args[1].shape[0] == 1
    assert len(models.video_unet.calls) == steps * n_windows
    for args, _, _ in models.video_unet.calls:
        assert args[0].shape[0] == 1
        assert args[2].shape[0] == 1 and torch.equal(args[2][0, 0], clip_embeds[0])
        assert args[5].tolist() == [True]
    for args, _, _ in models.pose_guider.calls:
        assert args[0].shape[0] == 1


class _ConstantUNet(torch.nn.Module):
    """Predicts v = 1 (cond rows) / 0 (uncond rows) everywhere."""

    def forward(self, sample, timestep, states, pose, features, mask):  # noqa: ANN001
        out = torch.zeros_like(sample)
        out[mask] = 1.0
        return out


def test_window_average_and_guidance(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    """Overlapping frames are averaged (also without CFG, unlike the original) before guidance."""
    folder, case = pipeline_case
    n_frames = 20
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, n_frames)
    models = SimpleNamespace(reference_unet=tiny_models.reference_unet, video_unet=_ConstantUNet(),
                             pose_guider=tiny_models.pose_guider)
    for cfg, expected in ((1.0, 1.0), (2.5, 2.5)):
        sched = _RecordingDDIM()
        _sample(models, ref_latent, clip_embeds, poses, steps=1, cfg=cfg, seed=0, scheduler=sched)
        (rec,) = sched.records
        assert torch.allclose(rec["model_output"], torch.full_like(rec["model_output"], expected)), cfg


# ------------------------------------------------------------------------------------------------------------
# long video, determinism, progress, validation
# ------------------------------------------------------------------------------------------------------------
def test_long_video_wraparound_deterministic(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    folder, case = pipeline_case
    n_frames = 40
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, n_frames)
    windows = uniform_context_windows(n_frames)
    assert any(w[-1] < w[0] for w in windows), "expected a wrap-around window"
    progress: list[tuple[int, int]] = []
    models = _wrapped(tiny_models)
    a = _sample(models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=11,
                     progress=lambda i, n, preview=None: progress.append((i, n)))
    h, w = ref_latent.shape[-2:]
    assert tuple(a.shape) == (1, 4, n_frames, h, w)
    assert a.dtype == torch.float32 and torch.isfinite(a).all()
    assert progress == [(i + 1, 2 * len(windows)) for i in range(2 * len(windows))]
    for (args, _, _), win in zip(models.video_unet.calls, windows * 2):
        assert args[0].shape[2] == len(win)
    assert len(models.pose_guider.calls) == len(windows)  # cached after the first step
    b = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=11)
    assert torch.equal(a, b)
    uncached = _wrapped(tiny_models)
    b2 = _sample(uncached, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=11, pose_cache_bytes=0, pose_cache_host_bytes=0)
    assert len(uncached.pose_guider.calls) == 2 * len(windows)
    assert torch.equal(a, b2), "cached pose features changed the result"
    c = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=12)
    assert _max_err(a, c) > 1e-2
    # a generator gives the same noise as the integer seed
    d = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5,
                     seed=torch.Generator("cpu").manual_seed(11))
    assert torch.equal(a, d)


def test_window_batch_gives_the_same_video_in_fewer_calls(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    folder, case = pipeline_case
    n_frames = 40
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, n_frames)
    windows = uniform_context_windows(n_frames)
    one = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=5)
    for window_batch in (2, len(windows), 8):
        models = _wrapped(tiny_models)
        progress: list[int] = []
        batched = _sample(models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=5,
                               window_batch=window_batch, progress=lambda i, n, preview=None: progress.append(i))
        per_step = -(-len(windows) // min(window_batch, len(windows)))
        assert len(models.video_unet.calls) == 2 * per_step
        args = models.video_unet.calls[0][0]
        rows = 2 * min(window_batch, len(windows))
        assert args[0].shape[0] == rows and args[2].shape[0] == rows
        # rows [uncond windows..., cond windows...]: the reference mask has two runs
        assert args[5].tolist() == [False] * (rows // 2) + [True] * (rows // 2)
        assert progress == list(range(1, 2 * len(windows) + 1)), "progress still counts windows"
        assert len(models.pose_guider.calls) == len(windows), "pose features are still computed once per window"
        assert _max_err(one, batched) < 1e-4, f"window_batch {window_batch} changed the video"
    with pytest.raises(ValueError, match=re.escape("window_batch must be at least 1, got 0.")):
        _sample(tiny_models, ref_latent, clip_embeds, poses, steps=1, window_batch=0)


def test_reference_keys_values_are_projected_once_per_run(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    from aniportrait_lib.networks.attention import ReferenceFeatures

    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 8)
    unet = tiny_models.video_unet
    key_projections = [m.attn1.to_k for m in unet.modules() if hasattr(m, "attn1") and m.attn1 is not None]
    calls = {"n": 0}
    hooks = [lin.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1)) for lin in key_projections]
    try:
        models = _wrapped(tiny_models)
        _sample(models, ref_latent, clip_embeds, poses, steps=3, cfg=3.5, seed=1)
    finally:
        for hook in hooks:
            hook.remove()
    unet_calls, blocks = len(models.video_unet.calls), len(key_projections)
    assert unet_calls == 3
    # one own-token projection per block and call, plus one reference projection per block for the whole run
    assert calls["n"] == unet_calls * blocks + blocks
    # the kept projections are the ones a plain list of features gives, call after call
    args = models.video_unet.calls[0][0]
    features = args[4]
    assert isinstance(features, ReferenceFeatures)
    plain = unet(*args[:4], list(features), args[5])
    kept = ReferenceFeatures(list(features))
    assert torch.equal(unet(*args[:4], kept, args[5]), plain)
    assert torch.equal(unet(*args[:4], kept, args[5]), plain)


def test_every_convolution_gets_row_major_activations(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    """A channels-last activation makes PyTorch copy a convolution's weights to channels-last at every call (and
    pick a slower kernel): the motion modules once returned channels-last sums, which made the full-size video
    UNet's 1280-channel convolutions ~2x slower on the CPU than the original's."""
    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 20)
    convs = [(name, m) for net in (tiny_models.reference_unet, tiny_models.video_unet, tiny_models.pose_guider)
             for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    seen: dict[str, bool] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(
        name, seen.get(name, True) and args[0].is_contiguous())) for name, m in convs]
    try:
        _sample(tiny_models, ref_latent, clip_embeds, poses, steps=1, cfg=3.5, seed=3, window_batch=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) > 40, "the hooks saw the networks' convolutions"
    assert [name for name, ok in seen.items() if not ok] == []


def _block_classes(unet: torch.nn.Module) -> list[str]:
    return sorted({type(m).__name__ for m in unet.modules()})


def test_compiled_blocks_give_the_same_video_and_every_block_gets_compiled_code(pipeline_case: tuple[Path, dict],
                                                                                tiny_models: Any) -> None:
    """``compile_backend`` runs the video UNet's heavy blocks through torch.compile for one run. The backend here
    records the graphs it gets and runs them as captured (no compiler needed), so the latents must not move.
    Compiled code is cached per code object, so without the raised recompile limit the ResNet blocks' ninth
    weight shape onwards ran uncompiled (torch logs it and counts it under "unimplemented")."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from aniportrait_lib.sampling.compiling import compile_targets

    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 20)
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(graph: torch.fx.GraphModule, example_inputs: list) -> Any:
        graphs.append(graph)
        return graph.forward

    unet = tiny_models.video_unet
    classes_before = _block_classes(unet)
    torch._dynamo.reset()
    counters.clear()
    plain = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=3)
    compiled = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=3,
                            compile_backend=recording_backend)
    assert _max_err(plain, compiled) < 1e-6
    signatures = {(type(unet.get_submodule(path)).__name__,
                   tuple(tuple(p.shape) for p in unet.get_submodule(path).parameters())) for path in compile_targets(unet)}
    assert len(graphs) >= len(signatures), "at least one graph per distinct block (input sizes add more)"
    limit_hits = [reason for reason in counters["unimplemented"] if "recompile" in reason.lower()]
    assert limit_hits == [], "every block ran compiled code"
    assert _block_classes(unet) == classes_before, "the original blocks are back after the run"
    assert not any("OptimizedModule" in name for name in classes_before)
    graphs_after_first = len(graphs)
    again = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=3.5, seed=3,
                         compile_backend=recording_backend)
    assert len(graphs) == graphs_after_first, "a second run of the same size reuses the compiled code"
    assert torch.equal(again, compiled)


def test_a_failing_compiler_gets_one_sentence_and_leaves_the_model_usable(pipeline_case: tuple[Path, dict],
                                                                           tiny_models: Any) -> None:
    import torch._dynamo

    from aniportrait_lib.sampling.compiling import CompileError

    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 8)

    def no_compiler_here(graph: torch.fx.GraphModule, example_inputs: list) -> Any:
        raise RuntimeError("Compiler: cc is not found.\n(a long compiler log)")

    torch._dynamo.reset()
    classes_before = _block_classes(tiny_models.video_unet)
    expected = ("torch.compile with the no_compiler_here backend failed on this machine (RuntimeError: Compiler: "
                "cc is not found.): set compile to off, or install what "
                "no_compiler_here needs (a working Triton on a GPU, a C++ compiler on the CPU).")
    with pytest.raises(CompileError) as failure:
        _sample(tiny_models, ref_latent, clip_embeds, poses, steps=1, seed=3, compile_backend=no_compiler_here)
    assert str(failure.value) == expected
    assert isinstance(failure.value, ValueError), "nodes show it as a plain error, not a traceback"
    assert _block_classes(tiny_models.video_unet) == classes_before
    assert torch.isfinite(_sample(tiny_models, ref_latent, clip_embeds, poses, steps=1, seed=3)).all()


def test_cancelling_a_compiled_run_puts_the_original_blocks_back(pipeline_case: tuple[Path, dict],
                                                                  tiny_models: Any) -> None:
    """ComfyUI cancels by raising from the progress callback, between two network calls: the cancel reaches the
    caller as it is (not as a compile error), and the model is left as it was."""
    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 20)

    class Cancelled(Exception):
        pass

    def cancel_at_second(done: int, total: int, preview_latent: Any = None) -> None:
        if done == 2:
            raise Cancelled

    classes_before = _block_classes(tiny_models.video_unet)
    with pytest.raises(Cancelled):
        _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, seed=3, compile_backend="eager",
                     progress=cancel_at_second)
    assert _block_classes(tiny_models.video_unet) == classes_before


def test_noise_matches_global_manual_seed() -> None:
    shape = (1, 4, 5, 3, 2)
    state = torch.random.get_rng_state()
    try:
        expected = torch.randn(shape, generator=torch.manual_seed(1234))
    finally:
        torch.random.set_rng_state(state)
    assert torch.equal(make_noise(shape, 1234), expected)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        make_noise(shape, -1)


def test_progress_is_the_cancel_point_and_carries_one_preview_per_step(pipeline_case: tuple[Path, dict],
                                                                          tiny_models: Any) -> None:
    """One callback for progress, previews and cancelling: x0's middle frame once per step, raising stops."""
    folder, case = pipeline_case
    n_frames, steps = 20, 2
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, n_frames)
    n_windows = len(uniform_context_windows(n_frames))
    sched = _RecordingDDIM()
    calls: list[tuple[int, int, Any]] = []
    _sample(tiny_models, ref_latent, clip_embeds, poses, steps=steps, cfg=2.0, seed=1, scheduler=sched,
                 progress=lambda done, total, preview_latent=None: calls.append((done, total, preview_latent)))
    assert [(d, n) for d, n, _ in calls] == [(i + 1, steps * n_windows) for i in range(steps * n_windows)]
    previews = [(d, p) for d, _, p in calls if p is not None]
    assert [d for d, _ in previews] == [n_windows * (k + 1) for k in range(steps)]
    h, w = ref_latent.shape[-2:]
    for k, (_, preview) in enumerate(previews):
        assert tuple(preview.shape) == (1, 4, h, w)
        x0 = sched.records[k]["x0"]
        assert torch.equal(preview, x0[:, :, n_frames // 2]), "the preview is not the step's x0 middle frame"

    class Cancelled(Exception):
        pass

    def cancel_at_second(done: int, total: int, preview_latent: Any = None) -> None:
        if done == 2:
            raise Cancelled
    models = _wrapped(tiny_models)
    with pytest.raises(Cancelled):
        _sample(models, ref_latent, clip_embeds, poses, steps=3, cfg=3.5, progress=cancel_at_second)
    assert len(models.video_unet.calls) == 2


def test_input_validation(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 4)
    good = dict(steps=1, cfg=2.0)
    bad_cases = [
        (dict(), dict(cfg=0.5), r"cfg must be a finite number >= 1.0 \(1.0 disables guidance\), got 0.5"),
        (dict(), dict(cfg=float("nan")), "cfg must be a finite number >= 1.0"),
        (dict(), dict(steps=0), "steps must be an integer >= 1, got 0"),
        (dict(), dict(context_overlap=16), r"context_overlap \(16\) must be 0 or more and smaller than context_frames \(16\)"),
        (dict(poses=poses[:0]), dict(), "the pose images input is empty"),
        (dict(poses=poses[..., :2]), dict(), "has 2 channels"),
        (dict(ref_latent=ref_latent[:, :3]), dict(), r"the reference latent must have shape \(1, 4, H/8, W/8\)"),
        (dict(clip_embeds=clip_embeds.repeat(2, 1)), dict(), r"clip_embeds must have shape \(1, D\)"),
    ]
    for inputs, kwargs, message in bad_cases:
        args = dict(ref_latent=ref_latent, clip_embeds=clip_embeds, poses=poses)
        args.update(inputs)
        with pytest.raises(ValueError, match=message):
            _sample(tiny_models, args["ref_latent"], args["clip_embeds"], args["poses"], **{**good, **kwargs})


def test_pose_frames_of_another_size_are_resized_like_the_original(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    """Frames not at 8x the latent size are resized nearest-neighbour (the original's F.interpolate default)."""
    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 4)
    h, w = poses.shape[1:3]
    small = np.ascontiguousarray(poses[:, ::2, ::2])
    resized = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2).float(), size=(h, w), mode="nearest")
    resized = resized.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    a = _sample(tiny_models, ref_latent, clip_embeds, small, steps=1, cfg=2.0, seed=3)
    b = _sample(tiny_models, ref_latent, clip_embeds, resized, steps=1, cfg=2.0, seed=3)
    assert torch.equal(a, b)


def test_preprocess_shapes_and_ranges() -> None:
    gen = np.random.default_rng(0)
    frames = gen.integers(0, 256, size=(3, 16, 24, 3), dtype=np.uint8)
    pose = prepare_pose_tensor(frames)
    assert pose.shape == (1, 3, 3, 16, 24) and pose.dtype == torch.float32
    assert torch.equal(pose[0, :, 1], torch.from_numpy(frames[1]).permute(2, 0, 1).float() * 2 - 1)
    assert torch.equal(prepare_pose_tensor(frames.astype(np.float32) / 255.0), pose)
    with pytest.raises(ValueError, match="must be uint8"):  # 0..255 floats are refused, not guessed
        prepare_pose_tensor(torch.from_numpy(frames).float())
    overshoot = frames.astype(np.float32) / 255.0
    overshoot[0, 0, 0, 0] = 1.001  # an upscaler's overshoot is clipped, not read as 0..255 data
    assert prepare_pose_tensor(overshoot)[0, 0, 0, 0, 0] == 509.0
    with pytest.raises(ValueError, match="the pose images input has pixel values from -1 to"):
        prepare_pose_tensor(frames.astype(np.float32) - 1.0)
    with pytest.raises(ValueError, match="the pose images input has 2 channels"):
        prepare_pose_tensor(frames[..., :2])
    assert prepare_pose_tensor(frames, 32, 48).shape == (1, 3, 3, 32, 48)
    image = gen.integers(0, 256, size=(50, 40, 3), dtype=np.uint8)
    clip = clip_preprocess(image)
    assert clip.shape == (1, 3, 224, 224)
    vae_in = vae_preprocess(image, 24, 16)
    assert vae_in.shape == (1, 3, 16, 24) and vae_in.min() >= -1 and vae_in.max() <= 1
    assert LATENT_SCALE == pytest.approx(0.18215)


def test_pose_cache_overflowing_to_host_memory_gives_the_same_video(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    """With no device budget every window's pose features are parked on the host: same latents, bit for bit."""
    folder, case = pipeline_case
    ref_latent, clip_embeds, poses = _synthetic_inputs(case, folder, 20)
    a = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=2.0, seed=5)
    b = _sample(tiny_models, ref_latent, clip_embeds, poses, steps=2, cfg=2.0, seed=5, pose_cache_bytes=0,
                pose_cache_host_bytes=1 << 30)
    assert torch.equal(a, b)


def test_pose_cache_stops_growing_beyond_both_budgets(tiny_models: Any) -> None:
    """Windows beyond the device and host budgets are not kept (computed again when used): same features,
    and the cache holds only what the budgets allow, however long the video."""
    from aniportrait_lib.sampling.pose_features import PoseFeatureCache

    poses = np.random.default_rng(0).integers(0, 255, size=(12, 64, 64, 3), dtype=np.uint8)
    cache = PoseFeatureCache(tiny_models.pose_guider, poses, (64, 64), torch.device("cpu"), torch.float32,
                             budget_bytes=0, overflow_budget_bytes=0)
    windows = [tuple(range(0, 4)), tuple(range(4, 8)), tuple(range(8, 12))]
    first = [cache.features(w) for w in windows]
    assert cache._cache == {}  # nothing kept: both budgets are 0
    again = cache.features(windows[1])
    assert all(torch.equal(a, b) for a, b in zip(first[1], again))
    one_window = sum(f.numel() * f.element_size() for f in first[0])
    kept = PoseFeatureCache(tiny_models.pose_guider, poses, (64, 64), torch.device("cpu"), torch.float32,
                            budget_bytes=one_window, overflow_budget_bytes=one_window)
    for w in windows:
        kept.features(w)
    assert sorted(kept._cache) == windows[:2]  # one window on the device, one parked, the third recomputed


# ------------------------------------------------------------------------------------------------------------
# reference preprocessing: Pillow 9.5's resize pass order, encoder checks
# ------------------------------------------------------------------------------------------------------------
def _two_pass(image: np.ndarray, width: int, height: int, resample: int, width_first: bool) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(image)
    if width_first:
        pil = pil.resize((width, pil.height), resample=resample).resize((width, height), resample=resample)
    else:
        pil = pil.resize((pil.width, height), resample=resample).resize((width, height), resample=resample)
    return np.asarray(pil)


def _pil(image: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), resample=resample))


def test_reference_resizes_take_the_width_pass_first_like_pillow_9_5() -> None:
    """The original ran Pillow 9.5, whose separable resize always did the width pass first (each pass rounds
    to uint8). The pipeline golden only covers a reference shrunk on both axes (100x90 -> 72x72, which this
    Pillow also does width first), so the other cases are checked against Pillow itself.

    Measured with Pillow 13: a one-call resize equals width-then-height whenever the width shrinks and the
    height grows, or both grow; when the width grows and the height shrinks it does the height pass first
    (70x110 -> 80x64 of a random image: pixels differ by up to 26/255); when both shrink it depends on the
    sizes, so that case is not asserted.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(110, 70, 3), dtype=np.uint8)  # W x H = 70 x 110
    lanczos, bicubic = Image.LANCZOS, Image.BICUBIC
    # both grow, width shrinks + height grows: the pass order agrees with this Pillow's
    for w, h in ((96, 128), (80, 120), (48, 160), (64, 112)):
        assert np.array_equal(resize_reference(photo, w, h), _pil(photo, w, h, lanczos)), (w, h)
    assert np.array_equal(resize_for_clip(photo), _pil(photo, 224, 224, bicubic))
    # width grows, height shrinks: the original's order (width first), not this Pillow's
    mixed = resize_reference(photo, 80, 64)
    assert np.array_equal(mixed, _two_pass(photo, 80, 64, lanczos, width_first=True))
    assert not np.array_equal(mixed, _two_pass(photo, 80, 64, lanczos, width_first=False))
    tall = rng.integers(0, 256, size=(300, 100, 3), dtype=np.uint8)  # 100 -> 224 grows, 300 -> 224 shrinks
    clip = resize_for_clip(tall)
    assert np.array_equal(clip, _two_pass(tall, 224, 224, bicubic, width_first=True))
    assert not np.array_equal(clip, _two_pass(tall, 224, 224, bicubic, width_first=False))
    # one axis only, or no change: one pass / a copy
    assert np.array_equal(resize_reference(photo, 70, 64), _pil(photo, 70, 64, lanczos))
    assert np.array_equal(resize_reference(photo, 70, 110), photo)
    # the VAE input follows the same pixels
    assert torch.equal(vae_preprocess(photo, 80, 64)[0].permute(1, 2, 0),
                       torch.from_numpy(mixed).float() / 255.0 * 2.0 - 1.0)


def test_reference_encoder_checks() -> None:
    """Wrong encoders are named: an encoder giving a non-SD1.5 latent, a CLIP of another embedding width."""
    image = np.random.default_rng(1).integers(0, 256, size=(50, 40, 3), dtype=np.uint8)
    seen: list[torch.Tensor] = []

    def sd15_vae(pixels: torch.Tensor) -> torch.Tensor:
        seen.append(pixels)
        return torch.ones(1, 4, pixels.shape[1] // 8, pixels.shape[2] // 8)

    latent = encode_reference(image, 32, 24, sd15_vae)
    assert tuple(seen[0].shape) == (1, 24, 32, 3) and seen[0].dtype == torch.float32
    assert torch.equal(seen[0][0], torch.from_numpy(resize_reference(image, 32, 24)).float() / 255.0)
    assert torch.allclose(latent, torch.full((1, 4, 3, 4), LATENT_SCALE))
    for shape in ((1, 16, 3, 4), (1, 4, 1, 2)):  # other channels, 16x downscale
        with pytest.raises(ValueError, match=re.escape(VAE_ERROR)):
            encode_reference(image, 32, 24, lambda px, shape=shape: torch.zeros(shape))
    broken = torch.ones(1, 4, 3, 4)
    broken[0, 2, 1, 1] = float("nan")  # a VAE with broken weights (seen: an uninitialised random TAESD)
    with pytest.raises(ValueError, match=r"^the VAE encoded the reference photo to NaN/inf values: its weights are broken"):
        encode_reference(image, 32, 24, lambda px: broken)
    embeds = embed_reference(image, lambda px: torch.ones(1, 1, 768), 768)  # (1, 1, D) is squeezed
    assert tuple(embeds.shape) == (1, 768)
    with pytest.raises(ValueError, match=re.escape(
            "the CLIP vision model gives 1024-d image embeddings but the AniPortrait UNets expect 768-d")):
        embed_reference(image, lambda px: torch.ones(1, 1024), 768)


def test_check_inputs_messages() -> None:
    from aniportrait_lib.sampling.sampler import check_inputs

    ok = dict(width=64, height=64, num_frames=3, steps=2, cfg=3.5, context_frames=16, context_overlap=4)
    check_inputs(**ok)
    with pytest.raises(ValueError, match=re.escape("multiples of 8 (got 64x70): the VAE works at 1/8 size, so use "
                                                   "e.g. 64x64.")):
        check_inputs(**{**ok, "height": 70})
    with pytest.raises(ValueError, match=re.escape("context_overlap (16) must be 0 or more and smaller than "
                                                   "context_frames (16)")):
        check_inputs(**{**ok, "context_overlap": 16})
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        check_inputs(**{**ok, "steps": 0})
    with pytest.raises(ValueError, match=re.escape("cfg must be a finite number >= 1.0")):
        check_inputs(**{**ok, "cfg": 0.5})


def test_estimate_memory_follows_the_largest_model_call() -> None:
    """The estimate is the activations of the sampler's largest model call: it grows with the rows a call holds
    (CFG doubles them, window_batch multiplies them up to the number of windows), with one window's frames (not
    the video's), with the pixel count and the element size."""
    from aniportrait_lib.sampling.sampler import activation_bytes, estimate_memory

    base = estimate_memory(48, 512, 512, 3.5, 16, torch.float16)
    assert base > 0
    assert estimate_memory(48, 512, 512, 1.0, 16, torch.float16) * 2 == base  # no negative rows
    assert estimate_memory(480, 512, 512, 3.5, 16, torch.float16) == base  # one window at a time, any length
    assert estimate_memory(8, 512, 512, 3.5, 16, torch.float16) * 2 == base  # a short video is one short window
    assert estimate_memory(48, 256, 512, 3.5, 16, torch.float16) * 2 == base
    assert estimate_memory(48, 512, 512, 3.5, 16, torch.float32) == 2 * base
    windows = len(uniform_context_windows(48, 16, 4))
    assert estimate_memory(48, 512, 512, 3.5, 16, torch.float16, window_batch=3) == 3 * base
    assert estimate_memory(48, 512, 512, 3.5, 16, torch.float16, window_batch=99) == windows * base
    # the MODEL path asks per call shape: the same figure for the same rows x frames
    assert activation_bytes(2, 16, 512, 512, torch.float16) == base
    assert activation_bytes(1, 1, 512, 512, torch.float16) * 32 == base  # a 1-frame video needs no windows


# ------------------------------------------------------------------------------------------------------------
# pose frames on demand: landmarks drawn window by window
# ------------------------------------------------------------------------------------------------------------
def _projected_landmarks(num_frames: int, width: int = 512, height: int = 512) -> Any:
    """A real projected face (golden ``projection``: 12 frames of 468 points at 512x512), ping-ponged to
    ``num_frames`` and scaled to a ``width x height`` frame, as :class:`~aniportrait_lib.data.Landmarks`."""
    from aniportrait_lib.data import Landmarks

    folder, _ = load_case("projection")
    base = np.load(folder / "projected.npy")
    loop = np.concatenate([base, base[-2:0:-1]], axis=0)
    points = np.concatenate([loop] * -(-num_frames // len(loop)), axis=0)[:num_frames]
    points = points * np.array([width / 512.0, height / 512.0])
    return Landmarks(points=np.ascontiguousarray(points), width=width, height=height)


@pytest.mark.parametrize("size", [(512, 512), (96, 80)], ids=["512x512", "96x80"])
def test_landmarks_give_the_latents_of_their_rendered_pose_images(pipeline_case: tuple[Path, dict], tiny_models: Any,
                                                                  size: tuple[int, int]) -> None:
    """Landmarks drawn per window by the sampler = every pose image rendered first, bit for bit (both resized
    from the landmarks' size to the case's 72x72); each frame is drawn once per window, one window at a time."""
    from aniportrait_lib.face.renderer import draw_pose_images
    from aniportrait_lib.sampling.pose_source import LandmarkPoseFrames

    folder, case = pipeline_case
    n_frames, steps = 20, 2
    ref_latent, clip_embeds, _ = _synthetic_inputs(case, folder, n_frames)
    landmarks = _projected_landmarks(n_frames, *size)
    rendered = draw_pose_images(landmarks.points, landmarks.width, landmarks.height)
    kwargs = dict(steps=steps, cfg=3.5, seed=9)
    a = _sample(tiny_models, ref_latent, clip_embeds, rendered, **kwargs)
    source = LandmarkPoseFrames(landmarks)
    b = _sample(tiny_models, ref_latent, clip_embeds, source, **kwargs)
    assert torch.equal(a, b), f"landmarks path differs: max err {_max_err(a, b)}"
    windows = uniform_context_windows(n_frames)
    assert source.rendered_frames == sum(len(w) for w in windows)  # once per window: features are cached
    assert source.max_batch <= 16, "the host held more than one window's pose frames"
    if size != (512, 512):
        return
    uncached = LandmarkPoseFrames(landmarks)
    c = _sample(tiny_models, ref_latent, clip_embeds, uncached, pose_cache_bytes=0, pose_cache_host_bytes=0, **kwargs)
    assert torch.equal(a, c)
    assert uncached.rendered_frames == steps * sum(len(w) for w in windows) and uncached.max_batch <= 16


def test_long_landmark_clip_renders_one_window_at_a_time(pipeline_case: tuple[Path, dict], tiny_models: Any) -> None:
    """A longer clip (100 frames, 9 windows): never more than one window (16 frames) drawn per call, each window
    drawn once; the host holds 16 frames instead of 100."""
    from aniportrait_lib.sampling.pose_source import LandmarkPoseFrames

    folder, case = pipeline_case
    n_frames = 100
    ref_latent, clip_embeds, _ = _synthetic_inputs(case, folder, n_frames)
    source = LandmarkPoseFrames(_projected_landmarks(n_frames, 72, 72))
    calls: list[int] = []
    draw = source.frames
    source.frames = lambda idx: (calls.append(len(idx)), draw(idx))[1]  # type: ignore[method-assign]
    _sample(tiny_models, ref_latent, clip_embeds, source, steps=1, cfg=1.0, seed=0)
    windows = uniform_context_windows(n_frames)
    assert calls == [len(w) for w in windows] and max(calls) == 16
    assert source.rendered_frames == sum(calls)


def test_pose_sources_hand_out_frames_by_index() -> None:
    from aniportrait_lib.data import Landmarks
    from aniportrait_lib.face.renderer import draw_pose_images
    from aniportrait_lib.sampling.pose_source import ArrayPoseFrames, LandmarkPoseFrames, as_pose_frames, pick_pose_input

    frames = np.random.default_rng(0).integers(0, 256, size=(5, 16, 24, 3), dtype=np.uint8)
    array = as_pose_frames(frames)
    assert isinstance(array, ArrayPoseFrames) and len(array) == array.num_frames == 5 and array.size == (16, 24)
    assert np.array_equal(array.frames(torch.tensor([3, 0, 4])), frames[[3, 0, 4]])
    assert np.array_equal(as_pose_frames(frames.astype(np.float32) / 255).frames([1]), frames[[1]])
    landmarks = _projected_landmarks(6, 96, 80)
    source = as_pose_frames(landmarks)
    assert isinstance(source, LandmarkPoseFrames) and as_pose_frames(source) is source
    assert (source.num_frames, source.size) == (6, (80, 96))
    got = source.frames([5, 1])
    assert got.dtype == np.uint8 and got.shape == (2, 80, 96, 3)
    assert np.array_equal(got, draw_pose_images(landmarks.points[[5, 1]], 96, 80))
    assert (source.rendered_frames, source.max_batch) == (2, 2)
    with pytest.raises(IndexError, match=r"pose frame indices must be in \[0, 6\), got 0..6"):
        source.frames([0, 6])
    with pytest.raises(ValueError, match="the landmarks input holds no frames"):
        LandmarkPoseFrames(Landmarks(points=np.zeros((0, 478, 2)), width=64, height=64))
    with pytest.raises(ValueError, match="has 5 points per frame; pose images need the 478 face-mesh landmarks"):
        LandmarkPoseFrames(Landmarks(points=np.zeros((3, 5, 2)), width=64, height=64))
    with pytest.raises(ValueError, match="the pose images input is empty"):
        ArrayPoseFrames(frames[:0])
    assert pick_pose_input(frames, None) is frames and pick_pose_input(None, landmarks) is landmarks
    with pytest.raises(ValueError, match=r"^connect either pose_images .* neither is connected\.$"):
        pick_pose_input(None, None)
    with pytest.raises(ValueError, match=r"^connect only one of pose_images and landmarks .* not both"):
        pick_pose_input(frames, landmarks)
