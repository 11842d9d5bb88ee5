"""Shared test fixtures: where the reference goldens live, tiny-model helpers."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The reference folder (env ANIPORTRAIT_REFERENCE, default ../shared/reference from the repo root)."""
    return Path(os.environ.get("ANIPORTRAIT_REFERENCE", REPO_ROOT.parent / "shared" / "reference")).resolve()


def golden_case(kind: str) -> Path:
    """Folder of golden case ``kind``; fails (not skips) when the reference is absent."""
    folder = reference_dir() / "golden" / kind
    assert (folder / "case.json").is_file(), f"golden case {kind} not found at {folder}"
    return folder


def load_case(kind: str) -> tuple[Path, dict]:
    folder = golden_case(kind)
    return folder, json.loads((folder / "case.json").read_text())


def manifest(name: str) -> dict[str, list[int]]:
    return json.loads((reference_dir() / "manifests" / f"{name}.json").read_text())


def shared_assets_dir() -> Path:
    return reference_dir().parent / "assets"


@pytest.fixture(scope="session")
def face_landmarker_path() -> Path:
    p = shared_assets_dir() / "face_landmarker.task"
    assert p.is_file(), f"face_landmarker.task not found at {p}"
    return p
