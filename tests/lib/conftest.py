"""Fixtures of the library tests (tests/lib: aniportrait_lib without ComfyUI)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from support.golden import load_case
from support.paths import shared_assets_dir


@pytest.fixture(scope="session")
def face_landmarker_path() -> Path:
    """The MediaPipe face_landmarker.task of the shared assets."""
    p = shared_assets_dir() / "face_landmarker.task"
    assert p.is_file(), f"face_landmarker.task not found at {p}"
    return p


@pytest.fixture(scope="module")
def pipeline_case() -> tuple[Path, dict]:
    """The golden ``pipeline`` case: its folder and case.json."""
    return load_case("pipeline")


@pytest.fixture(scope="module")
def tiny_models(pipeline_case: tuple[Path, dict]) -> Any:
    """The pipeline case's tiny Lmk2Video networks, loaded from its .pth files with the real loading code."""
    from aniportrait_lib.networks.loading import Lmk2VideoConfig, PoseGuiderConfig, load_lmk2video_models

    folder, case = pipeline_case
    p = case["params"]
    unet_cfg = json.loads((folder / "base_unet_config.json").read_text())
    motion = json.loads((folder / "unet_additional_kwargs.json").read_text())
    # the original hard-codes 32 GroupNorm groups in the motion module; the golden was built with `groups`
    motion.setdefault("motion_module_kwargs", {})["norm_num_groups"] = int(p["groups"])
    config = Lmk2VideoConfig(
        unet=unet_cfg, motion=motion,
        pose_guider=PoseGuiderConfig(int(p["C"]), int(p["pg_heads"]), int(p["pg_head_dim"]), int(p["groups"])),
    )
    paths = {name: folder / f"{name}.pth" for name in ("reference_unet", "denoising_unet", "motion_module", "pose_guider")}
    return load_lmk2video_models(paths, config, device="cpu", dtype=torch.float32)
