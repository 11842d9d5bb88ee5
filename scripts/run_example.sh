#!/usr/bin/env bash
# Zero to a video: install (first run only), start ComfyUI with the pack, run the audio-to-video prompt
# (tests/e2e/prompts/aniportrait_audio2video_api.json). Arguments go to scripts/run_example.py (--help).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$REPO/scripts/setup_env.sh" | tail -n 1)"
exec "$PY" "$REPO/scripts/run_example.py" "$@"
