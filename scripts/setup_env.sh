#!/usr/bin/env bash
# Install everything the pack's tests and example need on a machine with only Python 3.11:
# the vendored ComfyUI (CPU torch 2.13.0) in a venv, the pack's requirements, test tools, espeak-ng.
# Prints the venv's python path on the last line. Idempotent (re-runs take seconds).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${ANIPORTRAIT_SHARED:-$(cd "$REPO/../shared" && pwd)}"
DIR="${ANIPORTRAIT_COMFYUI_DIR:-$HOME/.cache/aniportrait-ci}"

# What only the tests need can be left out (scripts/run_example.sh does):
#   ANIPORTRAIT_NO_BROWSER=1    no chromium (it loads the UI workflows in the real editor in the tests)
#   ANIPORTRAIT_NO_TEST_DEPS=1  no espeak-ng (speaks the test clips), no g++ and no requirements-test.txt
# ANIPORTRAIT_WITH_BROWSER=1 asks for chromium explicitly (wins over ANIPORTRAIT_NO_BROWSER).
NO_TEST_DEPS="${ANIPORTRAIT_NO_TEST_DEPS:-0}"
WITH_BROWSER=1
[ "${ANIPORTRAIT_NO_BROWSER:-0}" = 1 ] && WITH_BROWSER=0
[ "${ANIPORTRAIT_WITH_BROWSER:-0}" = 1 ] && WITH_BROWSER=1

# Debian packages
MISSING_DEB=()
[ "$NO_TEST_DEPS" = 1 ] || command -v espeak-ng >/dev/null 2>&1 || MISSING_DEB+=(espeak-ng)
# a C++ compiler: the compile test has torch.compile (inductor) build its CPU code
[ "$NO_TEST_DEPS" = 1 ] || command -v g++ >/dev/null 2>&1 || MISSING_DEB+=(g++)
[ "$WITH_BROWSER" = 0 ] || command -v chromium >/dev/null 2>&1 || MISSING_DEB+=(chromium)
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
REQS=(-r "$REPO/requirements.txt")
[ "$NO_TEST_DEPS" = 1 ] || REQS+=(-r "$REPO/requirements-test.txt")
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "${REQS[@]}" 2>&1 \
  | { grep -v "^WARNING: Location '" || true; } >&2
echo "$PY"
