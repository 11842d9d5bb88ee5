"""Footage read on demand: frames from a file by index (forward, backward, repeated, trimmed), timelines written
back at the source's rate, crops and paste-back of a real face in a larger picture and into a video."""
from __future__ import annotations

import io

import numpy as np
import pytest

from aniportrait_lib import compose
from aniportrait_lib.compose import footage as footage_steps
from aniportrait_lib.compose import paste_video
from aniportrait_lib.data import CropInfo
from aniportrait_lib.media import encode
from aniportrait_lib.media.frames import ArrayFrames, CroppedFrames, Footage, VideoFileFrames
from aniportrait_lib.motion.dubbing import source_frame_indices

COUNT, FPS = 300, 25


def numbered(i: int) -> np.ndarray:
    """Frame ``i``: its number in the red and green levels (read back within the lossless codec's exactness)."""
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 0], frame[..., 1] = i % 256, i // 256
    return frame


def number_of(frame: np.ndarray) -> int:
    return int(frame[..., 0].mean().round()) + 256 * int(frame[..., 1].mean().round())


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory) -> str:
    """300 numbered frames at 25 fps, lossless H.264 (keyframes every 250 frames, as x264 writes by default)."""
    path = str(tmp_path_factory.mktemp("footage") / "numbered.mp4")
    with encode.VideoWriter(path, 64, 48, FPS, encode.pick_codec("lossless")) as writer:
        writer.write(np.stack([numbered(i) for i in range(COUNT)]))
    return path


def test_a_file_is_read_by_index_in_any_order(numbered_video):
    reader = VideoFileFrames(numbered_video)
    assert (reader.num_frames, reader.fps, reader.size) == (COUNT, 25.0, (64, 48))
    wanted = [0, 1, 2, 2, 3, 299, 150, 149, 148, 147, 100, 101, 5, 260, 261]  # repeats, jumps, a backward run
    assert [number_of(f) for f in reader.read(wanted)] == wanted
    backward = list(range(COUNT - 1, -1, -1))  # the ping-pong of loop: decoded forward a block at a time
    assert [number_of(f) for f in reader.read(backward)] == backward
    with pytest.raises(IndexError, match="frame 300 asked of a video with 300 frames"):
        list(reader.read([300]))


def test_a_trimmed_in_memory_video_starts_at_its_trim(numbered_video):
    with open(numbered_video, "rb") as f:
        data = io.BytesIO(f.read())
    reader = VideoFileFrames(data, start_time=2.0, duration=4.0)  # frames 50..149
    assert reader.num_frames == 100
    assert [number_of(f) for f in reader.read([0, 99, 10])] == [50, 149, 60]


def test_the_timeline_written_back_shows_every_source_frame_once_in_order(numbered_video):
    reader = VideoFileFrames(numbered_video)
    for rule in ("loop", "hold", "trim"):
        seconds = 20.0 if rule != "trim" else 10.0  # past the 12 s source for loop and hold
        num = int(seconds * 30)
        timeline = Footage(reader, source_frame_indices(COUNT, FPS, num, 30.0, rule), 30.0, rule)
        source, times = timeline.source_timeline()
        assert len(source) == round(seconds * FPS) and np.allclose(np.diff(times), 1 / FPS)
        inside = source[: COUNT]  # the first pass: 0, 1, 2, ... each once
        assert np.array_equal(inside, np.arange(len(inside)))
        if rule == "loop":  # then back: 298, 297, ...
            assert np.array_equal(source[COUNT:COUNT + 3], [298, 297, 296])
        if rule == "hold":
            assert np.all(source[COUNT:] == COUNT - 1)
    unique, inverse = timeline.unique_sources()
    assert np.array_equal(unique[inverse], timeline.index)


def test_a_25_fps_source_under_a_30_fps_face_gets_every_frame_once_with_the_nearest_face(numbered_video):
    reader = VideoFileFrames(numbered_video)
    num = 360  # 12 s at 30 fps
    timeline = Footage(reader, source_frame_indices(COUNT, FPS, num, 30.0, "trim"), 30.0, "trim")
    info = CropInfo(np.tile([8.0, 4.0, 40.0, 36.0], (num, 1)), (64, 48), (32, 32))
    plan = paste_video.plan_paste(timeline, info, num)
    assert plan.fps == 25.0 and np.array_equal(plan.source, np.arange(COUNT))
    # the generated frame nearest in time, whose crop window was cut from that very source frame
    assert np.array_equal(timeline.index[plan.generated], plan.source)
    assert np.all(np.diff(plan.generated) >= 1) and plan.generated[-1] <= num - 1


def test_paste_plan_errors_say_what_to_connect(numbered_video):
    reader = VideoFileFrames(numbered_video)
    timeline = Footage.of(reader)
    info = CropInfo(np.tile([8.0, 4.0, 40.0, 36.0], (COUNT, 1)), (64, 48), (32, 32))
    with pytest.raises(ValueError, match=r"^the generated video has 10 frames but the original has 300; connect the frames "
                                         r"that went into AniPortrait Face Crop"):
        paste_video.plan_paste(timeline, info, 10)
    with pytest.raises(ValueError, match=r"^the crop info holds 5 crop windows but the original has 300 frames"):
        paste_video.plan_paste(timeline, CropInfo(info.boxes[:5], (64, 48), (32, 32)), COUNT)
    with pytest.raises(ValueError, match=r"^the original is 64x48 but the crop info was made from 128x96 frames"):
        paste_video.plan_paste(timeline, CropInfo(info.boxes, (128, 96), (32, 32)), COUNT)


