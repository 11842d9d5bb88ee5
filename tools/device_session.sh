#!/usr/bin/env bash
# Issue 12's GPU measurements as one prepared run for a borrowed GPU machine (H100/H200 class; Python 3.12 with
# torch, no internet, ~15 minutes of device time in all).
#
# Here, with PyPI access (once per session; writes .device/, which git ignores):
#     bash tools/device_session.sh prepare
# On the device machine (the repo's root; carry .device; each part ends well inside a 10-minute command):
#     bash tools/device_session.sh part1     # node path at 512x512, 25 steps, 48 frames: normal and 6 GB free +
#                                              # --lowvram (~4-5 min)
#     bash tools/device_session.sh part2     # ours (node, library) vs the ORIGINAL in one run, 48 frames (~4-6 min)
#     bash tools/device_session.sh part3     # 300 frames (VRAM flat in length), window_batch 2, the sampler compiled,
#                                              # --lowvram alone, sampler options side by side (library)
# part1 and part2 hold the issue's targets (s/frame and peak VRAM through the node, 8 GB cards, >= 3x the
# original): run them first, each as one device command; part3 if device time is left.
# Results: JSON/text files in $OUT (default ./out), one per measurement, plus session.log; copy the numbers into
# BENCHMARKS.md ("Stage 2 on the H100"; the sampler options beside the CPU ones in "Stage 2, small config (CPU)").
# The own path is AniPortrait Load Video Model -> Video Conditioning -> AniPortrait Sampler (gpu_node_smoke.py
# times the conditioning apart: older own_sampler_s figures compare with own_conditioning_s + own_sampler_s).
#
# Dry run of the plumbing on a CPU machine (no wheels installed, tiny sizes; later arguments win):
#     DRY_RUN=1 PYTHON=~/.cache/aniportrait-ci/venv/bin/python EXTRA="--cpu --size 64 --steps 1 --frames 20" \
#         bash tools/device_session.sh part1
#
# Which packages travel: what a CPU dry run of tools/gpu_node_smoke.py imports (a sitecustomize hook listing
# sys.modules' distributions, 2026-11-30) minus what the device image has (the device tool's KINDS.md): av,
# diffusers, soxr, torchsde, trampoline, at the versions this pack's test venv uses. Face detection (mediapipe)
# does not run there: the measurements take the golden case's face or a synthetic one.
# The original (tools/benchmark_vs_original.py, Zejun-Yang/AniPortrait at 7f6593f) runs on the device's Python 3.12
# and torch, with the older packages its code imports first on its worker's PYTHONPATH (ORIGINAL_WHEELS: its
# diffusers pin; huggingface_hub 0.25, the last with the `cached_download` that diffusers 0.24 imports; transformers
# 4.46 + tokenizers 0.20 instead of its 4.30 pin, whose tokenizers < 0.14 has no Python 3.12 wheel; omegaconf). Its
# source travels in .device/original_src (git-ignored, never part of the pack). Checked on this CPU with torch 2.13,
# numpy 2.4 and accelerate 1.15 beside it: same latents as ours within 9e-6.
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=$(pwd)
DEVICE_DIR="$HERE/.device"
OUT=${OUT:-$HERE/out}
WHEELS=("av==18.1.0" "diffusers==0.42.1" "soxr==1.1.0" "torchsde==0.2.6" "trampoline==0.1.2")
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
W="--weights-dir /tmp/ap_weights --full-size --size 512 --steps 25 --frames 48"
ORIGINAL_WHEELS=("diffusers==0.24.0" "huggingface_hub==0.25.2" "transformers==4.46.3" "tokenizers==0.20.3"
                 "omegaconf==2.3.0")
ORIGINAL_SDIST_WHEELS=("antlr4-python3-runtime==4.9.3")  # omegaconf's parser: an sdist only, built here (pure Python)
ORIGINAL_SRC=${ORIGINAL_SRC:-$HOME/.cache/aniportrait-original/src}
ORIGINAL_SITE=${ORIGINAL_SITE:-/tmp/original_site}  # where packages.tar.xz puts them on the device
STAGE=/tmp/aniportrait-device-stage
PYTHON=${PYTHON:-python3}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"

