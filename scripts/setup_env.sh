#!/usr/bin/env bash
# Install everything the pack's tests and example need on a machine with only Python 3.11:
# the vendored ComfyUI (CPU torch 2.13.0) in a venv, the pack's requirements, test tools, espeak-ng.
# Prints the venv's python path on the last line. Idempotent (re-runs take seconds).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${ANIPORTRAIT_SHARED:-$(cd "$REPO/../shared" && pwd)}"
DIR="${ANIPORTRAIT_COMFYUI_DIR:-$HOME/.cache/aniportrait-ci}"

# Debian packages: espeak-ng speaks the test clips, chromium loads the UI workflows in the real editor
MISSING_DEB=()
command -v espeak-ng >/dev/null 2>&1 || MISSING_DEB+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || MISSING_DEB+=(chromium)
if [ "${#MISSING_DEB[@]}" -gt 0 ]; then
  echo "[setup] installing ${MISSING_DEB[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq "${MISSING_DEB[@]}" >&2
fi

bash "$SHARED/vendor/start-comfyui.sh" --dir "$DIR" --install-only >&2
PY="$DIR/venv/bin/python"
# keep the CPU torch the ComfyUI install chose: never let the pack's requirements replace it
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
CONSTRAINTS="$DIR/.aniportrait-constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" -r "$REPO/requirements.txt" -r "$REPO/requirements-test.txt" 2>&1 \
  | { grep -v "^WARNING: Location '" || true; } >&2
echo "$PY"
