"""Run the example audio-to-video prompt (tests/e2e/prompts/aniportrait_audio2video_api.json, the API
twin of workflows/aniportrait_audio2video.json) on the vendored ComfyUI and print where the mp4 went.

Uses the model files in ``--models`` (default ``~/aniportrait-models``), laid out as
``aniportrait/{audio2mesh.pt, audio2pose.pt, face_landmarker.task, reference_unet.pth,
denoising_unet.pth, motion_module.pth, pose_guider.pth}``, ``vae/sd-vae-ft-mse.safetensors`` and
``clip_vision/sd-image-variations-image-encoder.safetensors``. Missing files are replaced by RANDOM
demo weights (the pipeline runs end to end, the video is noise) unless ``--no-demo-weights``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from comfy_server import execution_error, load_workflow, start_server, stop_server  # noqa: E402

log = logging.getLogger("run_example")
#: the API-format prompt this script queues (load_workflow reads it from tests/e2e/prompts/)
PROMPT = "aniportrait_audio2video_api.json"
REQUIRED = {
    "aniportrait": ["audio2mesh.pt", "audio2pose.pt", "face_landmarker.task", "reference_unet.pth",
                    "denoising_unet.pth", "motion_module.pth", "pose_guider.pth"],
    "vae": ["sd-vae-ft-mse.safetensors"],
    "clip_vision": ["sd-image-variations-image-encoder.safetensors"],
}


def missing_files(models: Path) -> list[Path]:
    return [models / d / f for d, files in REQUIRED.items() for f in files if not (models / d / f).is_file()]


def make_demo_weights(models: Path, missing: list[Path]) -> None:
    from aniportrait_lib import random_weights

    log.warning("RANDOM demo weights for %d missing file(s): the workflow runs, the video is noise. "
                "Put the real files in %s (see README) for a real animation.", len(missing), models)
    names = {p.name for p in missing}
    aniportrait = models / "aniportrait"
    if names & {"audio2mesh.pt", "audio2pose.pt"}:
        random_weights.save_audio_models(aniportrait)
    if names & {"reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_guider.pth"}:
        random_weights.save_lmk2video_models(aniportrait)
    if "face_landmarker.task" in names:
        shared = Path(os.environ.get("ANIPORTRAIT_REFERENCE", REPO.parent / "shared" / "reference")).parent / "assets"
        if (shared / "face_landmarker.task").is_file():
            shutil.copyfile(shared / "face_landmarker.task", aniportrait / "face_landmarker.task")
        else:
            raise SystemExit("face_landmarker.task is missing: download it from https://storage.googleapis.com/mediapipe-models/"
                             f"face_landmarker/face_landmarker/float16/latest/face_landmarker.task into {aniportrait}")
    if "sd-vae-ft-mse.safetensors" in names:
        (models / "vae").mkdir(parents=True, exist_ok=True)
        random_weights.save_sd_vae(models / "vae" / "sd-vae-ft-mse.safetensors")
    if "sd-image-variations-image-encoder.safetensors" in names:
        (models / "clip_vision").mkdir(parents=True, exist_ok=True)
        random_weights.save_clip_vision_vitl(models / "clip_vision" / "sd-image-variations-image-encoder.safetensors")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, help="reference portrait (default: a crop of skimage's astronaut photo)")
    ap.add_argument("--audio", type=Path, help="speech clip (default: espeak-ng says a sentence)")
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("ANIPORTRAIT_MODELS", Path.home() / "aniportrait-models")))
    ap.add_argument("--work", type=Path, default=REPO / "out" / "example", help="input/output folders of the run")
    ap.add_argument("--size", type=int, help="width = height in pixels (default 512; 128 with demo weights)")
    ap.add_argument("--steps", type=int, help="DDIM steps (default 25; 4 with demo weights)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--port", type=int, help="port of the ComfyUI server (default: a free one)")
    ap.add_argument("--no-demo-weights", action="store_true", help="fail instead of using random weights for missing files")
    args = ap.parse_args()

    for d in REQUIRED:
        (args.models / d).mkdir(parents=True, exist_ok=True)
    missing = missing_files(args.models)
    demo = bool(missing)
    if missing and args.no_demo_weights:
        raise SystemExit("missing model files:\n  " + "\n  ".join(map(str, missing)))
    if missing:
        make_demo_weights(args.models, missing)
    size = args.size or (128 if demo else 512)
    steps = args.steps or (4 if demo else 25)

    args.work.mkdir(parents=True, exist_ok=True)
    server = start_server(args.work, port=args.port, models=args.models)
    try:
        image = server.input_dir / "aniportrait_reference.png"
        if args.image:
            shutil.copyfile(args.image, image)
        else:
            from PIL import Image
            from skimage import data
            Image.fromarray(data.astronaut()[10:220, 120:330]).resize((512, 512), Image.BILINEAR).save(image)
        audio = server.input_dir / "aniportrait_speech.wav"
        if args.audio:
            shutil.copyfile(args.audio, audio)
        else:
            subprocess.run(["espeak-ng", "-w", str(audio), "Hello! I am a portrait, and now I can talk."], check=True)

        prompt = load_workflow(PROMPT)
        for node in ("5", "9", "17"):
            prompt[node]["inputs"]["width"] = prompt[node]["inputs"]["height"] = size
        prompt["17"]["inputs"]["steps"] = steps
        prompt["17"]["inputs"]["seed"] = args.seed
        log.info("running %s at %dx%d, %d steps on %s", f"tests/e2e/prompts/{PROMPT}", size, size, steps, server.url)
        start = time.time()
        history = server.run(prompt, timeout=6 * 3600)
        err = execution_error(history)
        if err:
            raise SystemExit(f"{err['node_type']} failed: {err['exception_message']}")
        video = history["outputs"]["20"]["images"][0]
        path = server.output_dir / video["subfolder"] / video["filename"]
        log.info("done in %.0f s: %s%s", time.time() - start, path, "  (demo weights: noise)" if demo else "")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
