"""The pack's model folder: ``models/aniportrait`` (also reachable through extra_model_paths.yaml)."""
from __future__ import annotations

import os

import folder_paths

from ..aniportrait_lib import weights

FOLDER = "aniportrait"
_registered = False


def register() -> None:
    """Register ``models/aniportrait`` under the folder key ``aniportrait`` (idempotent)."""
    global _registered
    if _registered:
        return
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    _registered = True


def list_files(*extensions: str) -> list[str]:
    register()
    names = folder_paths.get_filename_list(FOLDER)
    return [n for n in names if not extensions or n.lower().endswith(extensions)]


def folders() -> list[str]:
    register()
    return list(folder_paths.get_folder_paths(FOLDER))


def resolve(file_name: str, what: str) -> str:
    """Full path of ``file_name`` in the aniportrait folders; CheckpointError naming the folders otherwise."""
    register()
    if not file_name:
        raise weights.CheckpointError(
            f"no {what} file selected. Put it in one of: {', '.join(folders())} and refresh the node list."
        )
    path = folder_paths.get_full_path(FOLDER, file_name)
    if path is None:
        return str(weights.find_model_file(file_name, folders(), what))
    return path


def missing_file_message(file_name: str, what: str) -> str | bool:
    """For ``validate_inputs``: True when the file exists, else the error text."""
    try:
        resolve(file_name, what)
    except weights.CheckpointError as exc:
        return str(exc)
    return True
