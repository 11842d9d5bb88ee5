"""The one image policy: float 0..1 <-> uint8, grey/RGBA, overshoot clipping, clear refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aniportrait_lib import imaging


def test_float_round_trip_is_exact_and_chunked():
    u8 = np.random.default_rng(0).integers(0, 256, size=(7, 5, 4, 3), dtype=np.uint8)
    back = imaging.frames_to_uint8(imaging.uint8_to_float(u8), "frames", chunk=3)
    assert back.dtype == np.uint8 and np.array_equal(back, u8)


def test_small_overshoot_is_clipped_and_rounding_is_round_half_up_of_x255():
    x = torch.tensor([[[[-0.02, 0.5, 1.03]]]])
    assert imaging.frames_to_uint8(x, "frames").tolist() == [[[[0, 128, 255]]]]


@pytest.mark.parametrize("channels, want", [(1, [9, 9, 9]), (4, [1, 2, 3])])
def test_grey_is_repeated_and_alpha_dropped(channels, want):
    pixel = [9] if channels == 1 else [1, 2, 3, 200]
    out = imaging.frames_to_uint8(np.array([[[pixel]]], dtype=np.uint8), "frames")
    assert out.shape == (1, 1, 1, 3) and out[0, 0, 0].tolist() == want


def test_single_images_in_every_form():
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert np.array_equal(imaging.image_to_uint8(Image.fromarray(rgb)), rgb)
    assert np.array_equal(imaging.image_to_uint8(rgb[None]), rgb)
    assert np.array_equal(imaging.image_to_uint8(rgb[..., 0]), np.repeat(rgb[..., :1], 3, axis=2))


def test_refusals_name_the_input():
    with pytest.raises(ValueError, match=r"the pose images input has pixel values from 0 to 255, but images must be floats in 0\.\.1"):
        imaging.frames_to_uint8(torch.full((1, 2, 2, 3), 255.0).index_fill_(1, torch.tensor([0]), 0.0), "pose images")
    bad = torch.zeros((1, 2, 2, 3))
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="the reference image input holds NaN or infinite values"):
        imaging.frames_to_uint8(bad, "reference image")
    with pytest.raises(ValueError, match=r"the frames input is empty or not a batch of images \(shape \(0, 4, 4, 3\)\)"):
        imaging.frames_to_uint8(torch.zeros((0, 4, 4, 3)), "frames")
    with pytest.raises(ValueError, match="the frames input has 2 channels; connect grey, RGB or RGBA images"):
        imaging.frames_to_uint8(np.zeros((1, 2, 2, 2), dtype=np.uint8), "frames")
    with pytest.raises(ValueError, match="pixel type int64"):
        imaging.frames_to_uint8(np.zeros((1, 2, 2, 3), dtype=np.int64), "frames")


def test_first_image_says_when_a_batch_is_reduced():
    batch = torch.rand(3, 4, 4, 3)
    first, note = imaging.first_image(batch, "reference image")
    assert torch.equal(first, batch[:1]) and note == "the reference image input holds 3 images; only the first one is used."
    assert imaging.first_image(batch[:1], "reference image")[1] is None
