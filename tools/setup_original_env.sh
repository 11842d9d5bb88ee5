#!/usr/bin/env bash
# Build the ORIGINAL AniPortrait's own Python environment for tools/benchmark_vs_original.py.
#
#   bash tools/setup_original_env.sh                       # pinned versions (torch 2.0.1 from PyPI, ~2.6 GB)
#   bash tools/setup_original_env.sh --git-dir DIR          # also extract the source from a git mirror/clone
#   bash tools/setup_original_env.sh --torch "torch==2.4.1" # another torch (e.g. a GPU whose arch 2.0.1 lacks)
#   bash tools/setup_original_env.sh --venv ~/.cache/aniportrait-original/venv-torch2.13 --torch "torch==2.13.0"
#                                        # a second venv, same source and pins but another torch (a control run)
#
# What it makes (nothing is written into this repository):
#   $ANIPORTRAIT_ORIGINAL_HOME (default ~/.cache/aniportrait-original)
#     src/   Zejun-Yang/AniPortrait at commit 7f6593fd971c95b65f603c15ef8ce2c3fc7f5404 (imported at run time
#            through sys.path by the benchmark's worker; never copied into the pack)
#     venv/  Python 3.11 + the pins of the original's requirements.txt that its pose2video pipeline needs
#     venv/VERSIONS.txt  the versions actually installed (the benchmark prints and records them)
#
# The source: if src/ is missing it is extracted from --git-dir (a bare mirror or a clone containing the commit;
# files absent from a partial mirror are skipped, they are videos/.task files the pipeline does not use), else
# cloned from GitHub (needs internet).
#
# Only the pose2video stage is installed (torch, torchvision, diffusers, transformers, huggingface_hub,
# accelerate, einops, omegaconf, numpy, Pillow, tqdm, safetensors): not gradio, mediapipe, librosa, av,
# xformers, onnxruntime-gpu, ... which the sampler does not touch. Pins from requirements.txt:
#   torch==2.0.1 torchvision==0.15.2 diffusers==0.24.0 transformers==4.30.2 accelerate==0.21.0 einops==0.4.1
#   omegaconf==2.2.3 numpy==1.24.4 Pillow==9.5.0 tqdm==4.66.1
# Not pinned there, chosen to work with those pins: huggingface_hub==0.19.4 (diffusers 0.24 imports
# `cached_download`, removed in later hubs), safetensors (whatever pip picks for transformers 4.30.2).
# torch 2.0.1's PyPI wheel brings its CUDA 11.7 runtime wheels (~2 GB) even on a CPU machine; it runs on CPU.
# If the pinned torch cannot be installed, the script falls back to the torch already on the machine's wheel
# list (pip decides) and says so; VERSIONS.txt always holds what was really installed.
set -euo pipefail

HOME_DIR="${ANIPORTRAIT_ORIGINAL_HOME:-$HOME/.cache/aniportrait-original}"
COMMIT=7f6593fd971c95b65f603c15ef8ce2c3fc7f5404
PYTHON="${PYTHON:-python3.11}"
TORCH_SPEC="torch==2.0.1"
TORCHVISION_SPEC="torchvision==0.15.2"
GIT_DIR=""
VENV=""
while [ $# -gt 0 ]; do
    case "$1" in
        --git-dir) GIT_DIR="$2"; shift 2 ;;
        --torch) TORCH_SPEC="$2"; TORCHVISION_SPEC=""; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --venv) VENV="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
SRC="$HOME_DIR/src"
VENV="${VENV:-$HOME_DIR/venv}"
mkdir -p "$HOME_DIR"

# ---- source -------------------------------------------------------------------------------------------------
if [ ! -f "$SRC/src/pipelines/pipeline_pose2vid_long.py" ]; then
    rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
    if [ -n "$GIT_DIR" ]; then
        echo "extracting AniPortrait $COMMIT from $GIT_DIR"
        git --git-dir="$GIT_DIR" cat-file -e "$COMMIT^{commit}"
        git --git-dir="$GIT_DIR" ls-tree -r "$COMMIT" | while read -r _mode type sha path; do
            [ "$type" = blob ] || continue
            mkdir -p "$SRC.tmp/$(dirname "$path")"
            if git --git-dir="$GIT_DIR" cat-file -e "$sha" 2>/dev/null; then
                git --git-dir="$GIT_DIR" cat-file blob "$sha" > "$SRC.tmp/$path"
            else
                echo "  (not in this mirror, skipped: $path)"
            fi
        done
    else
        echo "cloning github.com/Zejun-Yang/AniPortrait at $COMMIT"
        git clone -q https://github.com/Zejun-Yang/AniPortrait "$SRC.tmp"
        git -C "$SRC.tmp" checkout -q "$COMMIT"
    fi
    rm -rf "$SRC" && mv "$SRC.tmp" "$SRC"
fi
echo "source: $SRC (commit $COMMIT)"

# ---- venv ---------------------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip_install() {  # quiet; drops pip's warnings about local index folders that lack a package
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
PINS=("diffusers==0.24.0" "transformers==4.30.2" "huggingface_hub==0.19.4" "accelerate==0.21.0" "einops==0.4.1"
      "omegaconf==2.2.3" "numpy==1.24.4" "Pillow==9.5.0" "tqdm==4.66.1" safetensors)
NOTES=()
# shellcheck disable=SC2086  # --torch may carry pip options, e.g. "torch==2.0.1 --index-url URL"
if ! pip_install $TORCH_SPEC ${TORCHVISION_SPEC:+"$TORCHVISION_SPEC"} "${PINS[@]}"; then
    NOTES+=("could not install $TORCH_SPEC $TORCHVISION_SPEC; installed the newest torch pip allows instead (no torchvision)")
    pip_install torch "${PINS[@]}"
fi

# ---- check and record -----------------------------------------------------------------------------------------
HF_HOME="$HOME_DIR/hf_home" HF_HUB_OFFLINE=1 "$VENV/bin/python" - "$SRC" "$VENV/VERSIONS.txt" "${NOTES[@]+"${NOTES[@]}"}" <<'EOF'
import sys, platform, importlib.metadata as md
src, out, notes = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, src)
import torch
try:
    import torchvision  # noqa: F401
except Exception as exc:  # the pipeline imports torchvision.transforms but never uses it
    import types
    import importlib.machinery
    stub = types.ModuleType("torchvision")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)  # for find_spec() checks
    stub.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
    notes.append(f"torchvision not importable ({type(exc).__name__}); the benchmark stubs it "
                 "(pipeline_pose2vid_long.py imports torchvision.transforms but never uses it)")
from src.pipelines.pipeline_pose2vid_long import Pose2VideoPipeline  # noqa: F401  (imports the whole stack)
from src.models.unet_3d import UNet3DConditionModel  # noqa: F401
from src.models.pose_guider import PoseGuider  # noqa: F401
names = ["torch", "torchvision", "diffusers", "transformers", "huggingface_hub", "accelerate", "einops",
         "omegaconf", "numpy", "Pillow", "tqdm", "safetensors"]
vers = {}
for n in names:
    try:
        vers[n] = md.version(n)
    except md.PackageNotFoundError:
        vers[n] = "not installed"
line = "python " + platform.python_version() + "; " + "; ".join(f"{k} {v}" for k, v in vers.items())
with open(out, "w") as f:
    f.write(line + "\n")
    for n in notes:
        f.write("NOTE: " + n + "\n")
print("original env OK:", line)
for n in notes:
    print("NOTE:", n)
EOF
echo "venv: $VENV"
