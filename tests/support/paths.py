"""Where things are: the repository, the shared reference (goldens, manifests) and the shared test assets."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_dir() -> Path:
    """The reference folder (env ANIPORTRAIT_REFERENCE, default ../shared/reference from the repo root)."""
    return Path(os.environ.get("ANIPORTRAIT_REFERENCE", REPO_ROOT.parent / "shared" / "reference")).resolve()


def shared_assets_dir() -> Path:
    """The shared test assets beside the reference (real clips, the MediaPipe face_landmarker.task)."""
    return reference_dir().parent / "assets"
