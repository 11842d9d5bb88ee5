"""Face crop and paste back: framing, smoothing on a real clip, filled face-less frames, identity round trip, errors."""
from __future__ import annotations

import numpy as np
import pytest

from aniportrait_lib import compose, imaging
from aniportrait_lib.compose import crop as crop_mod
from aniportrait_lib.data import CropInfo
from aniportrait_lib.face import tracking
from aniportrait_lib.face.landmarker import FaceLandmarker

from support.faces import box_jitter
from support.media import real_clip_frames

TALKING_CLIP = "api_kling_avatar2-1.webp"  # a face in every frame
GUITAR_CLIP = "video_wan2_2_14B_s2v-1.webp"  # face-less frames (the first is frame 10)


@pytest.fixture(scope="module")
def landmarker(face_landmarker_path):
    with FaceLandmarker(face_landmarker_path) as lm:
        yield lm


@pytest.fixture(scope="module")
def talking(landmarker):
    frames = real_clip_frames(TALKING_CLIP)
    return frames, tracking.track_faces(frames, landmarker)


@pytest.fixture(scope="module")
def guitar(landmarker):
    frames = real_clip_frames(GUITAR_CLIP)
    return frames, tracking.track_faces(frames, landmarker)


def face_crop(frames: np.ndarray, landmarker, crop_size: tuple[int, int], **options):
    """Face Crop's IMAGE path: track (footage read a frame at a time), then the crops as float levels."""
    from aniportrait_lib.compose.footage import crop_footage
    from aniportrait_lib.media.frames import ArrayFrames, Footage

    _, info, tracked = crop_footage(Footage.of(ArrayFrames(frames, 30.0)), landmarker, crop_size, **options)
    return compose.crop_frames(frames[: info.num_frames], info.boxes, info.crop_size), info, tracked


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def test_default_framing_matches_aniportrait_crops(landmarker, photo):
    crops, info, tracked = face_crop(photo[None], landmarker, (512, 512))
    assert crops.shape == (1, 512, 512, 3) and info.num_frames == 1 and tracked.filled == 0
    face = landmarker.analyze(imaging.frames_to_uint8(crops[:1] / 255.0, "crop")[0])  # measured on the crop itself (as an 8-bit image)
    points = face.landmarks_px()
    x0, y0, x1, y1 = compose.face_box(points)
    eyes_y = (points[468, 1] + points[473, 1]) / 2
    assert 0.45 <= (x1 - x0) / 512 <= 0.55
    assert 0.37 <= eyes_y / 512 <= 0.43
    assert abs((x0 + x1) / 2 - 256) < 8  # centred
    assert info.face_points.shape == (1, crop_mod.HULL_POINTS, 2) and info.source_size == (512, 512) and info.crop_size == (512, 512)


def test_crop_box_keeps_the_crop_aspect_and_offset_moves_it():
    box = np.array([100.0, 100.0, 200.0, 220.0])
    window = compose.crop_box_for_face(box, (384, 512), scale=2.0)
    assert np.isclose((window[3] - window[1]) / (window[2] - window[0]), 512 / 384)
    assert np.isclose(window[2] - window[0], 2.0 * (100 + 120) / 2)
    lower = compose.crop_box_for_face(box, (384, 512), vertical_offset=0.1)
    assert np.isclose(lower[1] - window[1], 0.1 * (window[3] - window[1]))


def test_smoothing_reduces_jitter_on_the_real_clip(talking):
    _, tracked = talking
    raw = compose.crop_info_for_faces(tracked, (512, 512), smoothing=1).boxes
    smooth = compose.crop_info_for_faces(tracked, (512, 512)).boxes
    before, after = box_jitter(raw), box_jitter(smooth)
    print(f"[jitter] {TALKING_CLIP}: raw {before}, smoothed {after}")
    assert after["centre_mean"] < 0.6 * before["centre_mean"] and after["centre_max"] < 0.5 * before["centre_max"]
    assert after["size_mean"] < 0.5 * before["size_mean"]
    aspect = (smooth[:, 3] - smooth[:, 1]) / (smooth[:, 2] - smooth[:, 0])
    np.testing.assert_allclose(aspect, 1.0)
    np.testing.assert_allclose(compose.smooth_boxes(raw, 1), raw)


def test_boxes_are_interpolated_over_the_faceless_frames(guitar):
    frames, tracked = guitar
    info = compose.crop_info_for_faces(tracked, (512, 512), smoothing=1)
    missing = np.flatnonzero(~tracked.detected)
    assert tracked.filled == 5 and len(missing) == 5 and info.num_frames == len(frames)
    assert np.array_equal(info.detected, tracked.detected)
    found = np.flatnonzero(tracked.detected)
    raw = np.stack([compose.crop_box_for_face(compose.face_box(f.landmarks_px()), (512, 512)) for f in tracked.faces])
    for i in missing:
        before, after = found[found < i].max(), found[found > i].min()
        w = (i - before) / (after - before)
        np.testing.assert_allclose(info.boxes[i], (1 - w) * raw[before] + w * raw[after], atol=1e-9)
    held = compose.fill_boxes(raw, tracked.detected, "hold")
    for i in missing:
        np.testing.assert_array_equal(held[i], raw[found[found < i].max()])


