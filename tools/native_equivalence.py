"""The AniPortrait MODEL on core samplers vs the pack's own sampler: max abs latent difference.

Runs in-process on the vendored ComfyUI (CPU), tiny random weights in the release layout, 64x64 (``--size``):
AniPortrait Sampler (the pack's own DDIM, trailing spacing, the original's windows) and core KSampler on the
same AniPortrait MODEL with each sampler x scheduler, for each frame count; clips longer than 16 frames get
context windows on the MODEL (AniPortrait Context Windows = the original's fixed windows, and core Context
Windows (Manual), looped_uniform 16/4, closed loop, flat, dim 2). Same conditioning (one AniPortrait Video
Conditioning), same seed: both draw the same noise for the video latent (1, 4, F, h, w), which the tool checks.
Differences are in sampler scale (raw VAE latents x 0.18215, the space the networks see).

    python tools/native_equivalence.py [--frames 16 40] [--steps 4] [--size 64]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the tests' random-weights factory imports aniportrait_lib
LATENT_SCALE = 0.18215
COMBOS = [("ddim", "simple"), ("euler", "simple"), ("dpmpp_2m", "simple"), ("ddim", "ddim_uniform"), ("ddim", "beta")]


def import_pack(work: Path):
    """The vendored ComfyUI on the CPU and this pack imported as ComfyUI imports a custom node."""
    from support.comfy_server import comfy_dir

    root = comfy_dir() / "ComfyUI"
    sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    import folder_paths

    folder_paths.models_dir = str(work / "models")
    spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["aniportrait_pack"] = pack
    spec.loader.exec_module(pack)
    import aniportrait_pack.nodes  # noqa: F401
    return pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 40])
    ap.add_argument("--steps", type=int, default=4, help="a divisor of 1000 (see the README)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="aniportrait_equiv_"))
    pack = import_pack(work)
    import comfy.clip_vision
    import comfy.sample
    import comfy.sd
    import comfy.utils
    import nodes as core_nodes
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    from support import random_weights
    from aniportrait_pack.aniportrait_lib.sampling import sampler
    from aniportrait_pack.aniportrait_lib.networks.loading import RELEASED_FILES

    folder = work / "models"
    random_weights.save_lmk2video_models(folder / "aniportrait", seed=0)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(random_weights.save_sd_vae(folder / "vae.safetensors"))))
    clip = comfy.clip_vision.load(str(random_weights.save_clip_vision_vitl(folder / "clip.safetensors")))
    names = [RELEASED_FILES[r] for r in ("reference_unet", "denoising_unet", "motion_module", "pose_guider")]
    with torch.inference_mode():
        model = pack.nodes.loaders.LoadVideoModel.execute(*names, "auto").args[0]
        rows = []
        for frames in args.frames:
            gen = torch.Generator().manual_seed(1)
            ref = torch.rand(1, args.size, args.size, 3, generator=gen)
            poses = torch.rand(frames, args.size, args.size, 3, generator=gen)
            positive, negative, latent = pack.nodes.sampling.VideoConditioning.execute(
                vae=vae, clip_vision=clip, reference_image=ref, pose_images=poses, width=args.size, height=args.size).args
            core_noise = comfy.sample.prepare_noise(latent["samples"], args.seed)
            own_noise = sampler.make_noise(latent["samples"].shape, args.seed)
            if not torch.equal(core_noise, own_noise):
                raise RuntimeError("core KSampler and AniPortrait Sampler draw different noise for the same seed")
            own_latent = pack.nodes.sampling.Sampler.execute(
                model, args.seed, args.steps, 3.5, positive, negative, latent, 16, 4, 1, "off").args[0]["samples"]
            rows.append((frames, "AniPortrait Sampler", "-", 0.0))
            windows = {"none": model} if frames <= 16 else {
                "AniPortrait Context Windows": pack.nodes.sampling.ContextWindows.execute(model, 16, 4).args[0],
                "core Context Windows (Manual)": ContextWindowsManualNode.execute(model, 16, 4, "looped_uniform", 1, True, "flat", 2).args[0],
            }
            for window_name, windowed in windows.items():
                for sampler_name, scheduler in COMBOS:
                    out = core_nodes.common_ksampler(windowed, args.seed, args.steps, 3.5, sampler_name, scheduler,
                                                     positive, negative, latent)[0]["samples"]
                    diff = float((out - own_latent).abs().max()) * LATENT_SCALE
                    rows.append((frames, f"KSampler {sampler_name}/{scheduler}", window_name, diff))
                    print(rows[-1], flush=True)
    print(f"\n{args.size}x{args.size}, {args.steps} steps, cfg 3.5, tiny random weights, 1 thread; max |latent| "
          f"{float(own_latent.abs().max()) * LATENT_SCALE:.2f} (sampler scale)\n")
    print("| frames | path | context windows | max abs diff vs AniPortrait Sampler |")
    print("| ---: | --- | --- | ---: |")
    for frames, path, window_name, diff in rows:  # time per frame: tools/benchmark_vs_original.py
        shown = "-" if path.startswith("AniPortrait") else f"{diff:.2e}"
        print(f"| {frames} | {path} | {window_name} | {shown} |")


if __name__ == "__main__":
    main()
