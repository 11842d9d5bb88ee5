#!/usr/bin/env python
"""Download (or, with --check, only check) every model file the AniPortrait workflows need.

Files go under the names and ComfyUI model folders the workflows use:

  models/aniportrait/  audio2mesh.pt audio2pose.pt reference_unet.pth denoising_unet.pth motion_module.pth
                       pose_guider.pth (Hugging Face ZJYang/AniPortrait), face_landmarker.task (MediaPipe)
  models/vae/          sd-vae-ft-mse.safetensors (stabilityai/sd-vae-ft-mse)
  models/clip_vision/  sd-image-variations-image-encoder.safetensors
                       (image_encoder of lambdalabs/sd-image-variations-diffusers)

An existing file is never overwritten: it is checked offline instead (key/shape layout, .task members).
A download goes to a temporary name next to its target, is checked, and is moved into place only while the
target still does not exist.

Run it with your ComfyUI's Python: the checks read the files with PyTorch (weights only, never running
code in them), as the pack does.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
if str(PACK_ROOT) not in sys.path:
    sys.path.insert(0, str(PACK_ROOT))

GROUP_CHOICES = ("aniportrait", "vae", "clip_vision", "landmarker")
#: what the checks import (the pack's own checkpoint reader and landmarker members), and what a download adds
CHECK_MODULES = ("torch", "numpy", "safetensors")
DOWNLOAD_MODULES = ("huggingface_hub",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from model_files import DEFAULT_MODELS_HELP

    p = argparse.ArgumentParser(
        description="Download the model files the AniPortrait workflows need into a ComfyUI models folder "
                    "(never overwriting a file), or check the files that are there (--check). "
                    "Run it with your ComfyUI's Python (it reads the files with PyTorch).")
    p.add_argument("--models", type=Path, default=None,
                   help=f"a ComfyUI models folder (default: {DEFAULT_MODELS_HELP}; run_example.py uses the same)")
    p.add_argument("--check", action="store_true",
                   help="only check the files offline, never download; exit code 1 when any is missing or bad")
    p.add_argument("--only", choices=GROUP_CHOICES, action="append",
                   help="only these files (repeatable): the six AniPortrait checkpoints, the VAE, the CLIP "
                        "image encoder or the MediaPipe face landmarker")
    p.add_argument("--verbose", action="store_true",
                   help="also print why a file could not be read (the reading library's own messages)")
    return p.parse_args(argv)


def missing_modules(check_only: bool) -> list[str]:
    """The modules this run needs that do not import in this Python."""
    missing = []
    for name in CHECK_MODULES + (() if check_only else DOWNLOAD_MODULES):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


# ---------------------------------------------------------------------------------------------------- download
def _download_url(url: str, dest: Path) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        total = int(r.headers.get("Content-Length") or 0)
        done = 0
        while True:
            block = r.read(1 << 20)
            if not block:
                break
            f.write(block)
            done += len(block)
            pct = f" {100 * done / total:5.1f}%" if total else ""
            print(f"\r  {done / 1e6:8.1f} MB{pct}", end="", flush=True)
    print()


def _bin_to_safetensors(src: Path, dest: Path) -> None:
    """A pytorch_model.bin (read weights-only) saved as safetensors."""
    from safetensors.torch import save_file

    from aniportrait_lib.weights import read_state_dict

    sd = read_state_dict(src)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(dest))


def download(entry, work_dir: Path) -> Path:
    """Fetch ``entry`` into ``work_dir`` (a fresh temporary folder) and return the downloaded file's path."""
    if entry.url:
        dest = work_dir / entry.name
        _download_url(entry.url, dest)
        return dest
    from huggingface_hub import hf_hub_download
    try:
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import EntryNotFoundError

    last: Exception | None = None
    for repo_file in entry.repo_files:
        try:
            got = Path(hf_hub_download(entry.repo_id, repo_file, local_dir=str(work_dir / "hub")))
        except EntryNotFoundError as exc:  # try the next candidate name
            last = exc
            continue
        if got.suffix != Path(entry.name).suffix and Path(entry.name).suffix == ".safetensors":
            print(f"  converting {repo_file} to safetensors")
            out = work_dir / entry.name
            _bin_to_safetensors(got, out)
            return out
        return got
    raise RuntimeError(f"none of {', '.join(entry.repo_files)} is in {entry.repo_id}: {last}")


def place(tmp: Path, target: Path) -> bool:
    """Move ``tmp`` to ``target`` only if ``target`` does not exist; True when placed."""
    try:
        os.link(tmp, target)  # atomic, fails when the target exists
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem
        if target.exists():
            return False
        os.rename(tmp, target)
        return True
    tmp.unlink()
    return True


# ------------------------------------------------------------------------------------------------------ output
LABELS = {"OK": "OK", "missing": "missing", "truncated": "truncated", "unsafe": "refused", "wrong": "wrong file"}


def line(result, rel: str) -> str:
    text = f"{LABELS[result.status]:<10} {rel}"
    return f"{text}: {result.detail}" if result.detail else text


def fetch_one(entry, models: Path) -> bool:
    from model_files import check_file, human_size

    folder = models / entry.folder
    target = folder / entry.name
    rel = f"{entry.folder}/{entry.name}"
    if target.exists():
        result = check_file(entry, target)
        if result.ok:
            print(f"{'OK':<10} {rel}: already there, checked")
            return True
        print(line(result, rel) + " (left untouched: move it away and run again to download it)")
        return False
    folder.mkdir(parents=True, exist_ok=True)
    print(f"downloading {rel} ({human_size(entry.approx_bytes)}, approx.) from {entry.source}")
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.download-", dir=folder))
    try:
        try:
            got = download(entry, work)
        except Exception as exc:  # network, hub or disk errors: report and go on with the next file
            print(f"{'failed':<10} {rel}: download failed: {type(exc).__name__}: {exc}")
            return False
        result = check_file(entry, got)
        if not result.ok:
            print(line(result, rel) + " (the downloaded file was discarded)")
            return False
        size = got.stat().st_size
        if not place(got, target):
            print(f"{'kept':<10} {rel}: a file appeared there during the download; it was not overwritten")
            return check_file(entry, target).ok
        print(f"{'OK':<10} {rel}: downloaded, {human_size(size)}, checked")
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_modules(args.check)
    if missing:
        print(f"error: {sys.executable} lacks {', '.join(missing)}, which this script needs to "
              f"{'check' if args.check else 'download and check'} the files: run it with your ComfyUI's Python "
              f"(e.g. ComfyUI/venv/bin/python {Path(__file__).resolve()}), or install them: "
              f"{sys.executable} -m pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR, format="  (%(message)s)")
    from model_files import check_file, default_models_dir, files_for

    if args.models is not None:
        models, how = args.models, "given with --models"
    else:
        models, how = default_models_dir()
    models = models.expanduser().resolve()
    print(f"models folder: {models} ({how})")
    entries = files_for(args.only)
    bad = 0
    for entry in entries:
        if args.check:
            result = check_file(entry, models / entry.folder / entry.name)
            print(line(result, f"{entry.folder}/{entry.name}"))
            ok = result.ok
        else:
            ok = fetch_one(entry, models)
        bad += not ok
    if bad:
        print(f"{bad} of {len(entries)} file(s) missing or bad.")
        return 1
    print(f"all {len(entries)} file(s) OK.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
