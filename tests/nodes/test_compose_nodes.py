"""Face Crop and Paste Back nodes called in-process with real ComfyUI IMAGE/MASK tensors."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from support.comfy_inprocess import node_landmarker, ui_text
from support.paths import shared_assets_dir


@pytest.fixture(scope="module")
def nodes(pack):
    from aniportrait_pack.nodes import compose

    return type("Nodes", (), dict(compose=compose, landmarker=node_landmarker(pack)))


def _guitar_frames(count: int) -> torch.Tensor:
    with Image.open(shared_assets_dir() / "real" / "video_wan2_2_14B_s2v-1.webp") as clip:
        frames = []
        for i in range(count):
            clip.seek(i)
            frames.append(np.asarray(clip.convert("RGB")))
    return torch.from_numpy(np.stack(frames)).float().div(255.0)


def test_crop_then_paste_back_a_video_with_a_faceless_frame(nodes):
    frames = _guitar_frames(12)  # frame 10 has no face
    out = nodes.compose.FaceCrop.execute(nodes.landmarker, frames, 256, 320, 2.0, 0.0, 5, "interpolate", "edge")
    crops, info = out.result[:2]  # Face Crop also outputs cropped_frames
    assert tuple(crops.shape) == (12, 320, 256, 3) and crops.dtype == torch.float32
    assert info.num_frames == 12 and info.crop_size == (256, 320) and info.source_size == (350, 350)
    assert not info.detected[10] and ui_text(out) == "face found in 11 of 12 frames, 1 filled in"
    pasted = nodes.compose.PasteBack.execute(crops, info, frames, "face", 0.15, 0.1, False)
    images, mask = pasted.result
    assert tuple(images.shape) == (12, 350, 350, 3) and tuple(mask.shape) == (12, 350, 350)
    assert mask.dtype == torch.float32 and float(mask.max()) == 1.0 and float(mask.min()) == 0.0
    untouched = mask == 0
    assert torch.equal(images[untouched], frames[untouched])


def test_stop_cuts_the_crops_and_photo_paste_back_fills_every_frame(nodes):
    frames = _guitar_frames(12)
    crops, info = nodes.compose.FaceCrop.execute(nodes.landmarker, frames, 128, 128, 2.0, 0.0, 1, "stop", "constant").result[:2]
    assert crops.shape[0] == 10 and info.num_frames == 10
    photo_crops, photo_info = nodes.compose.FaceCrop.execute(nodes.landmarker, frames[:1], 128, 128, 2.0, 0.0, 9, "interpolate", "edge").result[:2]
    images, mask = nodes.compose.PasteBack.execute(crops[:4], photo_info, frames[:1], "box", 0.15, 0.05, True).result
    assert tuple(images.shape) == (4, 350, 350, 3) and tuple(mask.shape) == (4, 350, 350)


def test_paste_back_errors_say_what_to_connect(nodes):
    frames = _guitar_frames(3)
    crops, info = nodes.compose.FaceCrop.execute(nodes.landmarker, frames, 128, 128, 2.0, 0.0, 3, "interpolate", "edge").result[:2]
    with pytest.raises(ValueError, match=r"^the generated input has 2 frames but the original input has 3; connect the photo") as err:
        nodes.compose.PasteBack.execute(crops[:2], info, frames, "box", 0.15, 0.05, False)
    assert type(err.value) is ValueError
    with pytest.raises(ValueError, match=r"^the crop info holds 3 crop window\(s\) but the original input has 1 image\(s\)"):
        nodes.compose.PasteBack.execute(crops, info, frames[:1], "box", 0.15, 0.05, False)
    with pytest.raises(ValueError, match=r"^no face was found in any of the 1 frames"):
        nodes.compose.FaceCrop.execute(nodes.landmarker, torch.full((1, 64, 64, 3), 0.5), 128, 128, 2.0, 0.0, 3, "interpolate", "edge")
    with pytest.raises(ValueError, match=r"^the generated input has pixel values from -?[0-9.]+ to 2[0-9][0-9], but images must be floats in 0..1"):
        nodes.compose.PasteBack.execute(crops * 255, info, frames, "box", 0.15, 0.05, False)
    with pytest.raises(ValueError, match=r"^feather is a fraction of the face size from 0 to 0\.5 \(default 0\.05\), not a width "
                                         r"in pixels; got 24$"):
        nodes.compose.PasteBack.execute(crops, info, frames, "box", 0.15, 24, False)  # an old workflow's pixel width


def test_paste_back_feather_is_a_face_fraction(nodes):
    """The feather input is a Float fraction of the face size, keeping its name so API prompts keep their key."""
    feather = next(i for i in nodes.compose.PasteBack.define_schema().inputs if i.id == "feather")
    assert feather.io_type == "FLOAT" and feather.default == 0.05 and (feather.min, feather.max) == (0.0, 0.5)
