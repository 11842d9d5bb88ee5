"""Run the pack's nodes in-process inside ComfyUI's model management on a CUDA machine (no server).

For a GPU box that has torch but not ComfyUI's web stack: unpacks the vendored ComfyUI tarball (or uses a
ComfyUI checkout), imports the pack the way ComfyUI does, runs stage 1 (LoadAudioModels -> AudioFeatures ->
Audio2Mesh -> Audio2Pose -> ProjectLandmarks [-> RenderPoseImages]) and then one or both stage-2 paths with
random weights, every node call inside ``torch.inference_mode()`` as ComfyUI's executor runs them:

* ``own``:    LoadVideoModel (MODEL) -> VideoConditioning -> AniPortrait Sampler (its own DDIM and context
  windows 16/4, cfg 3.5) -> AniPortrait Decode To Video
* ``native``: LoadVideoModel (MODEL) -> VideoConditioning [-> AniPortrait Context Windows 16/4 when > 16
  frames] -> core KSampler (``nodes.common_ksampler``, ddim/simple, cfg 3.5) -> AniPortrait Decode To Video

Both paths time the conditioning node (VAE and CLIP encode of the reference: ``*_conditioning_s``) apart from
the sampler. (Before the one-model change the own path's sampler node encoded the reference itself, so its
older ``own_sampler_s`` figures compare with ``own_conditioning_s + own_sampler_s``.)

It reports ComfyUI's device/dtype/VRAM-state choices and, per path (keys prefixed ``own_`` / ``native_``),
sampler seconds, seconds per frame and peak VRAM (``torch.cuda.max_memory_allocated`` after a reset right
before sampling; every model is unloaded between the two paths, so each starts from the same state), for the
first sampler call (weights still to be moved to the GPU, kernels cold) and for a second, warm call
(``*_sampler_rerun_s``, ``*_rerun_s_per_frame``, ``*_sampler_rerun_peak_GiB``: what queueing the workflow again
costs, comparable with the library figures of benchmark_stage2.py, which follow a warm-up; ``--no-rerun`` skips it).

The GPU measurements (512x512, 25 steps, 48 frames, full-size random weights; both paths; the first run writes
the weights to /tmp/ap_weights, the others reuse them):

    T=comfyui-0.3.64.tar.gz; W="--weights-dir /tmp/ap_weights --full-size --size 512 --steps 25 --frames 48"
    # normal VRAM mode
    python tools/gpu_node_smoke.py --comfy-tar $T $W --json normal.json
    # ComfyUI's low-VRAM mode (--lowvram)
    python tools/gpu_node_smoke.py --comfy-tar $T $W --lowvram --json lowvram.json
    # only 6 GB free for ComfyUI: --reserve-vram <free GB - 6> (e.g. --reserve-vram 133 on an idle 139 GiB H200),
    # or let the script take it from the free memory at start with --free-vram 6; normal and low-VRAM mode
    python tools/gpu_node_smoke.py --comfy-tar $T $W --free-vram 6 --json free6.json
    python tools/gpu_node_smoke.py --comfy-tar $T $W --free-vram 6 --lowvram --json free6_lowvram.json

Optimisations, same settings: ``--path own --window-batch 2`` (two context windows per UNet call) and
``--compile inductor`` (the sampler's compile input on the own path, AniPortrait Compile Model on the native
one; compile time = *_sampler_s minus *_sampler_compiled_s).

(``--comfy-dir path/to/ComfyUI`` instead of ``--comfy-tar`` uses an unpacked checkout; ``--size 512 --steps 25``
are the defaults; ``--path own|native|both``; ``--decode none`` skips decoding.) A CPU dry run, tiny weights:

    python tools/gpu_node_smoke.py --comfy-dir ~/.cache/aniportrait-ci/ComfyUI --cpu --size 64 --steps 2 --frames 20

``--face`` is a folder holding ref_lmks3d.npy, ref_trans_mat.npy, ref_lmks_normed.npy (a MediaPipe result; face
detection itself is CPU-only and tested elsewhere); default ``../shared/reference/golden/audio_stage1`` when it
exists, else ``--face synthetic``: a made-up face (same compute and memory: only the pose images' contents differ).
``--reserve-vram`` is ComfyUI's own flag (VRAM it leaves to other software); ComfyUI keeps its minimum inference
memory (0.8 GB) free on top of it.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FACE = REPO.parent / "shared" / "reference" / "golden" / "audio_stage1"
FPS = 30.0
CFG = 3.5
SEED = 42
CONTEXT_FRAMES, CONTEXT_OVERLAP = 16, 4


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--comfy-tar", help="the vendored ComfyUI tarball (ComfyUI/ prefix), unpacked to a temp folder")
    src.add_argument("--comfy-dir", type=Path, help="an unpacked ComfyUI checkout to import instead of the tarball")
    ap.add_argument("--face", type=Path, default=None,
                    help=f"folder with ref_lmks3d.npy, ref_trans_mat.npy, ref_lmks_normed.npy, or 'synthetic' "
                         f"(default {DEFAULT_FACE} when present, else synthetic)")
    ap.add_argument("--full-size", action="store_true", help="full-size random weights (the release architectures)")
    ap.add_argument("--seconds", type=float, default=3.0, help="audio length when --frames is not given")
    ap.add_argument("--frames", type=int, default=None,
                    help="video length in frames (default: what --seconds of audio gives at 30 fps)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--path", choices=("own", "native", "both"), default="both", help="which stage-2 path(s) to run")
    ap.add_argument("--poses", choices=("landmarks", "images"), default="landmarks",
                    help="feed the samplers ProjectLandmarks' landmarks (drawn per window) or RenderPoseImages' images")
    ap.add_argument("--decode", choices=("video", "core", "none"), default="video",
                    help="AniPortrait Decode To Video (mp4), core VAE decode of the whole batch, or no decode")
    ap.add_argument("--window-batch", type=int, default=1, help="the own sampler's window_batch (windows per UNet call)")
    ap.add_argument("--compile", choices=("none", "inductor", "cudagraphs"), default="none",
                    help="the own sampler's compile input / AniPortrait Compile Model on the native path (the first run "
                         "compiles: the report then has a second, compiled run as *_sampler_compiled_s)")
    ap.add_argument("--no-rerun", dest="rerun", action="store_false",
                    help="skip the second, warm sampler call (reported as *_sampler_rerun_s, *_rerun_s_per_frame)")
    ap.add_argument("--lowvram", action="store_true", help="ComfyUI --lowvram")
    vram = ap.add_mutually_exclusive_group()
    vram.add_argument("--reserve-vram", type=float, default=None, metavar="GB", help="ComfyUI --reserve-vram GB")
    vram.add_argument("--free-vram", type=float, default=None, metavar="GB",
                      help="--reserve-vram (free VRAM at start - GB): leave ComfyUI only GB of the GPU")
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="keep the random weights here (full/ or small/) and reuse them in later runs "
                         "(default: a temp folder, removed at the end)")
    ap.add_argument("--json", help="also write the report here")
    ap.add_argument("--cpu", action="store_true", help="ComfyUI --cpu (for a dry run without a GPU)")
    args = ap.parse_args()
    if args.frames is not None and args.frames < 1:
        ap.error("--frames must be at least 1")
    if args.size % 8:
        ap.error("--size must be a multiple of 8")
    if args.cpu and args.free_vram is not None:
        ap.error("--free-vram needs a GPU")
    return args


def import_comfy(args: argparse.Namespace, work: Path):
    """Put ComfyUI on sys.path and set its launch flags BEFORE comfy.model_management is imported."""
    if args.comfy_dir is not None:
        root = args.comfy_dir.expanduser().resolve()
    else:
        with tarfile.open(args.comfy_tar) as tar:
            tar.extractall(work)
        root = work / "ComfyUI"
    if not (root / "comfy").is_dir():
        sys.exit(f"no ComfyUI at {root}")
    sys.path.insert(0, str(root))
    if "comfy.model_management" in sys.modules:
        sys.exit("comfy.model_management was imported before its flags were set")
    from comfy.cli_args import args as comfy_args  # not parsed from sys.argv: these flags are the script's

    reserve = args.reserve_vram
    if args.free_vram is not None:
        free, _ = torch.cuda.mem_get_info()
        reserve = max(0.0, free / 2**30 - args.free_vram)
    comfy_args.cpu = args.cpu
    comfy_args.lowvram = args.lowvram
    comfy_args.reserve_vram = reserve
    import comfy.model_management as mm

    return root, mm, reserve


def synthetic_face(size: int = 512):
    """A face-sized half ellipsoid 45 cm in front of the camera (for when no MediaPipe result is at hand)."""
    from aniportrait_pack.aniportrait_lib.data import NUM_BLENDSHAPES, NUM_LANDMARKS, NUM_MESH_LANDMARKS, Face
    from aniportrait_pack.aniportrait_lib.face import pose_math

    rng = np.random.default_rng(0)
    theta = rng.uniform(0, 2 * np.pi, NUM_MESH_LANDMARKS)
    phi = rng.uniform(0, 0.45 * np.pi, NUM_MESH_LANDMARKS)
    mesh = np.stack([7 * np.sin(phi) * np.cos(theta), 9 * np.sin(phi) * np.sin(theta), 5 * np.cos(phi)], axis=1)
    transform = np.eye(4)
    transform[2, 3] = -45.0
    px = pose_math.project_points(mesh[None], transform, np.zeros((1, 6)), size, size)[0]
    lmks = np.zeros((NUM_LANDMARKS, 3))
    lmks[:NUM_MESH_LANDMARKS, :2] = px / size
    lmks[NUM_MESH_LANDMARKS:, :2] = lmks[:NUM_LANDMARKS - NUM_MESH_LANDMARKS, :2]  # iris points
    return Face(landmarks=lmks, mesh_canonical=mesh, transform=transform, blendshapes=np.zeros(NUM_BLENDSHAPES),
                blendshape_names=[f"bs{i}" for i in range(NUM_BLENDSHAPES)], image_size=(size, size))


def load_face(folder: Path | None):
    from aniportrait_pack.aniportrait_lib.data import NUM_BLENDSHAPES, Face

    if folder is None:
        folder = DEFAULT_FACE if (DEFAULT_FACE / "ref_lmks_normed.npy").is_file() else Path("synthetic")
    if str(folder) == "synthetic":
        return synthetic_face(), "synthetic"
    face = Face(landmarks=np.load(folder / "ref_lmks_normed.npy").astype(np.float64),
                mesh_canonical=np.load(folder / "ref_lmks3d.npy"), transform=np.load(folder / "ref_trans_mat.npy"),
                blendshapes=np.zeros(NUM_BLENDSHAPES), blendshape_names=[f"bs{i}" for i in range(NUM_BLENDSHAPES)],
                image_size=(512, 512))
    return face, str(folder)


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="aniportrait_gpu_smoke_"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # unpacked ComfyUI, temp weights (GBs at full size), the mp4s


def run(args: argparse.Namespace, work: Path) -> None:
    cuda = not args.cpu
    comfy_root, mm, reserve = import_comfy(args, work)
    import comfy.clip_vision
    import comfy.sd
    import comfy.utils
    import folder_paths
    import nodes as core_nodes

    models = work / "models"
    folder_paths.models_dir = str(models)
    folder_paths.set_output_directory(str(work / "output"))
    folder_paths.set_temp_directory(str(work / "temp"))

    spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["aniportrait_pack"] = pack
    spec.loader.exec_module(pack)
    nodes = {n.__name__: n for n in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the random-weights factory of the tests
    from support import random_weights
    from aniportrait_pack.aniportrait_lib.data import Motion
    from aniportrait_pack.aniportrait_lib.media import encode
    from aniportrait_pack.aniportrait_lib.networks.loading import RELEASED_FILES

    weights = models if args.weights_dir is None else args.weights_dir.expanduser().resolve() / ("full" if args.full_size else "small")
    folder_paths.add_model_folder_path("aniportrait", str(weights / "aniportrait"))
    t = time.perf_counter()
    lmk2video_names = [RELEASED_FILES[r] for r in ("reference_unet", "denoising_unet", "motion_module", "pose_guider")]
    vae_path, clip_path, done = weights / "vae.safetensors", weights / "clip.safetensors", weights / "complete"
    if not done.is_file():  # (a --weights-dir from an earlier run is reused)
        random_weights.save_audio_models(weights / "aniportrait", full_size=args.full_size)
        random_weights.save_lmk2video_models(weights / "aniportrait", full_size=args.full_size)
        random_weights.save_sd_vae(vae_path)
        random_weights.save_clip_vision_vitl(clip_path)
        done.write_text("random weights written by tools/gpu_node_smoke.py\n")
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
              "comfy_root": str(comfy_root), "full_size": args.full_size, "size": args.size, "steps": args.steps,
              "cfg": CFG, "paths": args.path, "poses": args.poses, "decode": args.decode,
              "lowvram": args.lowvram, "reserve_vram_GB": None if reserve is None else round(reserve, 2),
              "free_vram_GB": args.free_vram, "comfy_vram_state": mm.vram_state.name,
              "comfy_torch_device": str(mm.get_torch_device()),
              "weights": str(weights), "make_weights_s": round(time.perf_counter() - t, 1)}
    if cuda:
        free, total = torch.cuda.mem_get_info()
        report["gpu_total_GiB"], report["gpu_free_at_start_GiB"] = round(total / 2**30, 2), round(free / 2**30, 2)

    face, report["face"] = load_face(args.face)
    sr = 44100
    seconds = args.seconds if args.frames is None else args.frames / FPS + 0.1
    tt = np.arange(int(seconds * sr)) / sr
    audio = {"waveform": torch.from_numpy((0.3 * np.sin(2 * np.pi * 200 * tt) * (1 + np.sin(2 * np.pi * 3 * tt))).astype(np.float32)).expand(2, -1)[None].clone(),
             "sample_rate": sr}
    ref_image = torch.rand(1, 512, 512, 3, generator=torch.Generator().manual_seed(0))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def peak() -> float:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0.0

    def allocated() -> float:
        return round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else 0.0

    def reset_peak():
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def timed(name, fn):
        sync()
        s = time.perf_counter()
        out = fn()
        sync()
        report[f"{name}_s"] = round(time.perf_counter() - s, 2)
        return out

    def release():
        """Every model back to the offload device and the allocator's cache emptied: each path starts alike."""
        mm.unload_all_models()
        gc.collect()
        mm.soft_empty_cache(True)

    def loaded_models():
        return [f"{type(m.model.model).__name__} {m.model.loaded_size() / 2**20:.0f}/{m.model.model_size() / 2**20:.0f} MiB"
                for m in mm.current_loaded_models if m.model is not None]

    def decode(prefix, latent, vae):
        if args.decode == "none":
            return
        reset_peak()
        if args.decode == "video":
            video = timed(f"{prefix}_decode", lambda: nodes["DecodeToVideo"].execute(
                latent, vae, FPS, 16, "h264", 19, audio).args[0])
            width, height = video.get_dimensions()
            report[f"{prefix}_decoded"] = [round(video.get_duration() * FPS), height, width]
        else:
            # the native latent is one video (1, 4, F, h, w): core VAE Decode wants one latent per frame
            frames = timed(f"{prefix}_decode", lambda: vae.decode(encode.frame_latents(latent["samples"])))
            report[f"{prefix}_decoded"] = list(frames.shape)
            report[f"{prefix}_decoded_finite"] = bool(torch.isfinite(frames).all())
        report[f"{prefix}_decode_peak_GiB"] = peak()

    def sampled(prefix, latent, frames):
        samples = latent["samples"]
        report[f"{prefix}_latent"] = list(samples.shape)
        report[f"{prefix}_finite"] = bool(torch.isfinite(samples).all())
        seconds = report.get(f"{prefix}_sampler_compiled_s", report[f"{prefix}_sampler_s"])  # compiled: the 2nd run
        report[f"{prefix}_s_per_frame"] = round(seconds / frames, 3)
        report[f"{prefix}_loaded_models_after_sampler"] = loaded_models()

    def rerun(prefix, sample, frames):
        """The same sampler call again, as when a user queues the workflow a second time: weights already on the
        device, kernels loaded. The first call's time includes moving the weights and the device's first-use
        costs, which the library benchmark (benchmark_stage2.py, after a warm-up) leaves out."""
        if not args.rerun:
            return
        reset_peak()
        timed(f"{prefix}_sampler_rerun", sample)
        report[f"{prefix}_sampler_rerun_peak_GiB"] = peak()
        report[f"{prefix}_rerun_s_per_frame"] = round(report[f"{prefix}_sampler_rerun_s"] / frames, 3)

    def pose_input():
        return {"landmarks": lmk} if args.poses == "landmarks" else {"pose_images": poses}

    def load_and_condition(prefix, vae, clip):
        """Load Video Model, then Video Conditioning (both timed, the conditioning's peak recorded)."""
        model = timed(f"{prefix}_load", lambda: nodes["LoadVideoModel"].execute(*lmk2video_names, "auto").args[0])
        report[f"{prefix}_dtype"] = str(model.model.get_dtype())
        release()
        reset_peak()
        positive, negative, latent = timed(f"{prefix}_conditioning", lambda: nodes["VideoConditioning"].execute(
            vae=vae, clip_vision=clip, reference_image=ref_image, width=args.size, height=args.size,
            **pose_input()).args)
        report[f"{prefix}_conditioning_peak_GiB"] = peak()
        return model, positive, negative, latent

    def run_own(vae, clip, frames):
        model, positive, negative, empty = load_and_condition("own", vae, clip)
        report["own_vram_before_sampler_GiB"] = allocated()
        reset_peak()

        def sample():
            return nodes["Sampler"].execute(
                model, SEED, args.steps, CFG, positive, negative, empty, CONTEXT_FRAMES, CONTEXT_OVERLAP,
                window_batch=args.window_batch, compile="off" if args.compile == "none" else args.compile).args[0]

        latent = timed("own_sampler", sample)
        if args.compile != "none":  # the first run compiled: time a second one
            latent = timed("own_sampler_compiled", sample)
            report["own_compile"] = args.compile
        report["own_window_batch"] = args.window_batch
        report["own_sampler_peak_GiB"] = peak()
        if args.compile == "none":  # compiled: the second run above is the warm one
            rerun("own", sample, frames)
        sampled("own", latent, frames)
        video_unet = model.model.diffusion_model.video_unet
        report["own_unet_param_device_dtype"] = [f"{p.device}/{p.dtype}" for p in list(video_unet.parameters())[:1]]
        decode("own", latent, vae)

    def run_native(vae, clip, frames):
        model, positive, negative, latent = load_and_condition("native", vae, clip)
        if frames > CONTEXT_FRAMES:
            model = nodes["ContextWindows"].execute(model, CONTEXT_FRAMES, CONTEXT_OVERLAP).args[0]
        report["native_context_windows"] = frames > CONTEXT_FRAMES
        if args.compile != "none":
            model = nodes["CompileModel"].execute(model, args.compile).args[0]
            report["native_compile"] = args.compile
        report["native_vram_before_sampler_GiB"] = allocated()

        def sample():
            return core_nodes.common_ksampler(model, SEED, args.steps, CFG, "ddim", "simple", positive, negative,
                                              latent)[0]

        reset_peak()
        out = timed("native_sampler", sample)
        if args.compile != "none":  # the first run compiled: time a second one
            out = timed("native_sampler_compiled", sample)
        report["native_sampler_peak_GiB"] = peak()
        if args.compile == "none":  # compiled: the second run above is the warm one
            rerun("native", sample, frames)
        sampled("native", out, frames)
        decode("native", out, vae)

    # ComfyUI's executor runs every node inside inference mode; outside it core's CLIP vision encode (and
    # others) keep autograd state alive, which is not what a workflow measures.
    with torch.inference_mode():
        a2m, a2p = timed("load_audio_models", lambda: nodes["LoadAudioModels"].execute("audio2mesh.pt", "audio2pose.pt").args)
        feats = nodes["AudioFeatures"].execute(audio, FPS).args[0]
        motion = timed("audio2mesh", lambda: nodes["Audio2Mesh"].execute(a2m, feats, face).args[0])
        motion = timed("audio2pose", lambda: nodes["Audio2Pose"].execute(a2p, feats, motion, 0, 7, 0.5).args[0])
        report["audio_model_param_device_after_run"] = str(next(a2m.model.parameters()).device)
        if args.frames is not None:  # exactly --frames (the audio gives a frame or so more)
            idx = np.arange(args.frames) % motion.num_frames
            motion = Motion(motion.meshes[idx], motion.poses[idx], motion.fps)
        lmk = nodes["ProjectLandmarks"].execute(face, motion, args.size, args.size).args[0]
        poses = timed("render", lambda: nodes["RenderPoseImages"].execute(lmk).args[0]) if args.poses == "images" else None
        frames = lmk.num_frames
        report["frames"] = frames
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_path)))
        clip = comfy.clip_vision.load(str(clip_path))
        del a2m, a2p
        for name, run_path in (("own", run_own), ("native", run_native)):
            if args.path in (name, "both"):
                release()
                run_path(vae, clip, frames)
                release()
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
