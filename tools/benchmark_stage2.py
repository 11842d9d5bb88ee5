"""Stage-2 (Lmk2Video) speed and memory with random weights: the library's sampler (``sampler.sample_video`` on an
``evaluation.Lmk2VideoModel``), no ComfyUI.

GPU, full size (the numbers in BENCHMARKS.md):
    python tools/benchmark_stage2.py --full-size --device cuda --dtype fp16 --size 512 --frames 48 --steps 25
CPU, small config:
    python tools/benchmark_stage2.py --device cpu --dtype fp32 --size 64 --frames 40 --steps 25
Sampler options side by side in one run (interleaved repeats, medians; before/after of an optimisation):
    python tools/benchmark_stage2.py --device cpu --dtype fp32 --size 72 --frames 48 --steps 10 \
        --compare kv-per-call kv-kept wb2 wb4 --repeats 3
  (kv-per-call: reference keys/values projected in every attention call, as before they were kept per run;
   kv-kept: the default; wbN: window_batch N with kept keys/values; channels-last: kv-kept with the networks'
   convolution weights in NHWC, for the GPU, where cuDNN may pick faster kernels for it; compiled: kv-kept with
   the video UNet's blocks through torch.compile (inductor), its warm-up round compiling)
Before/after of a code change (old code from git, not kept here): tools/benchmark_revisions.py.

Reports seconds per frame for the sampler (ReferenceNet once + steps x windows of PoseGuider + UNet),
the VAE decode (SD1.5 architecture, ComfyUI-style batches), and peak memory (CUDA allocator peak, or
process peak RSS on CPU).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import random_weights  # noqa: E402
from aniportrait_lib.networks import config, pose_guider, unet  # noqa: E402
from aniportrait_lib.sampling import context_windows, evaluation, sampler  # noqa: E402
from aniportrait_lib.sampling.evaluation import Lmk2VideoModel  # noqa: E402
from aniportrait_lib.networks.loading import PoseGuiderConfig  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                t.zero_()
            elif "norm" in name and name.endswith("weight") or name.endswith("running_var"):
                t.fill_(1.0)
            elif name.endswith("bias") or name.endswith("running_mean"):
                t.zero_()
            else:
                t.copy_((torch.randn(t.shape, generator=gen) * 0.02).to(t.dtype))
    return module


def build_models(full_size: bool, device: torch.device, dtype: torch.dtype) -> tuple[Lmk2VideoModel, int]:
    """The three networks with random weights as one model evaluation, and their cross-attention width."""
    cfg = config.sd15_unet_config()
    pg = PoseGuiderConfig() if full_size else PoseGuiderConfig(**random_weights.SMALL_POSE_GUIDER)
    if not full_size:
        cfg.update(random_weights.SMALL_UNET)
    ref = unet.build_reference_unet(cfg, device="meta", dtype=dtype).to_empty(device=device)
    vid = unet.build_video_unet(cfg, device="meta", dtype=dtype).to_empty(device=device)
    guide = pose_guider.build_pose_guider(pg.noise_latent_channels, pg.attention_heads, pg.attention_head_dim,
                                          device="meta", dtype=dtype).to_empty(device=device)
    for i, m in enumerate((ref, vid, guide)):
        _randomize_(m, i)
    return Lmk2VideoModel(ref, vid, guide), int(cfg["cross_attention_dim"])


def build_vae(device, dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return _randomize_(vae, 7).to(device=device, dtype=dtype).eval()


def pose_frames(n: int, size: int) -> np.ndarray:
    """Plausible sparse line images (the real ones are ~2 % non-zero pixels)."""
    rng = np.random.default_rng(0)
    frames = np.zeros((n, size, size, 3), np.uint8)
    for f in frames:
        ys = rng.integers(0, size, 40)
        xs = rng.integers(0, size, 40)
        f[ys, xs] = rng.integers(0, 255, (40, 3))
    return frames


@dataclass(frozen=True)
class Variant:
    """How a ``--compare`` variant runs the sampler."""

    keep_reference_kv: bool = True
    window_batch: int = 1
    channels_last: bool = False
    compile_backend: Optional[str] = None


def _variant(name: str) -> Variant:
    """The :class:`Variant` of a ``--compare`` name."""
    if name == "kv-per-call":
        return Variant(keep_reference_kv=False)
    if name == "kv-kept":
        return Variant()
    if name == "channels-last":
        return Variant(channels_last=True)
    if name == "compiled":
        return Variant(compile_backend="inductor")
    if name.startswith("wb") and name[2:].isdigit():
        return Variant(window_batch=int(name[2:]))
    raise SystemExit(f"unknown variant {name!r}: use kv-per-call, kv-kept, channels-last, compiled or wbN")


def _set_memory_format(model, channels_last: bool) -> None:
    """Convolution weights of the three networks in channels-last (NHWC) or the default layout; a convolution
    with channels-last weights returns channels-last activations, so the layout spreads through each ResNet."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for net in (model.reference_unet, model.video_unet, model.pose_guider):
        net.to(memory_format=fmt)