def _larger_picture(face_photo: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    canvas = np.full((700, 900, 3), 40, np.uint8)
    offset = (300, 120)
    canvas[offset[1]:offset[1] + face_photo.shape[0], offset[0]:offset[0] + face_photo.shape[1]] = face_photo
    return canvas, offset


def test_a_placed_face_in_a_larger_picture_is_cropped_and_pasted_back(face_landmarker_path, tmp_path):
    """Face From Points' face on a drawing inside a larger picture: Face Crop cuts the drawing's face at the
    training framing, and pasting the unchanged crops back into a video leaves the picture as it was (exact outside
    the window; inside, Lanczos up and down again rings at the drawing's hard lines: mean under 1 level)."""
    import json

    from PIL import Image

    from aniportrait_lib.face import placement
    from aniportrait_lib.face.landmarker import FaceLandmarker
    from support.paths import shared_assets_dir
    from tools import score_stylized

    folder = shared_assets_dir() / "stylized"
    if not (folder / "points.json").is_file():
        pytest.skip(f"the annotated stylized faces are not at {folder}")
    table = json.loads((folder / "points.json").read_text())
    item = max(table.values(), key=lambda it: np.linalg.norm(np.subtract(it["points"]["left_eye_centre"],
                                                                          it["points"]["right_eye_centre"])))
    with Image.open(folder / item["file"]) as image:
        drawing = np.asarray(image.convert("RGB"))
    picture, (dx, dy) = _larger_picture(drawing)
    five = placement.parse_points(score_stylized.position_text(item["points"], False))[0] + [dx, dy]
    with FaceLandmarker(face_landmarker_path) as landmarker:
        model = landmarker.model
    face = placement.place_face(five, picture.shape[1], picture.shape[0], model).face
    source = Footage.of(ArrayFrames(picture[None], 30.0))
    crops, info = footage_steps.crop_placed(source, face, (1024, 1024))  # larger than the window: pasting back is exact
    box = info.boxes[0]
    eyes = (five[:2] - box[:2]) / (box[2:] - box[:2])  # the given eye centres, as fractions of the crop
    assert np.all(np.abs(eyes[:, 0] - 0.5) < 0.25) and abs(eyes[:, 0].mean() - 0.5) < 0.05  # centred on the face
    assert np.all((0.3 < eyes[:, 1]) & (eyes[:, 1] < 0.5))  # at the training framing's eye height
    photo = paste_video.photo_timeline(picture[None], 3, 30.0)
    levels = compose.crop_frames(picture[None], info.boxes[:1], info.crop_size)
    path = str(tmp_path / "pasted.mp4")
    plan = paste_video.plan_paste(photo, info, 3)
    with encode.VideoWriter(path, picture.shape[1], picture.shape[0], 30.0, encode.pick_codec("lossless")) as writer:
        paste_video.paste_into_video(lambda a, b: np.repeat(levels, b - a, axis=0), plan, photo, info, writer, "face",
                                     0.15, 0.05)
    out = list(VideoFileFrames(path).read(range(3)))
    x0, y0, x1, y1 = compose.paste.mask_window(box, (picture.shape[1], picture.shape[0]))
    for frame in out:  # lossless: exact outside the crop window; inside, the resampler's round trip on line art
        diff = np.abs(frame.astype(int) - picture.astype(int))
        inside = diff[y0:y1, x0:x1]
        diff[y0:y1, x0:x1] = 0
        assert diff.max() == 0 and inside.mean() < 1.0
    with pytest.raises(ValueError, match=r"^the face was placed on a 400x400 image but the frames are 900x700; place it "
                                         r"on this picture"):
        small = placement.place_face(five - [dx, dy], drawing.shape[1], drawing.shape[0], model).face
        footage_steps.crop_placed(source, small, (256, 256))
    assert isinstance(crops.reader, CroppedFrames) and crops.read_batch(0, 1).shape == (1, 1024, 1024, 3)
    # the face the motion is drawn on: placed again on the crop through the same points, the drawing's shape kept
    crop_face = footage_steps.face_in_crop(face, box, info.crop_size, model)
    given = (five - box[:2]) * 1024 / (box[2:] - box[:2])
    iod = np.linalg.norm(given[1] - given[0])
    assert crop_face.image_size == (1024, 1024) and crop_face.offset_map is not None
    assert np.linalg.norm(placement.five_points_from_landmarks(crop_face.landmarks_px()) - given, axis=1).max() < 0.02 * iod


def test_a_found_face_moves_onto_its_crop_like_analysing_the_crop(face_landmarker_path):
    """The tracked face of a photo moved onto its crop agrees with MediaPipe run on the crop itself."""
    from skimage import data

    from aniportrait_lib.face.landmarker import FaceLandmarker

    photo = np.ascontiguousarray(data.astronaut())
    with FaceLandmarker(face_landmarker_path) as landmarker:
        _, info, tracked = footage_steps.crop_footage(Footage.of(ArrayFrames(photo[None], 30.0)), landmarker, (512, 512))
        moved = footage_steps.face_in_crop(tracked.faces[0], info.boxes[0], (512, 512), landmarker.model, (512, 512))
        crop = np.clip(np.rint(compose.crop_frames(photo[None], info.boxes, (512, 512))[0]), 0, 255).astype(np.uint8)
        analysed = landmarker.analyze(crop)
    error = np.linalg.norm(moved.landmarks_px() - analysed.landmarks_px(), axis=1)
    face_size = np.ptp(analysed.landmarks_px()[:468], axis=0).mean()
    print(f"[footage] moved vs analysed on the crop: mean {error.mean():.2f} px, max {error.max():.2f} px")
    assert error.mean() < 0.01 * face_size and error.max() < 0.04 * face_size
    assert np.abs(moved.transform[:3, 3] - analysed.transform[:3, 3]).max() < 0.05 * abs(analysed.transform[2, 3])
