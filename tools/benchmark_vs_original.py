"""Stage-2 sampler: this pack vs the ORIGINAL AniPortrait pipeline, side by side, same inputs, same random weights.

Four sides, each measurement in its own fresh worker process (so peak RSS is per run), interleaved:

* ``original``  - Zejun-Yang/AniPortrait at commit 7f6593f: its ``Pose2VideoPipeline`` (pipeline_pose2vid_long.py)
  with its UNet2DConditionModel / UNet3DConditionModel / PoseGuider, built and loaded the way
  ``scripts/audio2vid.py`` does, imported at run time from its own source folder, run by its own Python
  environment (``tools/setup_original_env.sh`` builds both; nothing of it is copied into this pack);
* ``ours-lib``  - ``aniportrait_lib.sampling.sampler.sample_video`` on an ``evaluation.Lmk2VideoModel`` of the
  networks from ``load_lmk2video_models`` (reference encoded with diffusers / transformers models);
* ``ours-node`` - the pack's own stage-2 nodes executed in-process inside the vendored ComfyUI's model
  management: ``LoadVideoModel`` (core ``MODEL``) -> ``VideoConditioning`` (core ``VAE`` / ``CLIP_VISION``) ->
  ``Sampler`` (AniPortrait Sampler), imported as tests/nodes and tools/gpu_node_smoke.py do it, executed inside
  ``torch.inference_mode()`` like ComfyUI's executor does; the sampling phase starts at the Sampler call;
* ``ours-ksampler`` - the native path: the pack's ``LoadVideoModel`` (the same files as a core ``MODEL``) ->
  ``VideoConditioning`` (same reference image and pose frames as ``ours-node``) -> above one window the pack's
  ``ContextWindows`` (the original's fixed windows through core's window handler, built once before the warm-up)
  -> core ``nodes.common_ksampler`` (ddim, simple; core's ``prepare_noise`` draws the same seed-42 noise of the
  (1, 4, F, h, w) latent), in-process like ``ours-node`` and under ``torch.inference_mode()``. The sampling phase
  starts at the KSampler call; the conditioning node's VAE / CLIP encodes are timed and subtracted. Its ratios are
  also given against ``ours-node`` (``time / ours-node``). Core steps in sigma space (zero-terminal-SNR
  sigma_max = 4518.8), so its latents differ from the own sampler's by float32 rounding (~1e-3 on the tiny
  random nets; tests/nodes/test_native_model.py).

Same weights: ``support.random_weights`` writes the four stage-2 files (release layout; tiny config
``SMALL_UNET`` / ``SMALL_POSE_GUIDER`` unless ``--full-size``), a random SD1.5 VAE and a random CLIP ViT-L/14 once
into a work folder; every side loads those files (the original through ``from_pretrained`` folders whose
weight files are links to them). Same inputs: one reference image, one pose video, one reference pose (written
once as .npy), seed 42, 25 steps, CFG 3.5, context 16 / overlap 4.

What is timed (wall clock, and the process's CPU time, steadier on a shared CPU box): the sampler = ReferenceNet
once + steps x windows of (PoseGuider +) denoising UNet. The reference VAE encode and CLIP encode are timed apart
and subtracted (the original's ``__call__`` and our conditioning node do them inside); the VAE decode is skipped
(the original's ``decode_latents`` is replaced at run time by a function that keeps the final latents). One warm-up
call (1 step, <= 16 frames) precedes the timed call in every worker.
Memory: on CPU the worker's peak RSS (``VmHWM`` before the first reset and after each phase: loading included; not
``ru_maxrss``, which Linux carries over from the parent process through fork + exec) and the peak RSS of the
sampling phase (``VmHWM`` reset through /proc/self/clear_refs where sampling starts, i.e. after the reference
encoders; also given minus the RSS at that point); on CUDA ``torch.cuda.max_memory_allocated`` of the sampling
phase and of the whole timed call. Every model (incl. VAE and CLIP) stays loaded on every side, so on CPU with the
tiny configs the peaks are mostly the CLIP ViT-L and VAE weights (ComfyUI keeps the CLIP file's fp16, the others
fp32).
Check: at the smallest frame count the final latents of all sides are compared (max abs diff, sampler scale = raw
VAE latents x 0.18215; the node and KSampler sides' raw latents are converted) so the timing compares the same
computation.

Usage (run with the pack's Python, e.g. ~/.cache/aniportrait-ci/venv/bin/python):

    bash tools/setup_original_env.sh --git-dir <AniPortrait git dir>      # once: source + its own venv
    # CPU, tiny configs (72x72: the original crashes at 64x64, train-mode BatchNorm on a 1x1 map), 1 thread:
    python tools/benchmark_vs_original.py --frames 16 48 160 --json /tmp/vs_original.json
    # GPU box, full-size models, fp16 (the original's weight_dtype), 512x512:
    python tools/benchmark_vs_original.py --full-size --device cuda --frames 16 48 160 --json /tmp/vs_gpu.json

    # control: the original's code on the SAME torch as ours (a second venv: tools/setup_original_env.sh --venv
    # ~/.cache/aniportrait-original/venv-torch2.13 --torch "torch==2.13.0"), to separate code from torch version:
    python tools/benchmark_vs_original.py --sides original ours-lib --frames 16 48 \\
        --original-python ~/.cache/aniportrait-original/venv-torch2.13/bin/python

On a GPU box
without ComfyUI's web stack pass ``--comfy-tar`` (a tarball whose top folder is ``ComfyUI/``, unpacked next to
``--comfyui``). The original's environment needs PyPI access to build (``setup_original_env.sh``); torch 2.0.1
(CUDA 11.7 wheels) may lack kernels for the newest GPUs: then build it with ``--torch`` and say so.

Options: ``--window-batch N`` (ours-lib / ours-node: windows per UNet call, default 1), ``--threads N`` (torch
threads on every side, default 1), ``--repeats N`` (runs per side and length,
default 1; order rotated per run), ``--size``, ``--steps``, ``--cfg``, ``--dtype``, ``--sides`` (subset),
``--original-python`` / ``--original-src`` (default ~/.cache/aniportrait-original/{venv/bin/python,src}),
``--original-in-our-venv`` (fallback: run the original's code with this Python), ``--original-site DIR`` (first on
the original worker's PYTHONPATH: its older diffusers/transformers, for a Python its pins have no wheels for), ``--comfyui DIR`` (a ComfyUI
checkout; default the vendored one in ~/.cache/aniportrait-ci/ComfyUI) or ``--comfy-tar TAR``, ``--work DIR``
(keep the weights/inputs there), ``--json PATH``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORIGINAL_COMMIT = "7f6593fd971c95b65f603c15ef8ce2c3fc7f5404"
ORIGINAL_HOME = Path(os.environ.get("ANIPORTRAIT_ORIGINAL_HOME", Path.home() / ".cache" / "aniportrait-original"))
SIDES = ("original", "ours-lib", "ours-node", "ours-ksampler")
LATENT_SCALE = 0.18215
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: the random SD VAE / CLIP ViT-L of support.random_weights, as diffusers / transformers configs
VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512,
    "layers_per_block": 2, "block_out_channels": [128, 256, 512, 512], "act_fn": "silu", "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
CLIP_CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model", "hidden_size": 1024,
    "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 224,
    "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "num_channels": 3, "torch_dtype": "float32",
}


# =============================================================================================== worker helpers
def _status_kb(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def _reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark (VmHWM); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Meter:
    """Times the timed call, its encoders (to subtract), and the memory peaks of the call and of its sampling phase.

    ``mark_sampling()`` is called where sampling starts inside the call (after the reference encoders): the peak
    from there on is the sampling-phase peak (CPU: VmHWM reset; CUDA: allocator peak reset).
    """

    def __init__(self, torch, device: str):
        self.torch, self.cuda = torch, device.startswith("cuda")
        self.encode = {"clip_s": 0.0, "vae_encode_s": 0.0}
        self.encode_cpu = dict.fromkeys(self.encode, 0.0)  # process CPU time of the encoders (all threads)
        self.mark = None

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def wrap(self, obj, name: str, key: str, keep=None, then=None):
        """Replace ``obj.name`` (instance attribute) with a timed call adding to ``self.encode[key]``."""
        inner = getattr(obj, name)

        def timed(*a, **k):
            self.sync()
            s, c = time.perf_counter(), time.process_time()
            out = inner(*a, **k)
            self.sync()
            self.encode[key] += time.perf_counter() - s
            self.encode_cpu[key] += time.process_time() - c
            if keep is not None:
                keep(out)
            if then is not None:
                then()
            return out

        setattr(obj, name, timed)

    def _memory(self) -> tuple[float, float]:
        """(current, peak since the last reset) in GiB: CUDA allocator, or process RSS."""
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**30, self.torch.cuda.max_memory_allocated() / 2**30
        return _status_kb("VmRSS") / 2**20, _status_kb("VmHWM") / 2**20

    def _reset(self) -> bool:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            return True
        return _reset_peak_rss()

    def mark_sampling(self) -> None:
        if self.measuring:
            self.sync()
            now, peak = self._memory()
            self.mark = (now, peak if self.reset_ok else None)
            self._reset()

    def measure(self, fn):
        import gc

        for k in self.encode:
            self.encode[k] = self.encode_cpu[k] = 0.0
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
        before, _ = self._memory()
        hwm_so_far = _status_kb("VmHWM") / 2**20  # this process's RSS peak since exec (loading, warm-up): no reset yet
        self.mark, self.measuring = None, True
        self.reset_ok = self._reset()
        self.sync()
        s, c = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        total, cpu = time.perf_counter() - s, time.process_time() - c
        self.measuring = False
        _, peak = self._memory()
        kind = "cuda_allocated" if self.cuda else "rss"
        res = {"call_s": total, **self.encode, "sampler_s": total - sum(self.encode.values()),
               # CPU seconds of the sampler (process CPU time minus the encoders'): on a shared CPU box far less
               # sensitive to other jobs than the wall clock (1 torch thread: about equal to it when idle)
               "sampler_cpu_s": cpu - sum(self.encode_cpu.values()),
               f"{kind}_before_call_GiB": before, "threads": self.torch.get_num_threads()}
        if self.reset_ok:
            res[f"{kind}_call_peak_GiB"] = max(peak, self.mark[1]) if self.mark and self.mark[1] else peak
            if self.mark:
                res[f"{kind}_sampling_peak_GiB"] = peak
                res[f"{kind}_sampling_extra_GiB"] = max(0.0, peak - self.mark[0])
        # process peak from VmHWM (per address space): ru_maxrss is NOT usable here, Linux carries the parent's peak
        # over fork/vfork + exec into the child's ru_maxrss (the orchestrator's weight generation, ~2.4 GB)
        rss_peaks = [hwm_so_far, _status_kb("VmHWM") / 2**20] + ([self.mark[1]] if not self.cuda and self.mark and self.mark[1] else [])
        res["process_peak_rss_GiB"] = max(rss_peaks) if hwm_so_far else None
        res["ru_maxrss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # includes the parent's
        if self.cuda:
            res["gpu"] = self.torch.cuda.get_device_name()
        return res, out

    measuring = False
    reset_ok = False


def _profile(spec: dict, torch, side: str, fn) -> list[str] | None:
    """With ``--profile``: one more call under torch.profiler (the timed call stays unprofiled); the operator
    table goes to ``profile_<side>_<frames>.txt`` in the work folder and its top rows into the result."""
    if not spec.get("profile"):
        return None
    activities = [torch.profiler.ProfilerActivity.CPU]
    if spec["device"].startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        fn()
    key = "self_cuda_time_total" if len(activities) > 1 else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30)
    by_shape = prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=60)
    (Path(spec["work"]) / f"profile_{side}_{spec['frames']}.txt").write_text(table + "\n\nby input shape:\n" + by_shape)
    return table.splitlines()[:18]


def _worker_torch(spec: dict):
    import torch

    torch.set_num_threads(spec["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


def _dtype(torch, name: str):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _inputs(spec: dict):
    import numpy as np

    work = Path(spec["work"])
    poses = np.load(work / "inputs" / "poses.npy", mmap_mode="r")[: spec["frames"]]
    return (np.load(work / "inputs" / "ref_image.npy"), np.ascontiguousarray(poses),
            np.load(work / "inputs" / "ref_pose.npy"))


def _versions(names) -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            pass
    return out


def _save_latents(spec: dict, name: str, array) -> None:
    import numpy as np

    if spec.get("save_dir"):
        np.save(Path(spec["save_dir"]) / f"{name}.npy", np.asarray(array, dtype=np.float32))


# =============================================================================================== worker: original
def worker_original(spec: dict) -> dict:
    """The original pipeline, loaded like scripts/audio2vid.py (cuda/fp16 -> spec device/dtype)."""
    src = spec["original_src"]
    sys.path.insert(0, src)
    torch = _worker_torch(spec)
    notes = []
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # pipeline_pose2vid_long.py imports torchvision.transforms but never uses it
        import importlib.machinery
        import types

        stub = types.ModuleType("torchvision")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)  # for find_spec() checks
        stub.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
        notes.append(f"torchvision not importable ({type(exc).__name__}): replaced by an empty stub module")
    import numpy as np
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf
    from PIL import Image
    from transformers import CLIPVisionModelWithProjection

    import src.models.pose_guider as pose_guider_module
    from src.models.pose_guider import PoseGuider
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d import UNet3DConditionModel
    from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline

    work, device = Path(spec["work"]), spec["device"]
    weight_dtype = _dtype(torch, spec["dtype"])
    orig = work / "original_layout"
    rss_imports = _status_kb("VmRSS") / 2**20
    t0 = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(str(orig / "sd-vae-ft-mse")).to(device, dtype=weight_dtype)
    reference_unet = UNet2DConditionModel.from_pretrained(str(orig / "stable-diffusion-v1-5"), subfolder="unet").to(
        dtype=weight_dtype, device=device)
    infer_config = OmegaConf.load(Path(src) / "configs" / "inference" / "inference_v2.yaml")
    denoising_unet = UNet3DConditionModel.from_pretrained_2d(
        str(orig / "stable-diffusion-v1-5"), str(work / "models" / "aniportrait" / "motion_module.pth"),
        subfolder="unet", unet_additional_kwargs=infer_config.unet_additional_kwargs,
    ).to(dtype=weight_dtype, device=device)
    pg = spec["pose_guider"]
    hard_coded = pose_guider_module.Transformer2DModel
    if (pg["attention_heads"], pg["attention_head_dim"]) != (16, 88):
        # the original hard-codes its four transformer blocks at 16 heads x 88; only that default is overridden
        class SizedTransformer2DModel(hard_coded):
            def __init__(self, *a, **k):
                k.setdefault("num_attention_heads", pg["attention_heads"])
                k.setdefault("attention_head_dim", pg["attention_head_dim"])
                super().__init__(*a, **k)

        pose_guider_module.Transformer2DModel = SizedTransformer2DModel
    try:
        pose_guider = PoseGuider(noise_latent_channels=pg["noise_latent_channels"], use_ca=True).to(
            device=device, dtype=weight_dtype)
    finally:
        pose_guider_module.Transformer2DModel = hard_coded
    image_enc = CLIPVisionModelWithProjection.from_pretrained(str(orig / "image_encoder")).to(
        dtype=weight_dtype, device=device)
    scheduler = DDIMScheduler(**OmegaConf.to_container(infer_config.noise_scheduler_kwargs))

    files = {r: work / "models" / "aniportrait" / f"{r}.pth" for r in
             ("denoising_unet", "reference_unet", "pose_guider", "motion_module")}
    den_sd = torch.load(files["denoising_unet"], map_location="cpu")
    missing, unexpected = denoising_unet.load_state_dict(den_sd, strict=False)
    reference_unet.load_state_dict(torch.load(files["reference_unet"], map_location="cpu"))
    pose_guider.load_state_dict(torch.load(files["pose_guider"], map_location="cpu"))
    # same weights: every tensor of the denoiser must now come from denoising_unet.pth / motion_module.pth
    mm_sd = torch.load(files["motion_module"], map_location="cpu")
    model_sd = denoising_unet.state_dict()
    not_from_files = [k for k in model_sd if k not in den_sd and k not in mm_sd]
    differing = [k for k, v in {**den_sd, **mm_sd}.items()
                 if k in model_sd and not torch.equal(model_sd[k].cpu(), v.to(model_sd[k].dtype))]
    weights_check = {"denoiser_keys_not_in_files": not_from_files[:5], "n_not_in_files": len(not_from_files),
                     "denoiser_tensors_differing_from_files": differing[:5], "unexpected_keys": list(unexpected)[:5]}
    del den_sd, mm_sd, model_sd

    pipe = Pose2VideoPipeline(vae=vae, image_encoder=image_enc, reference_unet=reference_unet,
                              denoising_unet=denoising_unet, pose_guider=pose_guider, scheduler=scheduler)
    pipe = pipe.to(device, dtype=weight_dtype)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    rss_loaded = _status_kb("VmRSS") / 2**20

    meter = Meter(torch, device)
    kept = {}
    meter.wrap(image_enc, "forward", "clip_s", lambda out: kept.__setitem__("clip", out.image_embeds))
    # __call__ order: CLIP encode, noise, VAE encode, pose preprocessing, denoising loop: sampling starts here
    meter.wrap(vae, "encode", "vae_encode_s", lambda out: kept.__setitem__("ref", out.latent_dist.mean * LATENT_SCALE),
               then=meter.mark_sampling)

    def keep_latents(latents):  # replaces decode_latents: no VAE decode, keep the final latents
        kept["latents"] = latents
        return np.zeros((latents.shape[0], 3, latents.shape[2], 1, 1), np.float32)

    pipe.decode_latents = keep_latents
    ref_image, poses, ref_pose = _inputs(spec)
    ref_pil = Image.fromarray(ref_image)
    pose_list = [poses[i] for i in range(len(poses))]

    def call(n: int, steps: int):
        generator = torch.manual_seed(spec["seed"])
        return pipe(ref_pil, pose_list[:n], ref_pose, spec["width"], spec["height"], n, steps, spec["cfg"],
                    generator=generator, context_frames=spec["context_frames"],
                    context_overlap=spec["context_overlap"])

    call(min(16, len(poses)), 1)  # warm-up
    res, _ = meter.measure(lambda: call(len(poses), spec["steps"]))
    res["profile_top"] = _profile(spec, torch, "original", lambda: call(len(poses), spec["steps"]))
    _save_latents(spec, "latents", kept["latents"].float().cpu().numpy())
    _save_latents(spec, "ref_latent", kept["ref"].float().cpu().numpy())
    _save_latents(spec, "clip_embeds", kept["clip"].float().cpu().numpy())
    res.update(load_s=load_s, rss_after_imports_GiB=rss_imports, rss_after_load_GiB=rss_loaded, weights_check=weights_check, torch_device=str(pipe.device),
               versions=_versions(["torch", "torchvision", "diffusers", "transformers", "huggingface_hub",
                                   "accelerate", "einops", "omegaconf", "numpy", "Pillow", "safetensors"]),
               code=f"Zejun-Yang/AniPortrait@{ORIGINAL_COMMIT} from {src}", notes=notes)
    return res


# =============================================================================================== worker: ours (library)
def worker_ours_lib(spec: dict) -> dict:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    torch = _worker_torch(spec)
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from aniportrait_lib.sampling import reference, sampler
    from aniportrait_lib.sampling.evaluation import Lmk2VideoModel
    from aniportrait_lib.networks.loading import RELEASED_FILES, load_lmk2video_models

    work, device = Path(spec["work"]), torch.device(spec["device"])
    dtype = _dtype(torch, spec["dtype"])
    rss_imports = _status_kb("VmRSS") / 2**20
    t0 = time.perf_counter()
    models = load_lmk2video_models({r: work / "models" / "aniportrait" / f for r, f in RELEASED_FILES.items()},
                                   device=device, dtype=dtype)
    model = Lmk2VideoModel(models.reference_unet, models.video_unet, models.pose_guider)
    orig = work / "original_layout"  # the same VAE / CLIP files, in the diffusers / transformers folder layout
    vae = AutoencoderKL.from_pretrained(str(orig / "sd-vae-ft-mse")).to(device, dtype=dtype).eval()
    clip = CLIPVisionModelWithProjection.from_pretrained(str(orig / "image_encoder")).to(device, dtype=dtype).eval()
    load_s = time.perf_counter() - t0
    rss_loaded = _status_kb("VmRSS") / 2**20
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def encode_vae(pixels):  # (1, H, W, 3) in [0, 1] -> raw latent mean
        x = pixels.to(device).permute(0, 3, 1, 2) * 2.0 - 1.0
        return vae.encode(x.to(dtype)).latent_dist.mean

    @torch.no_grad()
    def encode_clip(pixels):  # (1, 224, 224, 3) in [0, 1] -> image_embeds
        x = (pixels.to(device).permute(0, 3, 1, 2) - mean) / std
        return clip(pixel_values=x.to(dtype)).image_embeds

    ref_image, poses, _ = _inputs(spec)
    meter = Meter(torch, device.type)
    encoders = type("Encoders", (), {})()
    encoders.vae, encoders.clip = encode_vae, encode_clip
    meter.wrap(encoders, "vae", "vae_encode_s")
    meter.wrap(encoders, "clip", "clip_s")

    def call(n: int, steps: int):
        ref = reference.prepare_reference(ref_image, spec["width"], spec["height"], encode_vae=encoders.vae,
                                          encode_clip=encoders.clip,
                                          context_dim=models.config.unet["cross_attention_dim"])
        meter.mark_sampling()
        conditioning = sampler.VideoConditioning.of_reference(ref.latent.to(device), ref.clip_embeds.to(device),
                                                              poses[:n])
        lat = sampler.sample_video(model, conditioning, steps=steps, cfg=spec["cfg"], seed=spec["seed"],
                                   context_frames=spec["context_frames"], context_overlap=spec["context_overlap"],
                                   window_batch=spec.get("window_batch", 1), compile_backend=None, dtype=dtype)
        return lat, ref

    call(min(16, len(poses)), 1)  # warm-up
    res, (latents, ref) = meter.measure(lambda: call(len(poses), spec["steps"]))
    res["profile_top"] = _profile(spec, torch, "ours-lib", lambda: call(len(poses), spec["steps"]))
    _save_latents(spec, "latents", latents.float().cpu().numpy())
    _save_latents(spec, "ref_latent", ref.latent.float().cpu().numpy())
    _save_latents(spec, "clip_embeds", ref.clip_embeds.float().cpu().numpy())
    res.update(load_s=load_s, rss_after_imports_GiB=rss_imports, rss_after_load_GiB=rss_loaded,
               versions=_versions(["torch", "diffusers", "transformers", "numpy", "Pillow"]))
    return res


# =============================================================================================== worker: ours (node)
def _comfy_pack(spec: dict):
    """The vendored ComfyUI (CPU unless cuda) and this pack imported as a custom node package (as tests/nodes do).

    Returns (pack module, torch, ComfyUI root, RSS after the imports in GiB, seconds since the start).
    """
    import importlib.util

    comfy_root = Path(spec["comfyui"])
    if not (comfy_root / "comfy").is_dir() and spec.get("comfy_tar"):
        import tarfile

        with tarfile.open(spec["comfy_tar"]) as tar:
            tar.extractall(comfy_root.parent)
    sys.path.insert(0, str(comfy_root))
    from comfy.cli_args import args  # not parsed from our argv

    if not spec["device"].startswith("cuda"):
        args.cpu = True
    import folder_paths

    work = Path(spec["work"])
    folder_paths.models_dir = str(work / "models")
    folder_paths.set_output_directory(str(work / "comfy_output"))
    torch = _worker_torch(spec)
    t0 = time.perf_counter()
    pack_spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO / "__init__.py",
                                                       submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(pack_spec)
    sys.modules["aniportrait_pack"] = pack
    pack_spec.loader.exec_module(pack)
    import aniportrait_pack.nodes  # noqa: F401  (registers the model folders)
    import comfy.clip_vision  # noqa: F401  (imported here: counted in the RSS after imports)
    import comfy.model_management  # noqa: F401
    import comfy.sd  # noqa: F401
    import comfy.utils  # noqa: F401

    folder_paths.add_model_folder_path("aniportrait", str(work / "models" / "aniportrait"))
    rss_imports = _status_kb("VmRSS") / 2**20
    torch.set_num_threads(spec["threads"])  # again, after ComfyUI's imports
    return pack, torch, comfy_root, rss_imports, t0


def _comfy_encoders(work: Path):
    """Core VAE and CLIP_VISION from the same random files the other sides load."""
    import comfy.clip_vision
    import comfy.sd
    import comfy.utils

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(work / "models" / "vae" / "sd-vae-ft-mse.safetensors")))
    clip = comfy.clip_vision.load(str(work / "models" / "clip_vision" / "sd-image-variations-image-encoder.safetensors"))
    return vae, clip


def _lmk2video_names() -> list[str]:
    from aniportrait_pack.aniportrait_lib.networks.loading import RELEASED_FILES

    return [RELEASED_FILES[r] for r in ("reference_unet", "denoising_unet", "motion_module", "pose_guider")]


def _stage2_nodes_setup(spec: dict, pack, torch, t0: float) -> tuple:
    """What the node and KSampler sides share: the AniPortrait MODEL (LoadVideoModel, the spec's dtype on every side),
    core VAE / CLIP vision with their encodes metered, the inputs as core IMAGE (pose channels as stored), the load
    time and RSS after loading."""
    import comfy.model_management as mm

    model = pack.nodes.loaders.LoadVideoModel.execute(*_lmk2video_names(), spec["dtype"]).args[0]
    vae, clip = _comfy_encoders(Path(spec["work"]))
    load_s = time.perf_counter() - t0
    rss_loaded = _status_kb("VmRSS") / 2**20
    ref_image, poses, _ = _inputs(spec)
    ref = torch.from_numpy(ref_image)[None].float() / 255.0
    pose_images = torch.from_numpy(poses).float() / 255.0
    meter = Meter(torch, str(mm.get_torch_device()))
    meter.wrap(vae, "encode", "vae_encode_s")
    meter.wrap(clip, "encode_image", "clip_s")
    return model, vae, clip, ref, pose_images, poses, meter, load_s, rss_loaded


def worker_ours_node(spec: dict) -> dict:
    """The pack's own stage-2 path: LoadVideoModel (MODEL) -> VideoConditioning -> AniPortrait Sampler.

    The timed call runs VideoConditioning (its VAE / CLIP encodes are timed and subtracted, as on every side) and
    the Sampler node; the sampling phase starts at the Sampler call (which loads the weights through ComfyUI).
    """
    pack, torch, comfy_root, rss_imports, t0 = _comfy_pack(spec)
    import comfy.model_management as mm

    model, vae, clip, ref, pose_images, poses, meter, load_s, rss_loaded = _stage2_nodes_setup(spec, pack, torch, t0)
    sampling = pack.nodes.sampling

    def call(n: int, steps: int):
        with torch.inference_mode():  # as ComfyUI's executor runs every node (execution.py); without it core
            # CLIP_VISION.encode_image records autograd graphs (its weights require grad): +1.8 GB RSS per call here
            positive, negative, latent = sampling.VideoConditioning.execute(
                vae, clip, ref, spec["width"], spec["height"], pose_images=pose_images[:n]).args
            meter.mark_sampling()
            return sampling.Sampler.execute(model, spec["seed"], steps, spec["cfg"], positive, negative, latent,
                                            spec["context_frames"], spec["context_overlap"],
                                            window_batch=spec.get("window_batch", 1), compile="off")

    call(min(16, len(poses)), 1)  # warm-up
    res, out = meter.measure(lambda: call(len(poses), spec["steps"]))
    res["profile_top"] = _profile(spec, torch, "ours-node", lambda: call(len(poses), spec["steps"]))
    samples = out.args[0]["samples"].float().cpu()  # raw VAE latents (1, 4, F, h, w)
    _save_latents(spec, "latents", (samples * LATENT_SCALE).numpy())  # sampler scale (raw VAE latents x 0.18215)
    res.update(load_s=load_s, rss_after_imports_GiB=rss_imports, rss_after_load_GiB=rss_loaded,
               comfy_device=str(mm.get_torch_device()), model_dtype=str(model.model.get_dtype()),
               comfyui=str(comfy_root), versions=_versions(["torch", "diffusers", "transformers", "numpy"]))
    return res


# =============================================================================================== worker: ours (KSampler)
def worker_ours_ksampler(spec: dict) -> dict:
    """The native path: AniPortrait MODEL (LoadVideoModel) + VideoConditioning (+ AniPortrait ContextWindows above
    one window) through core ``nodes.common_ksampler`` (ddim / simple), as tests/nodes/test_native_model.py runs it.

    Core's ``prepare_noise`` draws ``torch.manual_seed(seed)`` noise of the (1, 4, F, h, w) latent: the same numbers
    as the other sides. The timed call runs VideoConditioning (its VAE / CLIP encodes are timed and subtracted,
    like the node side's) and the KSampler; the sampling phase starts at the KSampler call.
    """
    pack, torch, comfy_root, rss_imports, t0 = _comfy_pack(spec)
    import comfy.model_management as mm
    import nodes as core_nodes  # ComfyUI's nodes.py (KSampler's common_ksampler)

    model, vae, clip, ref, pose_images, poses, meter, load_s, rss_loaded = _stage2_nodes_setup(spec, pack, torch, t0)
    sampling = pack.nodes.sampling
    windowed = len(poses) > spec["context_frames"]
    if windowed:  # its own node in a workflow (a model clone with core's window handler): made once, not timed;
        # a no-op for the <= 16-frame warm-up (core's handler only windows latents longer than one window)
        model = sampling.ContextWindows.execute(model, spec["context_frames"], spec["context_overlap"]).args[0]

    def call(n: int, steps: int):
        with torch.inference_mode():  # as ComfyUI's executor runs every node
            positive, negative, latent = sampling.VideoConditioning.execute(
                vae, clip, ref, spec["width"], spec["height"], pose_images=pose_images[:n]).args
            meter.mark_sampling()
            return core_nodes.common_ksampler(model, spec["seed"], steps, spec["cfg"], "ddim", "simple",
                                              positive, negative, latent)[0]

    call(min(16, len(poses)), 1)  # warm-up
    res, out = meter.measure(lambda: call(len(poses), spec["steps"]))
    res["profile_top"] = _profile(spec, torch, "ours-ksampler", lambda: call(len(poses), spec["steps"]))
    samples = out["samples"].float().cpu()  # raw VAE latents (1, 4, F, h, w)
    _save_latents(spec, "latents", (samples * LATENT_SCALE).numpy())  # sampler scale (raw VAE latents x 0.18215)
    res.update(load_s=load_s, rss_after_imports_GiB=rss_imports, rss_after_load_GiB=rss_loaded,
               comfy_device=str(mm.get_torch_device()), model_dtype=str(model.model.get_dtype()),
               sampler="ddim/simple", context_windows="AniPortrait ContextWindows" if windowed else None,
               comfyui=str(comfy_root), versions=_versions(["torch", "diffusers", "transformers", "numpy"]))
    return res


WORKERS = {"original": worker_original, "ours-lib": worker_ours_lib, "ours-node": worker_ours_node,
           "ours-ksampler": worker_ours_ksampler}


# =============================================================================================== orchestrator
def prepare_work(work: Path, full_size: bool, size: tuple[int, int], max_frames: int) -> dict:
    """Random weights (release layout + diffusers/transformers folders linking to them) and the inputs."""
    import numpy as np
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    from support import random_weights
    from aniportrait_lib.networks import config

    models = work / "models"
    info_path = work / "weights.json"
    if not info_path.exists():
        random_weights.save_lmk2video_models(models / "aniportrait", seed=0, full_size=full_size)
        (models / "vae").mkdir(parents=True, exist_ok=True)
        (models / "clip_vision").mkdir(parents=True, exist_ok=True)
        random_weights.save_sd_vae(models / "vae" / "sd-vae-ft-mse.safetensors", seed=1)
        random_weights.save_clip_vision_vitl(models / "clip_vision" / "sd-image-variations-image-encoder.safetensors", seed=2)
        for f in (models / "vae" / "sd-vae-ft-mse.safetensors",
                  models / "clip_vision" / "sd-image-variations-image-encoder.safetensors"):
            _add_format_metadata(f)  # transformers 4.30 refuses safetensors without {"format": "pt"}
        cfg = config.sd15_unet_config()
        if not full_size:
            cfg.update(random_weights.SMALL_UNET)
        pg = {"noise_latent_channels": 320, "attention_heads": 16, "attention_head_dim": 88}
        if not full_size:
            pg = dict(random_weights.SMALL_POSE_GUIDER)
        # the original's from_pretrained folders: config.json + a link to the same weight file
        base = work / "original_layout" / "stable-diffusion-v1-5" / "unet"
        base.mkdir(parents=True, exist_ok=True)
        (base / "config.json").write_text(json.dumps(cfg, indent=1))
        _link(models / "aniportrait" / "reference_unet.pth", base / "diffusion_pytorch_model.bin")
        vae_dir = work / "original_layout" / "sd-vae-ft-mse"
        vae_dir.mkdir(parents=True, exist_ok=True)
        (vae_dir / "config.json").write_text(json.dumps(VAE_CONFIG, indent=1))
        _link(models / "vae" / "sd-vae-ft-mse.safetensors", vae_dir / "diffusion_pytorch_model.safetensors")
        enc_dir = work / "original_layout" / "image_encoder"
        enc_dir.mkdir(parents=True, exist_ok=True)
        (enc_dir / "config.json").write_text(json.dumps(CLIP_CONFIG, indent=1))
        _link(models / "clip_vision" / "sd-image-variations-image-encoder.safetensors", enc_dir / "model.safetensors")
        info_path.write_text(json.dumps({"full_size": full_size, "unet_config": cfg, "pose_guider": pg}, indent=1))
    info = json.loads(info_path.read_text())
    if info["full_size"] != full_size:
        raise SystemExit(f"{work} holds weights for full_size={info['full_size']}; use another --work")

    w, h = size
    inputs = work / "inputs"
    inputs.mkdir(exist_ok=True)
    stamp = inputs / f"{w}x{h}x{max_frames}.stamp"
    if not stamp.exists():
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        photo = np.stack([0.5 + 0.4 * np.sin(6 * xx + 1), 0.5 + 0.4 * np.cos(5 * yy), 0.5 + 0.3 * np.sin(4 * (xx + yy))], -1)
        photo = (photo * 255 + rng.normal(0, 8, photo.shape)).clip(0, 255).astype(np.uint8)
        np.save(inputs / "ref_image.npy", photo)
        frames = np.zeros((max_frames, h, w, 3), np.uint8)
        centre = rng.uniform(0.3, 0.7, (24, 2))
        for f in range(max_frames):  # a face-like set of coloured polylines that moves a little per frame
            img = Image.new("RGB", (w, h))
            draw = ImageDraw.Draw(img)
            shift = 0.03 * np.array([np.sin(f / 7), np.cos(f / 11)])
            for k in range(0, 24, 3):
                pts = [tuple(((centre[k + j] + shift) * [w, h]).tolist()) for j in range(3)]
                draw.line(pts, fill=tuple(int(c) for c in rng.integers(60, 256, 3)), width=2)
            frames[f] = np.asarray(img)
        np.save(inputs / "poses.npy", frames)
        ref_pose = np.asarray(frames[0]).copy()
        np.save(inputs / "ref_pose.npy", ref_pose)
        stamp.write_text("ok")
    return info


def _add_format_metadata(path: Path) -> None:
    """Re-save a safetensors file with ``{"format": "pt"}`` metadata (same tensors; every loader reads it)."""
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata={"format": "pt"})


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def run_worker(side: str, spec: dict, python: str, timeout: float) -> dict:
    work = Path(spec["work"])
    spec_path = work / f"spec_{side}_{spec['frames']}_{spec['rep']}.json"
    out_path = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    if out_path.exists():
        out_path.unlink()
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               PYTHONNOUSERSITE="1", HF_HOME=str(work / "hf_home"), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DIFFUSERS_VERBOSITY="error", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    if side == "original" and spec.get("original_site"):  # its older diffusers/transformers shadow ours
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [spec["original_site"], os.environ.get("PYTHONPATH")]))
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--spec", str(spec_path), "--out", str(out_path)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(work), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not out_path.exists():
        tail = (proc.stdout + proc.stderr)[-4000:]
        return {"side": side, "frames": spec["frames"], "rep": spec["rep"], "error": f"exit {proc.returncode}", "log_tail": tail}
    res = json.loads(out_path.read_text())
    res.update(side=side, frames=spec["frames"], rep=spec["rep"], worker_wall_s=wall)
    return res


def _max_abs(a, b) -> float | None:
    import numpy as np

    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def compare_latents(save_root: Path, sides) -> dict:
    import numpy as np

    def load(side, name):
        p = save_root / side / f"{name}.npy"
        return np.load(p) if p.exists() else None

    out = {}
    lat = {s: load(s, "latents") for s in sides}
    ref = lat.get("original")
    out["original_latent_abs_max"] = float(np.abs(ref).max()) if ref is not None else None
    if lat.get("ours-lib") is not None:
        out["ours-lib_latent_abs_max"] = float(np.abs(lat["ours-lib"]).max())
    for a, b in (("ours-lib", "original"), ("ours-node", "original"), ("ours-node", "ours-lib"),
                 ("ours-ksampler", "ours-lib"), ("ours-ksampler", "ours-node"), ("ours-ksampler", "original")):
        if a in sides and b in sides:
            out[f"latents_max_abs_diff_{a}_vs_{b}"] = _max_abs(lat[a], lat[b])
    if "ours-lib" in sides and "original" in sides:
        out["ref_latent_max_abs_diff_ours-lib_vs_original"] = _max_abs(load("ours-lib", "ref_latent"), load("original", "ref_latent"))
        out["clip_embeds_max_abs_diff_ours-lib_vs_original"] = _max_abs(load("ours-lib", "clip_embeds"), load("original", "clip_embeds"))
    return out


def _metrics(cuda: bool) -> list[tuple[str, str, int, bool]]:
    """(result key, column title, decimals, with ratio) of the memory columns."""
    if cuda:
        return [("cuda_allocated_sampling_peak_GiB", "peak VRAM sampling GiB", 2, True),
                ("cuda_allocated_call_peak_GiB", "peak VRAM call GiB", 2, True),
                ("process_peak_rss_GiB", "process peak RSS GiB", 2, False)]
    return [("process_peak_rss_GiB", "process peak RSS GiB", 2, True),
            ("rss_sampling_peak_GiB", "peak RSS sampling GiB", 2, True),
            ("rss_sampling_extra_GiB", "sampling peak - RSS at its start GiB", 3, False)]


def summarize(runs: list[dict], frames_list, sides, cuda: bool) -> list[dict]:
    """Per frame count and side: medians over repeats, and ours/original ratios."""
    rows = []
    for f in frames_list:
        by = {}
        for side in sides:
            ok = [r for r in runs if r["side"] == side and r["frames"] == f and "error" not in r]
            if not ok:
                continue
            row = {"frames": f, "side": side, "n": len(ok),
                   "sampler_s": statistics.median(r["sampler_s"] for r in ok),
                   "encoders_s": statistics.median(r["clip_s"] + r["vae_encode_s"] for r in ok)}
            row["s_per_frame"] = row["sampler_s"] / f
            cpu = [r["sampler_cpu_s"] for r in ok if r.get("sampler_cpu_s") is not None]
            row["cpu_s_per_frame"] = statistics.median(cpu) / f if cpu else None
            for key, _, _, _ in _metrics(cuda):
                vals = [r[key] for r in ok if r.get(key) is not None]
                row[key] = statistics.median(vals) if vals else None
            by[side] = row
        for side, row in by.items():
            for base_side, others in (("original", None), ("ours-node", ("ours-ksampler",))):
                base = by.get(base_side)
                if not base or side == base_side or (others and side not in others):
                    continue
                row[f"time_ratio_vs_{base_side}"] = row["s_per_frame"] / base["s_per_frame"]
                if row.get("cpu_s_per_frame") and base.get("cpu_s_per_frame"):
                    row[f"cpu_ratio_vs_{base_side}"] = row["cpu_s_per_frame"] / base["cpu_s_per_frame"]
                for key, _, _, ratio in _metrics(cuda):
                    if ratio and row.get(key) and base.get(key):
                        row[f"{key}_ratio_vs_{base_side}"] = row[key] / base[key]
            rows.append(row)
    return rows


def print_table(rows: list[dict], cuda: bool) -> str:
    """Markdown table; ``/ours-node`` columns (the KSampler side against the node) when both sides ran."""
    vs_node = any("time_ratio_vs_ours-node" in r for r in rows)
    head = ["frames", "side", "sampler s", "s/frame", "ours/original time"] + (["time / ours-node"] if vs_node else [])
    head += ["CPU s/frame", "ours/original CPU"] + (["CPU / ours-node"] if vs_node else [])
    for _, title, _, ratio in _metrics(cuda):
        head += [title] + (["ours/original"] if ratio else []) + (["/ ours-node"] if ratio and vs_node else [])
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" if h == "side" else "---:" for h in head) + " |"]

    def fmt(x, p=3):
        return "" if x is None else f"{x:.{p}f}"

    for r in rows:
        cells = [str(r["frames"]), r["side"], fmt(r["sampler_s"], 2), fmt(r["s_per_frame"]),
                 fmt(r.get("time_ratio_vs_original"), 2)]
        if vs_node:
            cells.append(fmt(r.get("time_ratio_vs_ours-node"), 2))
        cells += [fmt(r.get("cpu_s_per_frame")), fmt(r.get("cpu_ratio_vs_original"), 2)]
        if vs_node:
            cells.append(fmt(r.get("cpu_ratio_vs_ours-node"), 2))
        for key, _, p, ratio in _metrics(cuda):
            cells.append(fmt(r.get(key), p))
            if ratio:
                cells.append(fmt(r.get(f"{key}_ratio_vs_original"), 2))
                if vs_node:
                    cells.append(fmt(r.get(f"{key}_ratio_vs_ours-node"), 2))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 48, 160])
    ap.add_argument("--full-size", action="store_true", help="released architecture (random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default fp16 on cuda, fp32 on cpu")
    ap.add_argument("--size", type=int, help="width = height (default 72 on CPU, 512 with --full-size)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--context-frames", type=int, default=16)
    ap.add_argument("--context-overlap", type=int, default=4)
    ap.add_argument("--window-batch", type=int, default=1,
                    help="ours-lib / ours-node: context windows per UNet call (the original has no such option)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on every side (default 1)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    ap.add_argument("--original-python", default=str(ORIGINAL_HOME / "venv" / "bin" / "python"))
    ap.add_argument("--original-src", default=str(ORIGINAL_HOME / "src"))
    ap.add_argument("--original-in-our-venv", action="store_true",
                    help="fallback: run the original's code with this Python instead of its own venv")
    ap.add_argument("--original-site",
                    help="a folder put first on the original worker's PYTHONPATH (pip install --target) holding the "
                         "older packages its code needs when it runs on another Python (GPU box: see "
                         "tools/device_session.sh)")
    ap.add_argument("--comfyui", default=str(Path(os.environ.get("ANIPORTRAIT_COMFYUI_DIR", Path.home() / ".cache" / "aniportrait-ci")) / "ComfyUI"))
    ap.add_argument("--comfy-tar", help="a ComfyUI tarball to unpack when --comfyui does not exist (GPU box)")
    ap.add_argument("--work", help="folder for weights/inputs/latents (default: a new temp folder)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
    ap.add_argument("--json", help="write every run, the summary and the latent check here")
    ap.add_argument("--profile", action="store_true",
                    help="after each timed call, one more under torch.profiler: operator tables in the work folder")
    args = ap.parse_args()

    if args.worker:  # ---------------------------------------------------------------- worker process
        spec = json.loads(Path(args.spec).read_text())
        res = WORKERS[args.worker](spec)
        Path(args.out).write_text(json.dumps(res))
        return

    cuda = args.device.startswith("cuda")
    dtype = args.dtype or ("fp16" if cuda else "fp32")
    size = args.size or (512 if args.full_size else 72)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aniportrait-vs-original-"))
    work.mkdir(parents=True, exist_ok=True)
    args.original_src = str(Path(args.original_src).expanduser().resolve())  # the workers run in the work folder
    orig_python = sys.executable if args.original_in_our_venv else args.original_python
    if "original" in args.sides:
        if not (Path(args.original_src) / "src" / "pipelines" / "pipeline_pose2vid_long.py").is_file():
            raise SystemExit(f"the original's source is not at {args.original_src}: run tools/setup_original_env.sh")
        if not Path(orig_python).exists():
            raise SystemExit(f"{orig_python} not found: run tools/setup_original_env.sh or pass --original-in-our-venv")
    t = time.perf_counter()
    info = prepare_work(work, args.full_size, (size, size), max(args.frames))
    print(f"work folder {work} (weights + inputs ready in {time.perf_counter() - t:.1f} s)", flush=True)
    orig_versions_file = Path(orig_python).parent.parent / "VERSIONS.txt"
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "host": platform.node(), "cpu_count": os.cpu_count(),
        "device": args.device, "dtype": dtype, "full_size": args.full_size, "size": size, "steps": args.steps,
        "cfg": args.cfg, "seed": args.seed, "context": [args.context_frames, args.context_overlap],
        "threads": args.threads, "repeats": args.repeats, "frames": args.frames, "sides": args.sides,
        "unet_config": {k: info["unet_config"][k] for k in ("block_out_channels", "layers_per_block",
                                                             "cross_attention_dim", "attention_head_dim", "norm_num_groups")},
        "pose_guider": info["pose_guider"], "original_commit": ORIGINAL_COMMIT, "original_python": orig_python,
        "original_env_versions": orig_versions_file.read_text().strip() if orig_versions_file.exists() else None,
        "original_in_our_venv": args.original_in_our_venv, "original_site": args.original_site,
    }
    print(json.dumps(meta, indent=1), flush=True)

    check_frames = min(args.frames)
    runs = []
    order = list(args.sides)
    for fi, frames in enumerate(args.frames):
        for rep in range(args.repeats):
            k = (fi * args.repeats + rep) % len(order)
            for side in order[k:] + order[:k]:  # rotate the order so background noise hits every side
                save = work / "latents" / side if (frames == check_frames and rep == 0) else None
                if save:
                    save.mkdir(parents=True, exist_ok=True)
                spec = {"work": str(work), "frames": frames, "rep": rep, "width": size, "height": size,
                        "steps": args.steps, "cfg": args.cfg, "seed": args.seed, "device": args.device, "dtype": dtype,
                        "context_frames": args.context_frames, "context_overlap": args.context_overlap,
                        "window_batch": args.window_batch, "profile": args.profile,
                        "threads": args.threads, "pose_guider": info["pose_guider"], "original_src": args.original_src,
                        "original_site": str(Path(args.original_site).resolve()) if args.original_site else None,
                        "comfyui": args.comfyui, "comfy_tar": args.comfy_tar,
                        "save_dir": str(save) if save else None}
                python = orig_python if side == "original" else sys.executable
                res = run_worker(side, spec, python, args.timeout)
                runs.append(res)
                if "error" in res:
                    print(f"[{side:9s} F={frames:4d} rep {rep}] FAILED {res['error']}\n{res['log_tail']}", flush=True)
                else:
                    mem = ", ".join(f"{title} {res[key]:.3f}" for key, title, _, _ in _metrics(cuda)
                                    if res.get(key) is not None)
                    print(f"[{side:9s} F={frames:4d} rep {rep}] sampler {res['sampler_s']:.2f} s = "
                          f"{res['sampler_s'] / frames:.3f} s/frame, CPU {res['sampler_cpu_s'] / frames:.3f} s/frame (encoders {res['clip_s'] + res['vae_encode_s']:.2f} s, "
                          f"load {res['load_s']:.1f} s, worker {res['worker_wall_s']:.0f} s); {mem}", flush=True)
    latent_check = compare_latents(work / "latents", args.sides)
    latent_check["frames"] = check_frames
    rows = summarize(runs, args.frames, args.sides, cuda)
    print()
    table = print_table(rows, cuda)
    print("\nlatent check at", check_frames, "frames:", json.dumps(latent_check, indent=1))
    versions = {r["side"]: r.get("versions") for r in runs if "versions" in r}
    print("versions:", json.dumps(versions, indent=1))
    weights = next((r["weights_check"] for r in runs if "weights_check" in r), None)
    if weights:
        print("original denoiser weights check:", json.dumps(weights))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "versions": versions, "runs": runs, "summary": rows,
                                               "table_markdown": table, "latent_check": latent_check,
                                               "original_weights_check": weights}, indent=1))
        print("wrote", args.json)


if __name__ == "__main__":
    main()
