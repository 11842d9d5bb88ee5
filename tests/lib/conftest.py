"""Fixtures of the library tests (tests/lib: aniportrait_lib without ComfyUI)."""
from __future__ import annotations

from pathlib import Path

import pytest

from support.paths import shared_assets_dir


@pytest.fixture(scope="session")
def face_landmarker_path() -> Path:
    """The MediaPipe face_landmarker.task of the shared assets."""
    p = shared_assets_dir() / "face_landmarker.task"
    assert p.is_file(), f"face_landmarker.task not found at {p}"
    return p
