#!/usr/bin/env bash
# Run an example AniPortrait workflow and print where its output went (last line); options: --help.
#   with --comfyui PATH (or env ANIPORTRAIT_COMFYUI): on your ComfyUI, with its Python; installs nothing
#   without: on the vendored ComfyUI that scripts/setup_env.sh installs on first use (CPU), without the
#            tests' extras (no chromium, espeak-ng or test requirements)
# --help installs and starts nothing; bad arguments and missing model files fail before the install.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$REPO/scripts/run_example.py"

COMFY="${ANIPORTRAIT_COMFYUI:-}"
PY_ARG=""
DEMO=0
prev=""
for a in "$@"; do
  case "$a" in
    -h|--help) exec "$(command -v python3 || command -v python)" "$SCRIPT" --help ;;
    --demo) DEMO=1 ;;
    --comfyui=*) COMFY="${a#--comfyui=}" ;;
    --python=*) PY_ARG="${a#--python=}" ;;
  esac
  case "$prev" in
    --comfyui) COMFY="$a" ;;
    --python) PY_ARG="$a" ;;
  esac
  prev="$a"
done

if [ "$DEMO" = 1 ]; then
  echo "DEMO: random weights, the video is noise"
  export _ANIPORTRAIT_DEMO_BANNER_SHOWN=1
fi

if [ -n "$COMFY" ]; then
  # your ComfyUI: its Python runs this script too (it has torch and the pack's requirements)
  PY="$PY_ARG"
  if [ -z "$PY" ]; then
    for cand in "$COMFY/venv/bin/python" "$COMFY/.venv/bin/python"; do
      [ -x "$cand" ] && { PY="$cand"; break; }
    done
  fi
  [ -n "$PY" ] || PY="$(command -v python3 || command -v python)"
else
  # the arguments and the model files first (plain Python, no torch), then the install
  SYS_PY="$(command -v python3 || command -v python || true)"
  if [ -n "$SYS_PY" ]; then
    "$SYS_PY" "$SCRIPT" --preflight "$@" || exit $?
  fi
  PY="$(ANIPORTRAIT_NO_BROWSER=1 ANIPORTRAIT_NO_TEST_DEPS=1 bash "$REPO/scripts/setup_env.sh" | tail -n 1)"
fi
exec "$PY" "$SCRIPT" "$@"
