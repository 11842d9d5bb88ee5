"""Fixtures of the end-to-end tests (tests/e2e): the vendored ComfyUI started as a server with this pack,
tiny random models and test inputs, driven over its HTTP API."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from support.paths import shared_assets_dir


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The vendored ComfyUI with this pack, tiny random models and test inputs (shared by the e2e tests)."""
    import torch
    from PIL import Image
    from skimage import data

    from support import random_weights
    from support.comfy_server import start_server, stop_server

    work = tmp_path_factory.mktemp("comfy")
    srv = start_server(work)
    try:
        models = srv.models_dir / "aniportrait"
        random_weights.save_audio_models(models, seed=0)
        shutil.copyfile(shared_assets_dir() / "face_landmarker.task", models / "face_landmarker.task")
        broken = random_weights.audio2mesh_state_dict(0)
        broken["in_fn.weightt"] = broken.pop("in_fn.weight")
        torch.save(broken, models / "broken_audio2mesh.pt")

        photo = data.astronaut()[10:220, 120:330]
        Image.fromarray(photo).resize((512, 512), Image.BILINEAR).save(srv.input_dir / "aniportrait_reference.png")
        Image.new("RGB", (512, 512), (128, 128, 128)).save(srv.input_dir / "grey.png")
        speech = srv.input_dir / "aniportrait_speech.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), "Hello, this is a portrait that talks."], check=True, timeout=60)
        subprocess.run(["espeak-ng", "-w", str(srv.input_dir / "short_speech.wav"), "Hi there."], check=True, timeout=60)
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="session")
def stage2_models(server):
    """Small Lmk2Video files + random full-architecture SD VAE and CLIP ViT-L (ComfyUI formats) in the server's folders."""
    from support import random_weights

    random_weights.save_lmk2video_models(server.models_dir / "aniportrait", seed=0)
    (server.models_dir / "vae").mkdir(exist_ok=True)
    (server.models_dir / "clip_vision").mkdir(exist_ok=True)
    random_weights.save_sd_vae(server.models_dir / "vae" / "sd-vae-ft-mse.safetensors")
    random_weights.save_clip_vision_vitl(server.models_dir / "clip_vision" / "sd-image-variations-image-encoder.safetensors")
    return server
