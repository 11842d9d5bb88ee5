"""Frame-to-frame jitter of the face-crop window on the two real test clips, raw vs smoothed.

Prints, per clip, the mean/max frame-to-frame change of the window centre (Euclidean, px) and of its
width (px), for the raw per-frame windows (face-less frames filled by interpolation) and after
:func:`aniportrait_lib.compose.smooth_boxes` with the default window (and ``--window``).

    python tools/benchmark_crop_jitter.py [--assets ../shared/assets] [--window 9] [--size 512]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aniportrait_lib import compose  # noqa: E402
from aniportrait_lib.face import tracking  # noqa: E402
from aniportrait_lib.face.landmarker import FaceLandmarker  # noqa: E402
from support.faces import box_jitter  # noqa: E402  (the measure the crop test uses)

CLIPS = ("api_kling_avatar2-1.webp", "video_wan2_2_14B_s2v-1.webp")


def read_webp(path: Path) -> np.ndarray:
    with Image.open(path) as clip:
        frames = []
        for i in range(clip.n_frames):
            clip.seek(i)
            frames.append(np.asarray(clip.convert("RGB")))
    return np.stack(frames)


def line(label: str, stats: dict[str, float]) -> str:
    return (f"  {label:<14} centre mean {stats['centre_mean']:6.2f} px  max {stats['centre_max']:6.2f} px   "
            f"size mean {stats['size_mean']:6.2f} px  max {stats['size_max']:6.2f} px")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    ap.add_argument("--window", type=int, default=compose.DEFAULT_SMOOTHING)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    with FaceLandmarker(args.assets / "face_landmarker.task") as landmarker:
        for name in CLIPS:
            frames = read_webp(args.assets / "real" / name)
            tracked = tracking.track_faces(frames, landmarker, "interpolate")
            size = (args.size, args.size)
            raw = compose.crop_info_for_faces(tracked, size, smoothing=1).boxes
            smooth = compose.crop_info_for_faces(tracked, size, smoothing=args.window).boxes
            print(f"{name}: {len(frames)} frames, {tracked.summary()}, window width {np.mean(raw[:, 2] - raw[:, 0]):.0f} px")
            print(line("raw", box_jitter(raw)))
            print(line(f"smoothed ({args.window})", box_jitter(smooth)))


if __name__ == "__main__":
    main()
