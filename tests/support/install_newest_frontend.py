#!/usr/bin/env python
"""Install the newest 1.x ``comfyui-frontend-package`` of PyPI next to the vendored ComfyUI, for the browser test.

The vendored ComfyUI (0.3.64) pins comfyui-frontend-package 1.27.10 in its venv; that one stays. This script
puts the newest 1.x release into its own folder, ``<comfy_dir>/frontend-<version>`` (``pip install --no-deps
--target``; comfy_dir is ``$ANIPORTRAIT_COMFYUI_DIR``, default ``~/.cache/aniportrait-ci``), whose
``comfyui_frontend_package/static`` a second server serves through ``--front-end-root``.

Prints ``FRONTEND_VERSION=<version>`` and, on the last line, the static folder. Idempotent: a folder already
installed is kept. Offline (PyPI not answering) it falls back to the newest folder installed before.

    python tests/support/install_newest_frontend.py [--version 1.58.1] [--pip PYTHON]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "comfyui-frontend-package"
MAJOR = 1


def comfy_dir() -> Path:
    return Path(os.environ.get("ANIPORTRAIT_COMFYUI_DIR", Path.home() / ".cache" / "aniportrait-ci"))


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def static_dir(folder: Path) -> Path:
    return folder / "comfyui_frontend_package" / "static"


def installed() -> dict[str, Path]:
    """version -> folder of each complete ``frontend-<version>`` install under comfy_dir()."""
    found = {}
    for folder in comfy_dir().glob("frontend-*"):
        version = folder.name[len("frontend-"):]
        if re.fullmatch(r"\d+(\.\d+)*", version) and (static_dir(folder) / "index.html").is_file():
            found[version] = folder
    return found


def newest_on_pypi(python: str) -> str:
    """The newest final (no pre-/post-release) 1.x version pip sees (``pip index versions``)."""
    proc = subprocess.run([python, "-m", "pip", "index", "versions", PACKAGE, "--disable-pip-version-check"],
                          capture_output=True, text=True, timeout=180)
    match = re.search(r"^Available versions:\s*(.+)$", proc.stdout, re.M)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"pip index versions {PACKAGE} failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    versions = [v.strip() for v in match.group(1).split(",")]
    finals = [v for v in versions if re.fullmatch(r"\d+\.\d+\.\d+", v) and _key(v)[0] == MAJOR]
    if not finals:
        raise RuntimeError(f"no {MAJOR}.x release of {PACKAGE} in {versions[:20]}")
    return max(finals, key=_key)


def install(version: str, python: str) -> Path:
    """``<comfy_dir>/frontend-<version>`` with that release in it (installed unless already there)."""
    folder = comfy_dir() / f"frontend-{version}"
    if (static_dir(folder) / "index.html").is_file():
        return folder
    comfy_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".frontend-{version}.", dir=comfy_dir()))
    try:  # into a temporary folder first, so an interrupted install never looks complete
        proc = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                               "--no-compile", "--target", str(tmp), f"{PACKAGE}=={version}"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not (static_dir(tmp) / "index.html").is_file():
            raise RuntimeError(f"pip install {PACKAGE}=={version} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def ensure(version: str | None = None, python: str = sys.executable) -> tuple[str, Path]:
    """(version, static folder) of the newest 1.x frontend (or of ``version``), installing it if needed."""
    if version is None:
        try:
            version = newest_on_pypi(python)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            have = installed()
            if not have:
                raise
            version = max(have, key=_key)
            print(f"[frontend] PyPI did not answer ({str(err)[:200]}); using the installed {version}", file=sys.stderr)
    return version, static_dir(install(version, python))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help=f"this release instead of the newest {MAJOR}.x")
    parser.add_argument("--pip", default=sys.executable, help="the python whose pip installs it (default: this one)")
    args = parser.parse_args()
    version, static = ensure(args.version, args.pip)
    print(f"FRONTEND_VERSION={version}")
    print(static)


if __name__ == "__main__":
    main()
