"""Run the pack's nodes in-process inside ComfyUI's model management on a CUDA machine (no server).

For a GPU box that has torch but not ComfyUI's web stack: unpacks the vendored ComfyUI tarball, imports
the pack the way ComfyUI does, and executes LoadAudioModels -> ... -> Lmk2VideoSampler -> core VAE
decode with random weights, reporting ComfyUI's device/dtype choices, time and peak VRAM.

    python scripts/gpu_node_smoke.py --comfy-tar comfyui.tar.gz --face face_dir [--full-size] [--seconds 3]

``face_dir`` holds ref_lmks3d.npy, ref_trans_mat.npy, ref_lmks_normed.npy (a MediaPipe result; face
detection itself is CPU-only and tested elsewhere).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy-tar", required=True)
    ap.add_argument("--face", required=True, type=Path)
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--json")
    ap.add_argument("--cpu", action="store_true", help="ComfyUI --cpu (for a dry run without a GPU)")
    args = ap.parse_args()
    cuda = not args.cpu

    work = Path(tempfile.mkdtemp())
    with tarfile.open(args.comfy_tar) as tar:
        tar.extractall(work)
    sys.path.insert(0, str(work / "ComfyUI"))
    if args.cpu:
        import comfy.options
        comfy.options.enable_args_parsing()
        sys.argv = [sys.argv[0], "--cpu"]
    import comfy.model_management as mm
    import comfy.sd
    import comfy.clip_vision
    import comfy.utils
    import folder_paths

    spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["aniportrait_pack"] = pack
    spec.loader.exec_module(pack)
    nodes = {n.__name__: n for n in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
    from aniportrait_pack.aniportrait_lib import random_weights
    from aniportrait_pack.aniportrait_lib.face.landmarker import ReferenceFace

    models = work / "models"
    folder_paths.add_model_folder_path("aniportrait", str(models / "aniportrait"))
    t = time.perf_counter()
    random_weights.save_audio_models(models / "aniportrait", full_size=args.full_size)
    files = random_weights.save_lmk2video_models(models / "aniportrait", full_size=args.full_size)
    vae_path = random_weights.save_sd_vae(work / "vae.safetensors")
    clip_path = random_weights.save_clip_vision_vitl(work / "clip.safetensors")
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "full_size": args.full_size,
              "make_weights_s": round(time.perf_counter() - t, 1), "comfy_torch_device": str(mm.get_torch_device())}

    lmks = np.load(args.face / "ref_lmks_normed.npy").astype(np.float64)
    face = ReferenceFace(landmarks=lmks, mesh_canonical=np.load(args.face / "ref_lmks3d.npy"),
                         transform=np.load(args.face / "ref_trans_mat.npy"), blendshapes=np.zeros(51),
                         blendshape_names=[f"bs{i}" for i in range(51)], image_size=(512, 512))
    sr = 44100
    tt = np.arange(int(args.seconds * sr)) / sr
    audio = {"waveform": torch.from_numpy((0.3 * np.sin(2 * np.pi * 200 * tt) * (1 + np.sin(2 * np.pi * 3 * tt))).astype(np.float32)).expand(2, -1)[None].clone(),
             "sample_rate": sr}
    ref_image = torch.rand(1, 512, 512, 3)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def peak() -> float:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0.0

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

    a2m, a2p = timed("load_audio_models", lambda: nodes["LoadAudioModels"].execute("audio2mesh.pt", "audio2pose.pt").args)
    feats = nodes["AudioFeatures"].execute(audio, 30.0).args[0]
    motion = timed("audio2mesh", lambda: nodes["Audio2Mesh"].execute(a2m, feats, face).args[0])
    motion = timed("audio2pose", lambda: nodes["Audio2Pose"].execute(a2p, feats, motion, 0, 7, 0.5).args[0])
    lmk = nodes["ProjectLandmarks"].execute(face, motion, args.size, args.size).args[0]
    poses = timed("render", lambda: nodes["RenderPoseImages"].execute(lmk).args[0])
    report["frames"] = int(poses.shape[0])
    bundle = timed("load_lmk2video", lambda: nodes["LoadLmk2VideoModels"].execute(
        files["reference_unet"].name, files["denoising_unet"].name, files["motion_module"].name, files["pose_guider"].name, "auto").args[0])
    report["lmk2video_dtype"] = str(bundle.dtype)
    report["audio_model_param_device_after_run"] = str(next(a2m.model.parameters()).device)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_path)))
    clip = comfy.clip_vision.load(str(clip_path))
    reset_peak()
    latent = timed("sampler", lambda: nodes["Lmk2VideoSampler"].execute(
        bundle, vae, clip, ref_image, poses, args.size, args.size, args.steps, 3.5, 42, 16, 4).args[0])
    report["sampler_peak_GiB"] = peak()
    report["loaded_models_after_sampler"] = [type(m.model.model).__name__ for m in mm.current_loaded_models]
    report["unet_param_device_dtype"] = [str(p.device) + "/" + str(p.dtype) for p in list(bundle.video_unet.parameters())[:1]]
    reset_peak()
    frames = timed("vae_decode", lambda: vae.decode(latent["samples"]))
    report["vae_decode_peak_GiB"] = peak()
    report["decoded"] = list(frames.shape)
    report["latent"] = list(latent["samples"].shape)
    report["finite"] = bool(torch.isfinite(frames).all())
    report["s_per_frame_sampler"] = round(report["sampler_s"] / report["frames"], 3)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
