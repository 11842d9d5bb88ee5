"""Stage-1 speed and memory on this machine: full-size Audio2Mesh/Audio2Pose (random weights).

For each clip length, runs stage 1 (audio features -> Audio2Mesh -> Audio2Pose -> projection) in a
fresh subprocess per code path and reports frames/s, seconds per part and the subprocess's peak RSS
(``ru_maxrss``):

* ``before``: the previous code path (Audio2Mesh over the whole clip, Audio2Pose chunk after chunk);
* ``after``: the defaults (Audio2Mesh in cross-faded windows above ``WHOLE_CLIP_SECONDS``, Audio2Pose
  chunks decoded as one batch).

``--deviation 30 60`` instead measures how far the windowed Audio2Mesh is from the whole-clip pass.
``--baseline`` also times the original's full-recompute Audio2Pose (slow) in the single-run mode.

    python tools/benchmark_stage1.py [--lengths 10 60 180 600] [--paths before after] [--threads N]
    python tools/benchmark_stage1.py --one 60 --path after          # one run in this process
    python tools/benchmark_stage1.py --deviation 30 60
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support import random_weights  # noqa: E402
from aniportrait_lib.audio import features as feats  # noqa: E402
from aniportrait_lib.audio import inference, models  # noqa: E402
from aniportrait_lib.face import pose_math  # noqa: E402


def _wave(seconds: float) -> np.ndarray:
    n = int(seconds * 16000)
    rng = np.random.default_rng(0)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)).astype(np.float32)


def _models():
    a2m = models.load_audio2mesh(random_weights.audio2mesh_state_dict(0, full_size=True))
    a2p = models.load_audio2pose(random_weights.audio2pose_state_dict(1, full_size=True))
    return a2m, a2p


def run_one(seconds: float, path: str, baseline: bool = False, render: bool = False) -> dict:
    """Stage 1 on a ``seconds`` clip with the ``before`` or ``after`` code path; timings in seconds."""
    old = path == "before"
    t0 = time.perf_counter()
    a2m, a2p = _models()
    t_load = time.perf_counter() - t0
    wave = _wave(seconds)
    timings = {}
    with torch.inference_mode():
        s = time.perf_counter()
        f = feats.audio_features(wave[None, None], 16000)
        timings["features"] = time.perf_counter() - s
        s = time.perf_counter()
        offsets = inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=None if old else inference.WHOLE_CLIP_SECONDS)
        timings["audio2mesh"] = time.perf_counter() - s
        s = time.perf_counter()
        poses = inference.predict_poses(a2p, f, style_id=0, batched=not old)
        timings["audio2pose"] = time.perf_counter() - s
        canonical = np.zeros((468, 3))
        trans = np.eye(4)
        trans[2, 3] = -60.0
        s = time.perf_counter()
        points = pose_math.project_points(offsets.astype(np.float64) + canonical, trans, poses, 512, 512)
        timings["projection"] = time.perf_counter() - s
        total = sum(timings.values())
        if render:
            from aniportrait_lib.face import renderer

            s = time.perf_counter()
            renderer.draw_pose_images(points, 512, 512)
            timings["render 512x512 (not in stage 1 total)"] = time.perf_counter() - s
        if baseline:
            chunks = inference.plan_pose_chunks(f.input_values.shape[0], f.num_frames)
            s = time.perf_counter()
            for c in chunks:
                a2p.generate_full_recompute(torch.from_numpy(f.input_values[c.start:c.end])[None], c.num_frames, 0)
            timings["audio2pose (original full recompute)"] = time.perf_counter() - s
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"seconds": seconds, "path": path, "frames": f.num_frames, "threads": torch.get_num_threads(),
            "load_s": t_load, "timings": timings, "total_s": total, "fps": f.num_frames / total, "peak_rss_gib": rss_gib}


def deviation(seconds: float) -> dict:
    """Windowed vs whole-clip Audio2Mesh on a ``seconds`` clip (the window forced on whatever the length)."""
    a2m, _ = _models()
    f = feats.audio_features(_wave(seconds)[None, None], 16000)
    whole = inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=None)
    win = inference.predict_mesh_offsets(a2m, f, whole_clip_seconds=0.0)
    err = np.abs(win - whole)
    return {"seconds": seconds, "frames": f.num_frames, "window_s": inference.WINDOW_SECONDS, "overlap_s": inference.OVERLAP_SECONDS,
            "max_abs_cm": float(err.max()), "mean_abs_cm": float(err.mean()), "whole_max_abs_cm": float(np.abs(whole).max()),
            "rms_rel": float(np.sqrt((err**2).mean()) / np.sqrt((whole**2).mean()))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 180, 600])
    ap.add_argument("--paths", nargs="+", default=["before", "after"], choices=["before", "after"])
    ap.add_argument("--one", type=float, help="run one length in this process (used by the parent run)")
    ap.add_argument("--path", default="after", choices=["before", "after"])
    ap.add_argument("--baseline", action="store_true", help="also time the original's full-recompute Audio2Pose (slow)")
    ap.add_argument("--render", action="store_true", help="also render 512x512 pose images (held in memory: ~24 MB per second)")
    ap.add_argument("--deviation", type=float, nargs="+", help="windowed-vs-whole Audio2Mesh deviation at these lengths")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.deviation:
        for s in args.deviation:
            print(json.dumps(deviation(s)), flush=True)
        return
    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args.one, args.path, args.baseline, args.render)), flush=True)
        return

    rows = []
    for seconds in args.lengths:
        for path in args.paths:
            cmd = [sys.executable, __file__, "--one", str(seconds), "--path", path]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{seconds:g} s {path}: failed (rc {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(line[7:])
            rows.append(r)
            t = r["timings"]
            print(f"{seconds:6g} s {path:6s} {r['frames']:6d} frames  {r['fps']:7.1f} frames/s  "
                  + "  ".join(f"{k} {v:.2f}s" for k, v in t.items())
                  + f"  peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    print(f"\ntorch {torch.__version__}, {rows[0]['threads'] if rows else '?'} threads")
    print("| clip | path | frames | features s | Audio2Mesh s | Audio2Pose s | projection s | total s | frames/s | peak RSS GiB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        t = r["timings"]
        print(f"| {r['seconds']:g} s | {r['path']} | {r['frames']} | {t['features']:.2f} | {t['audio2mesh']:.2f} | {t['audio2pose']:.2f} "
              f"| {t['projection']:.2f} | {r['total_s']:.2f} | {r['fps']:.1f} | {r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
