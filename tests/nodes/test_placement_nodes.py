"""AniPortrait Face From Points called in-process with real ComfyUI types."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from conftest import shared_assets_dir


def _anime_face(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A flat anime-style drawing MediaPipe finds no face in, and its five points (as tests/lib/test_placement.py)."""
    import cv2

    s = size / 512
    img = np.full((size, size, 3), (200, 225, 250), np.uint8)

    def p(x, y):
        return int(round(x * s)), int(round(y * s))

    cv2.ellipse(img, p(256, 250), p(230, 230), 0, 180, 360, (60, 40, 90), -1)
    cv2.ellipse(img, p(256, 280), p(150, 175), 0, 0, 360, (205, 225, 255), -1)
    cv2.rectangle(img, p(100, 150), p(412, 200), (60, 40, 90), -1)
    for ex, ey in ((196, 290), (316, 290)):
        cv2.ellipse(img, p(ex, ey), p(34, 44), 0, 0, 360, (255, 255, 255), -1)
        cv2.ellipse(img, p(ex, ey + 4), p(26, 38), 0, 0, 360, (180, 60, 40), -1)
        cv2.circle(img, p(ex, ey + 6), int(14 * s), (40, 10, 10), -1)
        cv2.circle(img, p(ex - 10, ey - 12), int(9 * s), (255, 255, 255), -1)
        cv2.ellipse(img, p(ex, ey - 40), p(40, 10), 0, 180, 360, (30, 20, 30), int(5 * s))
    cv2.circle(img, p(256, 355), int(3 * s), (150, 160, 210), -1)
    cv2.line(img, p(236, 400), p(276, 400), (80, 80, 200), int(4 * s))
    return img, np.array([[196, 290], [316, 290], [256, 355], [236, 400], [276, 400]], float) * s


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float().div(255.0)[None]


def _ui_text(output) -> str:
    return output.ui.as_dict()["text"][0] if output.ui is not None else ""


@pytest.fixture(scope="module")
def nodes(pack):
    from aniportrait_pack.nodes import face, loaders, placement

    folder = pack.work_dir / "models" / "aniportrait"
    shutil.copyfile(shared_assets_dir() / "face_landmarker.task", folder / "face_landmarker.task")
    return type("Nodes", (), dict(face=face, loaders=loaders, placement=placement))


@pytest.fixture(scope="module")
def landmarker(nodes):
    return nodes.loaders.LoadFaceLandmarker.execute("face_landmarker.task").result[0]


def test_node_is_registered(pack):
    import asyncio

    from aniportrait_pack import nodes as pack_nodes

    listed = asyncio.run(asyncio.run(pack_nodes.comfy_entrypoint()).get_node_list())
    assert any(n.__name__ == "FaceFromPoints" for n in listed)


def test_anime_drawing_face_from_typed_points(nodes, landmarker):
    image, points = _anime_face()
    with pytest.raises(ValueError, match=r"^no face was found.*AniPortrait Face From Points") as info:
        nodes.face.FaceAnalysis.execute(landmarker, _image(image))
    assert type(info.value) is ValueError
    text = "; ".join(f"{x:g},{y:g}" for x, y in points)
    out = nodes.placement.FaceFromPoints.execute(landmarker, _image(image), "points", text, "pose")
    face, pose = out.result
    assert face.image_size == (512, 512) and face.landmarks.shape == (478, 3) and tuple(pose.shape) == (1, 512, 512, 3)
    assert float(pose.max()) > 0.5  # the mesh is drawn
    assert _ui_text(out).startswith("face placed from 5 points: fitted points within")
    # at the video size: the points scale with the photo
    from aniportrait_pack.aniportrait_lib.face.placement import five_points_from_landmarks

    small = nodes.placement.FaceFromPoints.execute(landmarker, _image(image), "points", text, "frontal", None, 256, 192).result[0]
    assert small.image_size == (256, 192)
    centre = five_points_from_landmarks(small.landmarks_px()).mean(0)
    np.testing.assert_allclose(centre, (points * [0.5, 0.375]).mean(0), atol=3.0)


def test_box_and_mask(nodes, landmarker):
    image, _ = _anime_face(256)
    by_box = nodes.placement.FaceFromPoints.execute(landmarker, _image(image), "box", "53,55,203,228", "pose").result[0]
    mask = torch.zeros((1, 256, 256))
    mask[0, 55:228, 53:203] = 1.0
    out = nodes.placement.FaceFromPoints.execute(landmarker, _image(image), "box", "ignored", "pose", mask)
    assert _ui_text(out).startswith("face placed in the mask's box (53, 55, 203, 228)")
    np.testing.assert_allclose(out.result[0].landmarks, by_box.landmarks, atol=1e-9)


@pytest.mark.parametrize("mode,text,message", [
    ("points", "1,2,3", r"^the points text holds 3 numbers; give five points 'x,y; x,y; x,y; x,y; x,y' in pixels"),
    ("points", "100,100; 200,100; 150,150; 120,200; 180,600", r"^the right mouth corner \(180,600\) lies outside the 512x512 image"),
    ("points", "100,100; 101,100; 150,150; 120,200; 180,200", r"^the two eye centres are 1\.0 px apart"),
    ("points", "200,100; 100,100; 150,150; 180,200; 120,200", r"^the points are not in face order"),
    ("box", "10,10", r"^the box text holds 2 numbers; give a box 'x0,y0,x1,y1'"),
])
def test_errors_are_plain_one_sentence_value_errors(nodes, landmarker, mode, text, message):
    image, _ = _anime_face()
    with pytest.raises(ValueError, match=message) as info:
        nodes.placement.FaceFromPoints.execute(landmarker, _image(image), mode, text, "pose")
    assert type(info.value) is ValueError
