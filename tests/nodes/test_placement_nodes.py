"""AniPortrait Face From Points called in-process with real ComfyUI types."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support.comfy_inprocess import comfy_image, ui_text
from support.faces import anime_face

#: a frontal fit cannot follow the drawing's own proportions exactly: the centre of the fitted five points sits
#: off the centre of the given ones (measured: 1.4 px at 256x192, vertically)
CENTRE_PX = 3.0


@pytest.fixture(scope="module")
def nodes(pack):
    from aniportrait_pack.nodes import face, placement

    return type("Nodes", (), dict(face=face, placement=placement))


def test_node_is_registered(pack):
    import asyncio

    from aniportrait_pack import nodes as pack_nodes

    listed = asyncio.run(asyncio.run(pack_nodes.comfy_entrypoint()).get_node_list())
    assert any(n.__name__ == "FaceFromPoints" for n in listed)


def test_anime_drawing_face_from_typed_points(nodes, landmarker):
    image, points = anime_face()
    with pytest.raises(ValueError, match=r"^no face was found.*AniPortrait Face From Points") as info:
        nodes.face.FaceAnalysis.execute(landmarker, comfy_image(image))
    assert type(info.value) is ValueError
    text = "; ".join(f"{x:g},{y:g}" for x, y in points)
    out = nodes.placement.FaceFromPoints.execute(landmarker, comfy_image(image), "points", text, "pose")
    face, pose = out.result
    assert face.image_size == (512, 512) and face.landmarks.shape == (478, 3) and tuple(pose.shape) == (1, 512, 512, 3)
    assert float(pose.max()) > 0.5  # the mesh is drawn
    assert ui_text(out).startswith("face placed from 5 points: fitted points within")
    # at the video size: the points scale with the photo
    from aniportrait_pack.aniportrait_lib.face.placement import five_points_from_landmarks

    small = nodes.placement.FaceFromPoints.execute(landmarker, comfy_image(image), "points", text, "frontal", None, 256, 192).result[0]
    assert small.image_size == (256, 192)
    centre = five_points_from_landmarks(small.landmarks_px()).mean(0)
    np.testing.assert_allclose(centre, (points * [0.5, 0.375]).mean(0), atol=CENTRE_PX)


def test_box_and_mask(nodes, landmarker):
    image, _ = anime_face(256)
    by_box = nodes.placement.FaceFromPoints.execute(landmarker, comfy_image(image), "box", "53,55,203,228", "pose").result[0]
    mask = torch.zeros((1, 256, 256))
    mask[0, 55:228, 53:203] = 1.0
    out = nodes.placement.FaceFromPoints.execute(landmarker, comfy_image(image), "box", "ignored", "pose", mask)
    assert ui_text(out).startswith("face placed in the mask's box (53, 55, 203, 228)")
    np.testing.assert_allclose(out.result[0].landmarks, by_box.landmarks, atol=1e-9)


@pytest.mark.parametrize("mode,text,message", [
    ("points", "1,2,3", r"^the points text holds 3 numbers; give five points 'x,y; x,y; x,y; x,y; x,y' in pixels"),
    ("points", "100,100; 200,100; 150,nan; 120,200; 180,200",
     r"^the points could not be read \(value 6, 'nan', is not a number\); give five points 'x,y; x,y; x,y; x,y; x,y' in pixels"),
    ("points", "100,100; 200,100; 150,150; 120,200; 180,600", r"^the right mouth corner \(180,600\) lies outside the 512x512 image"),
    ("points", "100,100; 101,100; 150,150; 120,200; 180,200", r"^the two eye centres are 1\.0 px apart"),
    ("points", "200,100; 100,100; 150,150; 180,200; 120,200", r"^the points are not in face order"),
    ("box", "10,10", r"^the box text holds 2 numbers; give a box 'x0,y0,x1,y1'"),
])
def test_errors_are_plain_one_sentence_value_errors(nodes, landmarker, mode, text, message):
    image, _ = anime_face()
    with pytest.raises(ValueError, match=message) as info:
        nodes.placement.FaceFromPoints.execute(landmarker, comfy_image(image), mode, text, "pose")
    assert type(info.value) is ValueError
