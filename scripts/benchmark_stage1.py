"""Stage-1 speed on this machine: full-size Audio2Mesh/Audio2Pose (random weights), a 10 s clip.

Reports frames of pose output per second for the whole stage 1 (features -> meshes -> poses ->
projection -> pose images) and for Audio2Pose alone, with the KV-cached decoder and (``--baseline``)
with the original's full recompute per frame.

    python scripts/benchmark_stage1.py [--seconds 10] [--baseline] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aniportrait_lib import random_weights  # noqa: E402
from aniportrait_lib.audio import features as feats  # noqa: E402
from aniportrait_lib.audio import inference, models  # noqa: E402
from aniportrait_lib.face import renderer  # noqa: E402
from aniportrait_lib.motion import MotionSequence, project_motion  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--baseline", action="store_true", help="also time the original's full-recompute Audio2Pose (slow)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    a2m = models.load_audio2mesh(random_weights.audio2mesh_state_dict(0, full_size=True))
    a2p = models.load_audio2pose(random_weights.audio2pose_state_dict(1, full_size=True))
    t_load = time.perf_counter() - t0

    n = int(args.seconds * 16000)
    rng = np.random.default_rng(0)
    t = np.arange(n) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)).astype(np.float32)
    values, frames = feats.prepare_audio(wave[None, None], 16000)
    f = inference.AudioFeatures(values, frames)
    canonical = np.zeros((468, 3))
    trans = np.eye(4)
    trans[2, 3] = -60.0

    timings = {}
    with torch.inference_mode():
        s = time.perf_counter(); offsets = inference.predict_mesh_offsets(a2m, f); timings["audio2mesh"] = time.perf_counter() - s
        s = time.perf_counter(); poses = inference.predict_poses(a2p, f, style_id=0); timings["audio2pose (KV cache)"] = time.perf_counter() - s
        motion = MotionSequence(offsets + canonical, poses)
        s = time.perf_counter(); lmk = project_motion(motion, trans, 512, 512); timings["projection"] = time.perf_counter() - s
        s = time.perf_counter(); renderer.draw_pose_images(lmk.points, 512, 512); timings["render 512x512"] = time.perf_counter() - s
        total = sum(timings.values())
        if args.baseline:
            chunks = inference.plan_pose_chunks(values.shape[0], frames)
            s = time.perf_counter()
            for c in chunks:
                a2p.generate_full_recompute(torch.from_numpy(values[c.start:c.end])[None], c.num_frames, 0)
            timings["audio2pose (original full recompute)"] = time.perf_counter() - s

    print(f"clip {args.seconds:.1f} s -> {frames} frames; torch {torch.__version__}, {torch.get_num_threads()} threads; model load {t_load:.1f} s")
    for k, v in timings.items():
        print(f"  {k:40s} {v:8.2f} s  ({frames / v:8.1f} frames/s)")
    print(f"  {'stage 1 total':40s} {total:8.2f} s  ({frames / total:8.1f} frames/s)")


if __name__ == "__main__":
    main()
