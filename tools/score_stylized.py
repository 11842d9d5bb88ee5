"""Score Face From Points on the hand-annotated stylized faces (``../shared/assets/stylized``).

For each image of ``points.json`` the face is placed the way the node places it (the position text through
:func:`aniportrait_lib.face.placement.place_reference`) and each annotated point is compared with the placed
face's landmark for it, as a distance divided by the distance between the two given eye centres (IOD):

* five: the five given points (eye centres = mean of each eye contour, nose tip 4, mouth corners 61/291);
* eye corners: 33 / 133 (image-left eye outer / inner), 362 / 263 (image-right eye inner / outer);
* lips: 0 (upper-lip top), 17 (lower-lip bottom);  chin: 152.

Rows: ``points`` (the five points, fit pose and frontal), ``points+extra`` (the eye corners, lips and chin given
too: scored on the same points, so it shows the fit can follow them; fails on code that cannot read them), and
``box`` (the annotated ``face_box``, which may reach past the image). Means over the images whose IOD is at
least 60 px (smaller faces: the annotation uncertainty, 2-6 px, dominates) and over all images.

    python tools/score_stylized.py [--assets ../shared/assets] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aniportrait_lib.face import placement  # noqa: E402
from aniportrait_lib.face.geometry import load_canonical_model  # noqa: E402
from support.paths import shared_assets_dir  # noqa: E402

#: points.json names the character's own left/right; the pack's left/right are as seen in the image, so the
#: character's right eye is the pack's left eye. name in points.json -> (name in the pack's text, mesh vertex or
#: "eye" for an eye-contour mean)
ANNOTATION = {
    "right_eye_centre": ("left_eye", "eye_left"), "left_eye_centre": ("right_eye", "eye_right"),
    "nose_tip": ("nose", 4), "right_mouth_corner": ("left_mouth", 61), "left_mouth_corner": ("right_mouth", 291),
    "right_eye_outer": ("left_eye_outer", 33), "right_eye_inner": ("left_eye_inner", 133),
    "left_eye_inner": ("right_eye_inner", 362), "left_eye_outer": ("right_eye_outer", 263),
    "upper_lip_top": ("upper_lip", 0), "lower_lip_bottom": ("lower_lip", 17), "chin": ("chin", 152),
}
FIVE = ("right_eye_centre", "left_eye_centre", "nose_tip", "right_mouth_corner", "left_mouth_corner")
GROUPS = {"five": FIVE, "eye corners": ("right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer"),
          "lips": ("upper_lip_top", "lower_lip_bottom"), "chin": ("chin",)}
#: the faces the targets are about: eye centres at least this far apart (px)
MIN_IOD = 60.0


def placed_point(landmarks_px: np.ndarray, vertex) -> np.ndarray:
    if vertex == "eye_left":
        return landmarks_px[list(placement.IMAGE_LEFT_EYE)].mean(0)
    if vertex == "eye_right":
        return landmarks_px[list(placement.IMAGE_RIGHT_EYE)].mean(0)
    return landmarks_px[vertex]


def position_text(points: dict, extra: bool) -> str:
    """The node's position text: the five points in order, then (``extra``) the others by name."""
    text = "; ".join(f"{points[k][0]:g},{points[k][1]:g}" for k in FIVE)
    if extra:
        text += "".join(f"; {ANNOTATION[k][0]}={points[k][0]:g},{points[k][1]:g}" for k in ANNOTATION if k not in FIVE)
    return text


def score_face(face, points: dict) -> dict[str, float]:
    """Mean distance / IOD per group of :data:`GROUPS` between the annotated points and the placed face's."""
    px = face.landmarks_px()
    iod = float(np.linalg.norm(np.subtract(points["left_eye_centre"], points["right_eye_centre"])))
    return {group: float(np.mean([np.linalg.norm(placed_point(px, ANNOTATION[k][1]) - points[k]) / iod for k in keys]))
            for group, keys in GROUPS.items()}


def score_all(assets: Path, model) -> list[dict]:
    """One row per image and variant: ``{"image", "iod", "variant", "scores" | "error"}``."""
    folder = assets / "stylized"
    table = json.loads((folder / "points.json").read_text())
    rows = []
    for key, item in table.items():
        with Image.open(folder / item["file"]) as image:
            size = image.size  # the first frame's
        points = {k: np.asarray(v, dtype=np.float64) for k, v in item["points"].items()}
        iod = float(np.linalg.norm(points["left_eye_centre"] - points["right_eye_centre"]))
        variants = [("points pose", "points", position_text(item["points"], False), "pose"),
                    ("points frontal", "points", position_text(item["points"], False), "frontal"),
                    ("points+extra pose", "points", position_text(item["points"], True), "pose"),
                    ("box", "box", ",".join(f"{v:g}" for v in item["face_box"]), "pose")]
        for name, mode, text, fit in variants:
            row = {"image": f"{key} {item['file']}", "iod": iod, "variant": name}
            try:
                placed, _ = placement.place_reference(model, size, mode, text, fit)
                row["scores"] = score_face(placed.face, points)
            except ValueError as e:
                row["error"] = str(e)
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per variant, the mean scores over images with IOD >= :data:`MIN_IOD` and over all images."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for label, keep in ((f"IOD >= {MIN_IOD:g} px", lambda r: r["iod"] >= MIN_IOD), ("all", lambda r: True)):
            chosen = [r for r in rows if r["variant"] == variant and keep(r)]
            scored = [r["scores"] for r in chosen if "scores" in r]
            out.append({"variant": variant, "over": label, "images": len(chosen), "failed": len(chosen) - len(scored),
                        "scores": {g: float(np.mean([s[g] for s in scored])) for g in GROUPS} if scored else None})
    return out


def markdown(rows: list[dict], summary: list[dict]) -> str:
    head = "| image | IOD px | variant | " + " | ".join(GROUPS) + " |\n|" + " --- |" * (3 + len(GROUPS))
    lines = [head]
    for r in rows:
        cells = ([f"{100 * r['scores'][g]:.1f}%" for g in GROUPS] if "scores" in r
                 else [f"refused: {r['error'][:60]}"] + [""] * (len(GROUPS) - 1))
        lines.append(f"| {r['image']} | {r['iod']:.0f} | {r['variant']} | " + " | ".join(cells) + " |")
    lines += ["", "| mean over | variant | images (failed) | " + " | ".join(GROUPS) + " |",
              "|" + " --- |" * (3 + len(GROUPS))]
    for s in summary:
        cells = [f"{100 * s['scores'][g]:.1f}%" for g in GROUPS] if s["scores"] else ["-"] * len(GROUPS)
        lines.append(f"| {s['over']} | {s['variant']} | {s['images']} ({s['failed']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=shared_assets_dir())
    parser.add_argument("--json", type=Path, help="also write the rows and means as JSON here")
    args = parser.parse_args()
    model = load_canonical_model(args.assets / "face_landmarker.task")
    rows = score_all(args.assets, model)
    summary = summarise(rows)
    print(markdown(rows, summary))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "means": summary}, indent=1))


if __name__ == "__main__":
    main()
