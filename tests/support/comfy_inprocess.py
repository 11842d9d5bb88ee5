"""The vendored ComfyUI's own modules imported into this process, and the pack imported the way ComfyUI
imports a custom node (tests/nodes call each node's ``execute`` with real ComfyUI types)."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from support.comfy_server import comfy_dir
from support.paths import REPO_ROOT, shared_assets_dir


def import_comfyui(models_dir: Path, output_dir: Path) -> None:
    """Put the vendored ComfyUI on ``sys.path`` (CPU only) with its models and output folders at these paths."""
    root = comfy_dir() / "ComfyUI"
    assert (root / "comfy").is_dir(), f"the vendored ComfyUI is not installed at {root}; run scripts/setup_env.sh"
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args  # not parsed from sys.argv: pytest's arguments are not ComfyUI's

    args.cpu = True  # the in-process tests run where the CI runs: on the CPU
    import folder_paths

    folder_paths.models_dir = str(models_dir)
    folder_paths.set_output_directory(str(output_dir))
    for kind in ("vae", "clip_vision"):
        folder_paths.add_model_folder_path(kind, str(models_dir / kind), is_default=True)


def import_pack(work: Path):
    """The pack as ComfyUI imports it (package name ``aniportrait_pack``) over the models folder of ``work``;
    ``work_dir`` on the returned module says where that is."""
    (work / "models" / "aniportrait" / "pose_templates").mkdir(parents=True)
    (work / "output").mkdir()
    import_comfyui(work / "models", work / "output")
    spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["aniportrait_pack"] = module
    spec.loader.exec_module(module)
    import aniportrait_pack.nodes  # noqa: F401  (registers the model folders)

    module.work_dir = work
    return module


def node_landmarker(pack):
    """The MediaPipe landmarker through the pack's loader node (the shipped .task copied into the pack's models)."""
    from aniportrait_pack.nodes import loaders

    folder = pack.work_dir / "models" / "aniportrait"
    if not (folder / "face_landmarker.task").exists():
        shutil.copyfile(shared_assets_dir() / "face_landmarker.task", folder / "face_landmarker.task")
    return loaders.LoadFaceLandmarker.execute("face_landmarker.task").result[0]


def ui_text(output) -> str:
    """The first line of text a node's output shows in the UI ("" when none)."""
    return output.ui.as_dict()["text"][0] if output.ui is not None else ""


def comfy_image(array):
    """A uint8 ``(H, W, 3)`` array as a core IMAGE batch of one (float 0..1, ``(1, H, W, 3)``)."""
    import torch

    return torch.from_numpy(array).float().div(255.0)[None]