def compare_options(args, model, conditioning, device, dtype) -> None:
    """Time each variant ``--repeats`` times, interleaved (a noisy machine slows them alike); print medians,
    ratios to the first variant and the largest latent difference to it."""
    cuda = device.type == "cuda"
    kept_class = evaluation.ReferenceFeatures
    times: dict[str, list[float]] = {v: [] for v in args.compare}
    warm_up: dict[str, float] = {}
    latents: dict[str, torch.Tensor] = {}
    for rep in range(args.repeats + 1):  # round 0 warms up (and compiles)
        for name in args.compare:
            variant = _variant(name)
            # per call = the features as a plain list: the UNet then projects them in every attention call
            evaluation.ReferenceFeatures = kept_class if variant.keep_reference_kv else list
            _set_memory_format(model, variant.channels_last)
            try:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.inference_mode():
                    lat = sampler.sample_video(model, conditioning, steps=args.steps, cfg=args.cfg, seed=42,
                                               context_frames=16, context_overlap=4, dtype=dtype,
                                               window_batch=variant.window_batch,
                                               compile_backend=variant.compile_backend)
                if cuda:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
            finally:
                evaluation.ReferenceFeatures = kept_class
                _set_memory_format(model, False)
            if rep:
                times[name].append(elapsed)
            else:
                warm_up[name] = elapsed
            latents[name] = lat.float().cpu()
    first = args.compare[0]
    base = float(np.median(times[first]))
    print(f"{args.frames} frames {args.size}x{args.size}, {args.steps} steps, cfg {args.cfg}, {args.dtype}, "
          f"{'full size' if args.full_size else 'small config'}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'variant':>12} {'s/frame':>9} {'vs ' + first:>16} {'max |diff|':>11} {'warm-up s':>10}")
    for name in args.compare:
        med = float(np.median(times[name]))
        diff = float((latents[name] - latents[first]).abs().max())
        print(f"{name:>12} {med / args.frames:9.4f} {med / base:16.3f} {diff:11.2e} {warm_up[name]:10.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--save-latents", help="save the final latents of the timed run here (.npy)")
    ap.add_argument("--compare", nargs="+", metavar="VARIANT", help="kv-per-call, kv-kept, channels-last, compiled, wbN (window_batch N)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cuda = device.type == "cuda"

    t0 = time.perf_counter()
    model, context_dim = build_models(args.full_size, device, dtype)
    t_build = time.perf_counter() - t0
    weights_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    h = args.size // 8
    torch.manual_seed(0)  # the same inputs in every process (benchmark_revisions.py compares their latents)
    ref_latent = torch.randn(1, 4, h, h, device=device)
    clip = torch.randn(1, context_dim, device=device)
    poses = pose_frames(args.frames, args.size)
    conditioning = sampler.VideoConditioning.of_reference(ref_latent, clip, poses)
    windows = len(context_windows.uniform_context_windows(args.frames))

    def run(steps: int) -> tuple[float, torch.Tensor]:
        if cuda:
            torch.cuda.synchronize()
        s = time.perf_counter()
        with torch.inference_mode():
            lat = sampler.sample_video(model, conditioning, steps=steps, cfg=args.cfg, seed=42, context_frames=16,
                                       context_overlap=4, window_batch=1, compile_backend=None, dtype=dtype)
        if cuda:
            torch.cuda.synchronize()
        assert torch.isfinite(lat).all()
        return time.perf_counter() - s, lat

    if args.compare:
        compare_options(args, model, conditioning, device, dtype)
        return
    run(1)  # warm-up (kernels, allocator)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_sample, latents = run(args.steps)
    if args.save_latents:
        np.save(args.save_latents, latents.float().cpu().numpy())
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    res = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "full_size": args.full_size, "dtype": args.dtype, "size": args.size, "frames": args.frames,
        "steps": args.steps, "cfg": args.cfg, "context_windows": windows,
        "weights_GB": round(weights_gb, 3), "build_s": round(t_build, 2),
        "sampler_s": round(t_sample, 2), "sampler_s_per_frame": round(t_sample / args.frames, 3),
        "sampler_s_per_window_step": round(t_sample / (args.steps * windows), 4),
        "peak_GiB": round(peak, 2), "peak_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
    }
    if not args.skip_vae:
        vae = build_vae(device, dtype)
        lat = torch.randn(args.frames, 4, h, h, device=device, dtype=dtype)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        s = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, args.frames, 8):  # ComfyUI-style batches of 8, each brought back to the host
                vae.decode(lat[i:i + 8] / sampler.LATENT_SCALE).sample.float().cpu()
        if cuda:
            torch.cuda.synchronize()
        res["vae_decode_s_per_frame"] = round((time.perf_counter() - s) / args.frames, 4)
        if cuda:
            res["vae_decode_peak_GiB_batch8"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