prepare() {
    mkdir -p "$DEVICE_DIR"
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
    rm -rf "$DEVICE_DIR/wheels" "$DEVICE_DIR/original_wheels" "$STAGE" && mkdir -p "$STAGE/wheels" "$STAGE/original_wheels"
    local platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platform_args[@]}" -d "$STAGE/wheels" "${WHEELS[@]}" || exit 1
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platform_args[@]}" -d "$STAGE/original_wheels" "${ORIGINAL_WHEELS[@]}" || exit 1
    python3 -m pip wheel -q --no-deps -w "$STAGE/original_wheels" "${ORIGINAL_SDIST_WHEELS[@]}" || exit 1
    # The wheels unpacked (what pip install --target writes for these: no compiled scripts, no .pth) and packed
    # with xz: 58 MB of wheels become ~34 MB, which leaves room in the 64 MiB a device call carries.
    local kind whl
    for kind in wheels original_wheels; do
        mkdir -p "$STAGE/unpacked/${kind/wheels/site}"
        for whl in "$STAGE/$kind"/*.whl; do unzip -q -o "$whl" -d "$STAGE/unpacked/${kind/wheels/site}" || exit 1; done
    done
    XZ_OPT=-T0 tar -C "$STAGE/unpacked" -cJf "$DEVICE_DIR/packages.tar.xz" site original_site || exit 1
    if [ -f "$ORIGINAL_SRC/src/pipelines/pipeline_pose2vid_long.py" ]; then  # tools/setup_original_env.sh made it
        # only what its pose2video pipeline imports and reads
        rm -rf "$DEVICE_DIR/original_src" && mkdir -p "$DEVICE_DIR/original_src/src" \
            "$DEVICE_DIR/original_src/configs/inference"
        cp -r "$ORIGINAL_SRC/src/models" "$ORIGINAL_SRC/src/pipelines" "$DEVICE_DIR/original_src/src/" || exit 1
        cp "$ORIGINAL_SRC"/src/*.py "$DEVICE_DIR/original_src/src/" 2>/dev/null
        cp "$ORIGINAL_SRC"/configs/inference/*.yaml "$DEVICE_DIR/original_src/configs/inference/" || exit 1
        cp "$ORIGINAL_SRC/LICENSE" "$DEVICE_DIR/original_src/" || exit 1
    else
        echo "no original source at $ORIGINAL_SRC (tools/setup_original_env.sh): part2 will skip vs_original" >&2
    fi
    cp ../shared/vendor/comfyui-0.3.64.tar.gz "$DEVICE_DIR/" || exit 1
    if [ -d ../shared/reference/golden/audio_stage1 ]; then  # the measured face (three .npy files)
        mkdir -p "$DEVICE_DIR/face" && cp ../shared/reference/golden/audio_stage1/ref_*.npy "$DEVICE_DIR/face/"
    fi
    rm -rf "$STAGE"
    # a device call carries the working tree AND the carried paths, 64 MiB in all
    local tree device
    tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
    device=$(du -sb "$DEVICE_DIR" | cut -f1)
    echo "$DEVICE_DIR: $((device / 1048576)) MiB, tracked files: $((tree / 1048576)) MiB"
    [ $((tree + device)) -lt $((62 * 1048576)) ] || { echo "over the 64 MiB a device call carries" >&2; exit 1; }
    echo "carry: .device (the device tool's 'carry' argument)"
}

setup_device() {
    mkdir -p "$OUT"
    FACE=()
    [ -d "$DEVICE_DIR/face" ] && FACE=(--face "$DEVICE_DIR/face")
    if [ -n "${DRY_RUN:-}" ]; then W=${W/--full-size/}; return; fi
    tar -C /tmp -xJf "$DEVICE_DIR/packages.tar.xz" || exit 1  # /tmp/site and /tmp/original_site
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
    step "$name" "$limit" "$PYTHON" tools/gpu_node_smoke.py --comfy-tar "$DEVICE_DIR/comfyui-0.3.64.tar.gz" $W \
        "${FACE[@]}" --json "$OUT/$name.json" "$@" "${EXTRA_ARGS[@]}"
}

vs_original() {  # ours (node and library) vs the original, same process layout, weights and inputs
    local src=${ORIGINAL_SRC_ON_DEVICE:-$DEVICE_DIR/original_src}
    if [ ! -d "$src/src" ]; then echo "== vs_original skipped: no $src" | tee -a "$OUT/session.log"; return; fi
    local where=(--full-size --device cuda --dtype fp16 --size 512 --steps 25 --threads 8)
    [ -n "${DRY_RUN:-}" ] && where=(--device cpu --dtype fp32 --size 72 --steps 2 --threads 1)
    step vs_original 480 "$PYTHON" tools/benchmark_vs_original.py "${where[@]}" --frames 48 \
        --sides original ours-node ours-lib --original-in-our-venv --original-src "$src" \
        --original-site "$ORIGINAL_SITE" --comfyui /tmp/vs_comfy/ComfyUI \
        --comfy-tar "$DEVICE_DIR/comfyui-0.3.64.tar.gz" --work /tmp/ap_vs --json "$OUT/vs_original.json"
}

part1() {
    setup_device
    smoke normal 280
    smoke free6_lowvram 240 --free-vram 6 --lowvram
}

part2() {
    setup_device
    vs_original
}

part3() {
    setup_device
    smoke frames300 200 --frames 300 --steps 3 --decode none --no-rerun  # a memory check, like the 2026-11 H100 one
    smoke own_window_batch2 150 --path own --window-batch 2 --decode none
    smoke own_compiled 300 --path own --compile inductor --decode none  # the sampler's compile input
    smoke lowvram 200 --lowvram
    local where=(--full-size --device cuda --dtype fp16 --size 512)
    [ -n "${DRY_RUN:-}" ] && where=(--device cpu --dtype fp32 --size 72)
    step stage2_options 150 "$PYTHON" tools/benchmark_stage2.py "${where[@]}" \
        --frames 48 --steps 10 --compare kv-kept channels-last wb2 kv-per-call --repeats 1
}

case "${1:-}" in
    prepare) prepare ;;
    part1) part1 ;;
    part2) part2 ;;
    part3) part3 ;;
    *) echo "usage: bash tools/device_session.sh prepare|part1|part2|part3" >&2; exit 2 ;;
esac