def _identity_round_trip(frames: np.ndarray, info: CropInfo, mask: str):
    crops = compose.crop_frames(frames, info.boxes, info.crop_size)
    out, masks = compose.paste_frames(crops, frames, info, mask=mask)  # the default feather
    diff = np.abs(out.astype(int) - frames.astype(int)).max(axis=-1)
    return diff, masks


@pytest.mark.parametrize("mask", ["box", "face"])
def test_identity_paste_back_reproduces_the_original(landmarker, photo, guitar, mask):
    frames, tracked = guitar
    cases = {  # crop sizes that upscale the window (about 1.7x), so pasting back shrinks it again
        "photo": (photo[None], face_crop(photo[None], landmarker, (320, 320))[1]),
        "clip frame 3": (frames[3:4], compose.crop_info_for_faces(tracking.fill_missing([tracked.faces[3]]), (320, 320))),
    }
    for name, (images, info) in cases.items():
        step = (info.boxes[0, 2] - info.boxes[0, 0]) / info.crop_size[0]
        assert 0.5 < step < 1.0, step
        diff, masks = _identity_round_trip(images, info, mask)
        outside, inside = diff[masks == 0], diff[masks > 0]
        band = diff[(masks > 0) & (masks < 255)]
        print(f"[identity] {name} ({mask}): outside max {outside.max()}, band max {band.max()}, inside max {inside.max()}, "
              f"inside > 2 levels: {np.count_nonzero(inside > 2)} of {inside.size}")
        assert outside.size and outside.max() == 0
        # the criterion: within 2 levels inside (crops keep the Lanczos-4 overshoot unrounded, so
        # nothing is clipped or quantised on the way; measured <= 1 level)
        assert inside.max() <= 2 and band.max() <= 2


