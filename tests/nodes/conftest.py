"""Fixtures of the in-process node tests (tests/nodes): the vendored ComfyUI's modules imported into this
process, the pack imported the way ComfyUI imports a custom node, each node's ``execute`` called with real
ComfyUI types."""
from __future__ import annotations

import pytest

from support import comfy_inprocess


@pytest.fixture(autouse=True)
def node_tests_in_inference_mode():
    """Node tests run inside ``torch.inference_mode()``, as ComfyUI's executor runs every node (outside it,
    core's CLIP vision encode keeps its autograd state: ~1.8 GB per call on the CPU)."""
    import torch

    with torch.inference_mode():
        yield


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """The pack as ComfyUI imports it (package name ``aniportrait_pack``), over a temporary models folder
    (``pack.work_dir``)."""
    return comfy_inprocess.import_pack(tmp_path_factory.mktemp("comfy_inprocess"))


@pytest.fixture(scope="session")
def video_models(pack):
    """(core VAE, core CLIP vision, the AniPortrait MODEL from the pack's loader node), random weights in the release
    layout saved once in the pack's models folder."""
    import comfy.clip_vision
    import comfy.sd
    import comfy.utils

    from aniportrait_lib.networks.loading import RELEASED_FILES
    from support import random_weights

    folder = pack.work_dir / "models"
    vae_path, clip_path = folder / "sd-vae.safetensors", folder / "clip-vit-l.safetensors"
    if not vae_path.exists():
        random_weights.save_sd_vae(vae_path)
        random_weights.save_clip_vision_vitl(clip_path)
        random_weights.save_lmk2video_models(folder / "aniportrait", seed=0)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(vae_path)))
    clip = comfy.clip_vision.load(str(clip_path))
    names = [RELEASED_FILES[r] for r in ("reference_unet", "denoising_unet", "motion_module", "pose_guider")]
    return vae, clip, pack.nodes.loaders.LoadVideoModel.execute(*names, "auto").args[0]


@pytest.fixture(scope="module")
def landmarker(pack):
    """The MediaPipe landmarker through the pack's loader node (a test module may define its own)."""
    from support.comfy_inprocess import node_landmarker

    return node_landmarker(pack)
