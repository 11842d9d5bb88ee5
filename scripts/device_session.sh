#!/usr/bin/env bash
# Issue 12's GPU measurements as one prepared run for a borrowed GPU machine (H100/H200 class; Python 3.12 with
# torch, no internet, ~15 minutes of device time in all).
#
# Here, with PyPI access (once per session; writes .device/, which git ignores):
#     bash scripts/device_session.sh prepare
# On the device machine (the repo's root; carry .device; each part ends well inside a 10-minute command):
#     bash scripts/device_session.sh part1     # node paths at 512x512, 25 steps, 48 frames: normal, --lowvram,
#                                              # 6 GB free + --lowvram
#     bash scripts/device_session.sh part2     # window_batch 2, compiled blocks, 300 frames (VRAM flat in length),
#                                              # sampler options side by side (library)
# Results: JSON/text files in $OUT (default ./out), one per measurement, plus session.log; copy the numbers into
# BENCHMARKS.md ("The nodes inside ComfyUI's model management on CUDA" and "Stage-2 optimisations").
#
# Dry run of the plumbing on a CPU machine (no wheels installed, tiny sizes; later arguments win):
#     DRY_RUN=1 PYTHON=~/.cache/aniportrait-ci/venv/bin/python EXTRA="--cpu --size 64 --steps 1 --frames 20" \
#         bash scripts/device_session.sh part1
#
# Which packages travel: what a CPU dry run of scripts/gpu_node_smoke.py imports (a sitecustomize hook listing
# sys.modules' distributions, 2026-11-30) minus what the device image has (the device tool's KINDS.md): av,
# diffusers, soxr, torchsde, trampoline, at the versions this pack's test venv uses. Face detection (mediapipe)
# does not run there: the measurements take the golden case's face or a synthetic one.
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=$(pwd)
DEVICE_DIR="$HERE/.device"
OUT=${OUT:-$HERE/out}
WHEELS=("av==18.1.0" "diffusers==0.42.1" "soxr==1.1.0" "torchsde==0.2.6" "trampoline==0.1.2")
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
W="--weights-dir /tmp/ap_weights --full-size --size 512 --steps 25 --frames 48"
PYTHON=${PYTHON:-python3}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"

prepare() {
    mkdir -p "$DEVICE_DIR/wheels"
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
    local platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platform_args[@]}" -d "$DEVICE_DIR/wheels" "${WHEELS[@]}" || exit 1
    cp ../shared/vendor/comfyui-0.3.64.tar.gz "$DEVICE_DIR/" || exit 1
    if [ -d ../shared/reference/golden/audio_stage1 ]; then  # the measured face (three .npy files)
        mkdir -p "$DEVICE_DIR/face" && cp ../shared/reference/golden/audio_stage1/ref_*.npy "$DEVICE_DIR/face/"
    fi
    du -sh "$DEVICE_DIR"
    echo "carry: .device (the device tool's 'carry' argument)"
}

setup_device() {
    mkdir -p "$OUT"
    FACE=()
    [ -d "$DEVICE_DIR/face" ] && FACE=(--face "$DEVICE_DIR/face")
    if [ -n "${DRY_RUN:-}" ]; then W=${W/--full-size/}; return; fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$DEVICE_DIR"/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/session.log"
    python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/session.log"
}

# step NAME SECONDS COMMAND...: run one measurement with a time limit; a failure is logged, the next step still runs
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$OUT/session.log"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc $rc after $((SECONDS - start)) s" | tee -a "$OUT/session.log"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   | /' | tee -a "$OUT/session.log"
}

smoke() {  # smoke NAME SECONDS extra-args...
    local name=$1 limit=$2
    shift 2
    step "$name" "$limit" "$PYTHON" scripts/gpu_node_smoke.py --comfy-tar "$DEVICE_DIR/comfyui-0.3.64.tar.gz" $W \
        "${FACE[@]}" --json "$OUT/$name.json" "$@" "${EXTRA_ARGS[@]}"
}

part1() {
    setup_device
    smoke normal 200
    smoke lowvram 150 --lowvram
    smoke free6_lowvram 150 --free-vram 6 --lowvram
}

part2() {
    setup_device
    smoke own_window_batch2 120 --path own --window-batch 2 --decode none
    smoke native_compiled 240 --path native --compile inductor --decode none
    smoke frames300 200 --frames 300 --decode none
    local where=(--full-size --device cuda --dtype fp16 --size 512)
    [ -n "${DRY_RUN:-}" ] && where=(--device cpu --dtype fp32 --size 72)
    step stage2_options 150 "$PYTHON" scripts/benchmark_stage2.py "${where[@]}" \
        --frames 48 --steps 10 --compare kv-per-call kv-kept wb2 wb4 --repeats 1
}

case "${1:-}" in
    prepare) prepare ;;
    part1) part1 ;;
    part2) part2 ;;
    *) echo "usage: bash scripts/device_session.sh prepare|part1|part2" >&2; exit 2 ;;
esac
