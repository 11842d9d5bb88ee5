"""How much of a face Paste Back fully replaces, by face size: the fixed 24 px feather vs the face-relative one.

The astronaut photo (``skimage.data.astronaut``) and its MediaPipe landmarks are scaled so that the face
size (mean of the landmark box's width and height, :func:`aniportrait_lib.compose.face_box`) is 40 ... 400
px; a ``turned`` variant squeezes the landmarks to 0.6 of their width about the face centre (a head turned
to the side: a narrow hull, the hardest case for the share). Each face is cropped at the default framing
(512 x 512), the crop is pasted back with :func:`aniportrait_lib.compose.paste_frames`, and the uint8 mask
is read:

* ``mask``: the share of the mask's pixels (mask > 0) that are fully replaced (mask == 255);
* ``hull``: the share of the landmarks' own outline (the hull, not expanded) fully replaced;
* ``ramp``: the feather width in pixels.

    python tools/measure_feather.py [--assets ../shared/assets] [--feather 0.05] [--sweep]

``--sweep`` also prints the frontal and turned face-mask share for feathers 0.03 ... 0.08.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from aniportrait_lib import compose  # noqa: E402
from aniportrait_lib.compose import paste  # noqa: E402
from aniportrait_lib.data import CropInfo  # noqa: E402
from aniportrait_lib.face.landmarker import FaceLandmarker  # noqa: E402

SIZES = (40, 56, 80, 120, 200, 400)
OLD_FEATHER_PX = 24
CROP = (512, 512)


def astronaut(assets: Path) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo ``(512, 512, 3)`` uint8 and its ``(478, 2)`` landmarks in pixels."""
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    with FaceLandmarker(assets / "face_landmarker.task") as landmarker:
        return photo, landmarker.analyze(photo).landmarks_px()


def scaled_face(photo: np.ndarray, points: np.ndarray, size: float, turned: bool) -> tuple[np.ndarray, CropInfo]:
    """The photo resized so the face is ``size`` px, and a one-frame crop info at the default framing."""
    if turned:
        centre = points.mean(axis=0)
        points = centre + (points - centre) * [0.6, 1.0]
    k = size / paste.face_size(np.zeros(4), points)
    image = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    points = points * k
    box = compose.crop_box_for_face(compose.face_box(points), CROP)
    return image, CropInfo(box[None], (image.shape[1], image.shape[0]), CROP, points[None])


def measure(image: np.ndarray, info: CropInfo, mask: str, feather_px: float) -> tuple[float, float]:
    """(share of the mask fully replaced, share of the landmark hull fully replaced) for one paste."""
    crops = compose.crop_frames(image[None], info.boxes, CROP)
    points = info.face_points[0] if mask == "face" else None
    # a width in pixels as half of a face 2 * feather_px wide (the old 24 px exceed 0.5 face sizes on a 40 px face)
    window, _, mask_float = paste.paste_frame(crops[0], image, info.boxes[0], points, compose.DEFAULT_EXPAND,
                                              paste.MAX_FEATHER, False, feather_px / paste.MAX_FEATHER)
    x0, y0, x1, y1 = window
    weights = np.zeros(image.shape[:2], np.uint8)
    weights[y0:y1, x0:x1] = compose.crop.to_uint8(mask_float * 255.0)  # as paste_frames stores it
    window = (0, 0, image.shape[1], image.shape[0])
    hull = compose.face_mask(np.array([-1e9, -1e9, 1e9, 1e9]), window, info.face_points[0], 0.0).astype(bool)
    return np.count_nonzero(weights == 255) / np.count_nonzero(weights), np.count_nonzero(weights[hull] == 255) / hull.sum()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    ap.add_argument("--feather", type=float, default=compose.DEFAULT_FEATHER, help="face sizes (default: the pack's)")
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    photo, points = astronaut(args.assets)
    cases = {size: {turned: scaled_face(photo, points, size, turned) for turned in (False, True)} for size in SIZES}
    print(f"share of the mask fully replaced (mask == 255), before: {OLD_FEATHER_PX} px, after: {args.feather} face sizes")
    print(f"{'face':>6} | {'face mask':^29} | {'face mask, turned head':^29} | {'box mask':^29} | ramp after")
    print(f"{'':>6} | {'before':>8} {'after':>8} {'hull':>11} | {'before':>8} {'after':>8} {'hull':>11} | "
          f"{'before':>8} {'after':>8} {'hull':>11} |")
    worst = 1.0
    for size in SIZES:
        cells = []
        for mask, turned in (("face", False), ("face", True), ("box", False)):
            image, info = cases[size][turned]
            before, _ = measure(image, info, mask, OLD_FEATHER_PX)
            after, hull = measure(image, info, mask, args.feather * paste.face_size_of(info, 0))
            worst = min(worst, after)
            cells.append(f"{before:8.1%} {after:8.1%} {'hull ' + format(hull, '.1%'):>11}")
        print(f"{size:4d}px | " + " | ".join(cells) + f" | {args.feather * size:5.1f} px")
    print(f"worst share after: {worst:.1%} (target >= 80%)")
    if args.sweep:
        fractions = (0.03, 0.04, 0.05, 0.06, 0.07, 0.08)
        print("\nface mask share by feather (frontal / turned):")
        print(f"{'face':>6} | " + " | ".join(f"{f:^13}" for f in fractions))
        for size in SIZES:
            row = []
            for f in fractions:
                shares = [measure(*cases[size][turned], "face", f * size)[0] for turned in (False, True)]
                row.append(f"{shares[0]:5.1%} {shares[1]:5.1%}")
            print(f"{size:4d}px | " + " | ".join(row))


if __name__ == "__main__":
    main()
