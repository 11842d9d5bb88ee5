"""In-process node tests: the vendored ComfyUI's own modules imported into this process, the pack
imported the way ComfyUI imports a custom node, each node's ``execute`` called with real ComfyUI types."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from comfy_server import REPO_ROOT, comfy_dir


def _import_comfyui(models_dir: Path, output_dir: Path) -> None:
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


@pytest.fixture(scope="session")
def pack(tmp_path_factory):
    """The pack as ComfyUI imports it (package name ``aniportrait_pack``), over a temporary models folder."""
    work = tmp_path_factory.mktemp("comfy_inprocess")
    (work / "models" / "aniportrait" / "pose_templates").mkdir(parents=True)
    (work / "output").mkdir()
    _import_comfyui(work / "models", work / "output")
    spec = importlib.util.spec_from_file_location("aniportrait_pack", REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["aniportrait_pack"] = module
    spec.loader.exec_module(module)
    import aniportrait_pack.nodes  # noqa: F401  (registers the model folders)

    module.work_dir = work
    return module