def test_paste_into_a_photo_uses_it_for_every_frame(photo):
    info = CropInfo(np.array([[100.0, 50.0, 300.0, 250.0]]), (512, 512), (64, 64))
    generated = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    generated[1] = 255
    calls = []
    out, masks = compose.paste_frames(generated, photo[None], info, feather=0, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (3, 512, 512, 3) and masks.shape == (3, 512, 512) and calls[-1] == (3, 3)
    # inside the window minus the Lanczos-4 reach at the generated frame's edge (4 / 0.32 = 12.5 px)
    assert not out[0, 65:235, 115:285].any() and (out[1, 65:235, 115:285] == 255).all()
    assert np.array_equal(out[2, :40], photo[:40]) and np.array_equal(masks[0], masks[2])
    assert masks[0, 100, 150] == 255 and masks[0, 10, 10] == 0


def test_feather_fades_inward_over_its_width():
    binary = np.zeros((40, 40), np.uint8)
    binary[5:35, 5:35] = 1
    soft = compose.feather_mask(binary, 10)
    assert soft[0, 0] == 0 and soft[20, 20] == 1 and np.isclose(soft[20, 5], 0.1) and np.isclose(soft[20, 9], 0.5)
    edge = np.ones((10, 10), np.uint8)  # the image border is not a mask edge
    assert (compose.feather_mask(edge, 4) == 1).all()


def test_face_size_comes_from_the_landmarks_else_from_the_window():
    points = np.array([[[10.0, 20.0], [50.0, 20.0], [30.0, 80.0]]])  # a 40 x 60 landmark box: face size 50
    boxes = np.array([[0.0, 0.0, 130.0, 130.0]])
    assert compose.face_size_of(CropInfo(boxes, (200, 200), (64, 64), points), 0) == 50.0
    assert compose.face_size_of(CropInfo(boxes, (200, 200), (64, 64)), 0) == 130.0 / compose.DEFAULT_SCALE


def test_feather_width_is_a_fraction_of_the_face_size(photo):
    """The same feather fraction gives a ramp twice as wide on a window (face) twice as large."""
    for side, size in ((200.0, 100.0), (400.0, 200.0)):  # no landmarks: face size = window width / 2
        info = CropInfo(np.array([[50.0, 50.0, 50.0 + side, 50.0 + side]]), (512, 512), (512, 512))
        _, masks = compose.paste_frames(photo[None, :, :, :], photo[None], info, feather=0.1)
        row = masks[0, int(50 + side / 2)]
        ramp = np.count_nonzero((row > 0) & (row < 255)) / 2  # both sides of the window
        assert abs(ramp - 0.1 * size) <= 1, (side, ramp)


FACE_SIZES = (40, 56, 80, 120, 200, 400)


def _scaled_face(photo: np.ndarray, points: np.ndarray, size: int) -> tuple[np.ndarray, CropInfo]:
    """The astronaut resized so its face size is ``size`` px, with a one-frame crop info at the default framing."""
    import cv2

    k = size / compose.face_size(np.zeros(4), points)
    image = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    box = compose.crop_box_for_face(compose.face_box(points * k), (512, 512))
    return image, CropInfo(box[None], (image.shape[1], image.shape[0]), (512, 512), points[None] * k)


def _fully_replaced(image: np.ndarray, info: CropInfo, mask: str, **settings) -> float:
    crops = compose.crop_frames(image[None], info.boxes, info.crop_size)
    _, masks = compose.paste_frames(crops, image[None], info, mask, **settings)
    return np.count_nonzero(masks == 255) / np.count_nonzero(masks)


@pytest.mark.parametrize("mask", ["box", "face"])
def test_default_feather_fully_replaces_most_of_every_face_size(landmarker, photo, mask):
    """The issue's target: at the defaults >= 80 % of the mask is fully replaced on faces of 40 to 400 px
    (measured 84-90 % face, 91-95 % box; tools/measure_feather.py)."""
    points = landmarker.analyze(photo).landmarks_px()
    shares = {size: _fully_replaced(*_scaled_face(photo, points, size), mask) for size in FACE_SIZES}
    print(f"[feather] {mask}: " + ", ".join(f"{size} px {share:.1%}" for size, share in shares.items()))
    assert min(shares.values()) >= 0.8, shares
    if mask == "face":  # the old fixed 24 px left a 56 px face a ghost (issue: 242 of 3,514 pixels)
        image, info = _scaled_face(photo, points, 56)
        crops = compose.crop_frames(image[None], info.boxes, info.crop_size)
        _, _, weights = compose.paste_frame(crops[0], image, info.boxes[0], info.face_points[0], feather=0.5, size=48)
        assert np.count_nonzero(weights >= 254.5 / 255) / np.count_nonzero(weights) < 0.1


def test_color_match_moves_the_generated_colours_to_the_original(photo):
    info = CropInfo(np.array([[100.0, 50.0, 300.0, 250.0]]), (512, 512), (200, 200))
    region = photo[50:250, 100:300]
    tinted = np.clip(region.astype(int) + [40, -20, 0], 0, 255).astype(np.uint8)
    plain, _ = compose.paste_frames(tinted[None], photo[None], info, feather=0)
    matched, _ = compose.paste_frames(tinted[None], photo[None], info, feather=0, color_match=True)
    err = lambda out: np.abs(out[0, 60:240, 110:290].astype(float) - photo[60:240, 110:290]).mean()  # noqa: E731
    assert err(matched) < 0.3 * err(plain)


def test_errors_say_what_to_connect(photo):
    info = CropInfo(np.zeros((4, 4)) + [0, 0, 64, 64], (512, 512), (64, 64))
    gen = np.zeros((5, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^the crop info holds 4 crop window\(s\) but the original input has 1 image\(s\); connect the same"):
        compose.paste_frames(gen, photo[None], info)
    with pytest.raises(ValueError, match=r"^the generated input has 5 frames but the original input has 4; connect the photo that was "
                                         r"cropped \(1 image\) or exactly 5 original frames"):
        compose.paste_frames(gen, np.stack([photo] * 4), info)
    with pytest.raises(ValueError, match=r"^the original input is 256x256 but the crop info was made from 512x512 images"):
        compose.paste_frames(gen, np.zeros((4, 256, 256, 3), np.uint8), info)
    with pytest.raises(ValueError, match=r"^mask must be one of box, face; got 'circle'"):
        compose.paste_frames(gen, np.stack([photo] * 4), info, mask="circle")
    with pytest.raises(ValueError, match=r"^feather is a fraction of the face size from 0 to 0\.5 \(default 0\.05\), not a width in "
                                         r"pixels; got 24$"):
        compose.paste_frames(gen[:4], np.stack([photo] * 4), info, feather=24)
    with pytest.raises(ValueError, match=r"^the crop size must be a multiple of 8 from 64 to 2048 on each side; got 500x512"):
        face_crop(photo[None], None, (500, 512))
    with pytest.raises(ValueError, match=r"^the smoothing window must be at least 1 frame, got 0"):
        compose.smooth_boxes(info.boxes, 0)
    with pytest.raises(ValueError, match=r"^pad must be one of edge, constant; got 'mirror'"):
        crop_mod.resample(photo, (0, 0), (1, 1), (8, 8), "mirror")


def test_constant_pad_is_black_outside_the_frame(photo):
    boxes = np.array([[-100.0, -100.0, 100.0, 100.0]])
    black = compose.crop_frames(photo[None], boxes, (64, 64), pad="constant")
    edge = compose.crop_frames(photo[None], boxes, (64, 64), pad="edge")
    assert (black[0, :20, :20] == 0).all() and not (edge[0, :20, :20] == 0).all()
    np.testing.assert_allclose(black[0, 40:, 40:], edge[0, 40:, 40:], atol=1)

