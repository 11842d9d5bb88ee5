"""Face placement: MediaPipe's canonical face fitted to five points or a box (aniportrait_lib.face.placement)."""
from __future__ import annotations

import numpy as np
import pytest

from aniportrait_lib.face import placement as pl
from aniportrait_lib.face import pose_math
from aniportrait_lib.face.geometry import load_canonical_model, metric_geometry
from aniportrait_lib.face.landmarker import FaceLandmarker, NoFaceError
from support.faces import anime_face
from support.paths import shared_assets_dir

#: BOX_POINT_RATIOS are the canonical mesh's proportions written to three decimals, so each is within half a
#: unit of the last decimal of the mesh's own (measured: 4.8e-4 at most)
RATIO_ROUNDING = 5e-4
#: a placed face's iris centre is the 3-D eye centre projected, its eye point the mean of the projected eye
#: vertices; perspective puts the two apart (measured: 0.07 px at 512x512)
IRIS_CENTRE_PX = 0.1
#: MediaPipe's geometry pipeline run on the placed landmarks (stored as float32) against the placed transform
#: and mesh (measured: 0.0023 and 0.0005; the limits leave 10x for other BLAS/MediaPipe builds)
METRIC_TRANSFORM_TOL, METRIC_MESH_TOL = 0.02, 0.01


@pytest.fixture(scope="module")
def landmarker(face_landmarker_path):
    with FaceLandmarker(face_landmarker_path) as lm:
        yield lm


@pytest.fixture(scope="module")
def model(landmarker):
    return landmarker.model


def _real_images() -> dict[str, np.ndarray]:
    """The astronaut and the first/middle frames of the two real clips, each stretched to 512x512."""
    import cv2
    from PIL import Image
    from skimage import data

    images = {"astronaut": data.astronaut()[10:220, 120:330]}
    for name in ("video_wan2_2_14B_s2v-1.webp", "api_kling_avatar2-1.webp"):
        with Image.open(shared_assets_dir() / "real" / name) as clip:
            for i in (0, clip.n_frames // 2):
                clip.seek(i)
                images[f"{name.split('-')[0]}#{i}"] = np.asarray(clip.convert("RGB"))
    return {k: cv2.resize(np.ascontiguousarray(v), (512, 512), interpolation=cv2.INTER_AREA) for k, v in images.items()}


# ----------------------------------------------------------------------------- the canonical points


def test_canonical_points_are_where_the_docs_say(model):
    canon = pl.canonical_five_points(model)
    eye_l, eye_r, nose, mouth_l, mouth_r = canon
    assert eye_l[0] < 0 < eye_r[0] and mouth_l[0] < 0 < mouth_r[0]  # canonical x = image right when frontal
    assert eye_l[1] > nose[1] > mouth_l[1]  # y up: eyes above the nose above the mouth
    assert int(np.argmax(model.vertices[:, 2])) == pl.NOSE_TIP  # the most protruding vertex
    np.testing.assert_allclose(eye_l * [-1, 1, 1], eye_r, atol=1e-5)
    v = np.asarray(model.vertices, dtype=np.float64)
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    ratios = np.stack([(canon[:, 0] - lo[0]) / (hi[0] - lo[0]), (hi[1] - canon[:, 1]) / (hi[1] - lo[1])], axis=1)
    np.testing.assert_allclose(pl.BOX_POINT_RATIOS, ratios, atol=RATIO_ROUNDING)


def test_fit_recovers_a_known_pose(model):
    truth = pose_math.poses_to_matrices([12.0, -25.0, 8.0, 3.0, -2.0, -45.0])[0]
    points = pl._project(pl.canonical_five_points(model), truth, 640, 480)
    fitted = pl.fit_transform(points, 640, 480, model, "pose")
    angles, translation = pose_math.matrix_to_euler(fitted)
    assert np.abs(pl._project(pl.canonical_five_points(model), fitted, 640, 480) - points).max() < 0.5
    assert np.abs(angles - [12.0, -25.0, 8.0]).max() < 3.0 and np.abs(translation - [3.0, -2.0, -45.0]).max() < 1.0


def test_placed_face_round_trips_through_the_pipeline(model):
    _, points = anime_face()
    face = pl.place_face(points, 512, 512, model).face
    assert face.landmarks.shape == (478, 3) and face.image_size == (512, 512) and not face.blendshapes.any()
    np.testing.assert_array_equal(face.mesh_canonical, np.asarray(model.vertices, dtype=np.float64))
    # the pack's projection with zero motion gives back the landmarks
    projected = pose_math.project_points(face.mesh_canonical[None], face.transform, np.zeros((1, 6)), 512, 512)[0]
    assert np.abs(projected - face.landmarks_px()[:468]).max() < 1e-6
    # MediaPipe's geometry pipeline on the landmarks gives back the transform and the mesh
    mesh, transform = metric_geometry(face.landmarks, 512, 512, model)
    assert np.abs(transform - face.transform).max() < METRIC_TRANSFORM_TOL
    assert np.abs(mesh - face.mesh_canonical).max() < METRIC_MESH_TOL
    # iris: centres on the eyes, ring in MediaPipe's order (image right, up, image left, down)
    px = face.landmarks_px()
    np.testing.assert_allclose(px[[468, 473]], pl.five_points_from_landmarks(px)[:2], atol=IRIS_CENTRE_PX)
    ring = px[469:473] - px[468]
    assert ring[0, 0] > 0 and ring[1, 1] < 0 and ring[2, 0] < 0 and ring[3, 1] > 0


def test_self_check_on_real_faces(landmarker, model):
    """The fit from the five points MediaPipe itself finds, against MediaPipe's 468 landmarks (512x512 images).

    total: the neutral canonical face as placed vs MediaPipe's landmarks (includes the person's own face shape and
    expression, which a neutral canonical face cannot have); pose: the person's own mesh (mesh_canonical) under the
    fitted transform vs the landmarks, i.e. the error of the fitted head pose alone.
    """
    totals, poses = [], []
    for name, image in _real_images().items():
        face = landmarker.analyze(image)
        px = face.landmarks_px()[:468]
        placed = pl.place_face(pl.five_points_from_landmarks(px), 512, 512, model)
        total = np.linalg.norm(placed.face.landmarks_px()[:468] - px, axis=1)
        pose = np.linalg.norm(pl._project(face.mesh_canonical, placed.face.transform, 512, 512) - px, axis=1)
        print(f"[placement] {name}: total mean {total.mean():.2f} max {total.max():.2f} px; pose mean {pose.mean():.2f} "
              f"max {pose.max():.2f} px; five points mean {placed.errors_px.mean():.2f} max {placed.errors_px.max():.2f} px")
        assert total.mean() < 10.0 and pose.mean() < 6.0 and placed.errors_px[:3].max() < 12.0, name
        totals.append(total.mean())
        poses.append(pose.mean())
        assert placed.face.blendshape_names == face.blendshape_names
    print(f"[placement] over {len(totals)} images: total mean {np.mean(totals):.2f} px, pose mean {np.mean(poses):.2f} px")
    assert np.mean(totals) < 7.0 and np.mean(poses) < 4.5


def test_box_places_the_face_in_the_box(model):
    box = np.array([100.0, 80.0, 300.0, 320.0])
    face = pl.place_face_in_box(box, 400, 400, model).face
    px = face.landmarks_px()[:468]
    (x0, y0), (x1, y1) = px.min(0), px.max(0)
    size = box[3] - box[1]
    assert abs(y0 - box[1]) < 0.03 * size and abs(y1 - box[3]) < 0.03 * size  # forehead top to chin
    assert abs((x0 + x1) / 2 - (box[0] + box[2]) / 2) < 0.01 * size  # centred
    assert 0.75 < (x1 - x0) / (box[2] - box[0]) <= 1.0  # the sides, further back, look narrower
    angles, _ = pose_math.matrix_to_euler(face.transform)
    assert np.abs(angles).max() < 0.5


def test_anime_drawing_has_no_face_for_mediapipe_and_the_error_names_the_node(landmarker, model):
    image, points = anime_face()
    with pytest.raises(NoFaceError, match=r"^no face was found in the reference image \(512x512\).*"
                                          r"for drawings or anime faces.*AniPortrait Face From Points"):
        landmarker.analyze(image)
    placed = pl.place_face(points, 512, 512, model, "frontal")
    assert placed.errors_px.mean() < 25.0
    assert np.abs(pose_math.matrix_to_euler(placed.face.transform)[0][:2]).max() < 1e-6


# ----------------------------------------------------------------------------- text and checks


@pytest.mark.parametrize("text", ["10,20; 30,20; 20,30; 12,40; 28,40", "10 20 30 20 20 30 12 40 28 40",
                                  "[[10,20],[30,20],[20,30],[12,40],[28,40]]",
                                  '[{"x":10,"y":20},{"x":30,"y":20},{"x":20,"y":30},{"x":12,"y":40},{"x":28,"y":40}]'])
def test_parse_points_formats(text):
    np.testing.assert_array_equal(pl.parse_points(text), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


@pytest.mark.parametrize("text,message", [
    ("10,20; 30,20", r"^the points text holds 4 numbers; give five points 'x,y; x,y; x,y; x,y; x,y' in pixels"),
    ("10,20; 30,x; 1,2; 3,4; 5,6", r"^the points could not be read \(value 4, 'x', is not a number\); give five points"),
    ("10,20; 30,nan; 1,2; 3,4; 5,6", r"^the points could not be read \(value 4, 'nan', is not a number\); give five points"),
    ("10,20; 30,20; 1,2; 3,4; 5,-inf", r"^the points could not be read \(value 10, '-inf', is not a finite number\); give five points"),
    ("[[10,20],[30,NaN],[1,2],[3,4],[5,6]]", r"^the points could not be read \(value 4, NaN, is not a number\); give five points"),
    ('[{"x": 10, "y": "top"}]', r'^the points could not be read \(value 2, "top", is not a number\); give five points'),
    ("", r"^the points text holds 0 numbers"),
    ("[{\"x\": 1}]", r"^the points could not be read \(a JSON point lacks x or y\)"),
])
def test_parse_points_errors(text, message):
    with pytest.raises(ValueError, match=message):
        pl.parse_points(text)


def test_parse_box_and_mask():
    np.testing.assert_array_equal(pl.parse_box("1, 2, 30, 40"), [1, 2, 30, 40])
    with pytest.raises(ValueError, match=r"^the box text holds 3 numbers; give a box 'x0,y0,x1,y1' in pixels"):
        pl.parse_box("1,2,3")
    with pytest.raises(ValueError, match=r"^the box could not be read \(value 3, 'nan', is not a number\); give a box 'x0,y0,x1,y1'"):
        pl.parse_box("1,2,nan,4")
    mask = np.zeros((50, 60))
    mask[10:30, 5:25] = 1
    np.testing.assert_array_equal(pl.box_from_mask(mask), [5, 10, 25, 30])
    with pytest.raises(ValueError, match=r"^the mask is empty"):
        pl.box_from_mask(np.zeros((8, 8)))


@pytest.mark.parametrize("points,message", [
    ([[10, 20], [30, 20], [20, 30], [12, 40], [28, 70]], r"^the right mouth corner \(28,70\) lies outside the 64x64 image"),
    ([[10, 20], [11, 20], [20, 30], [12, 40], [28, 40]], r"^the two eye centres are 1\.0 px apart"),
    ([[30, 20], [10, 20], [20, 30], [28, 40], [12, 40]], r"^the points are not in face order"),
    ([[10, 40], [30, 40], [20, 30], [12, 20], [28, 20]], r"^the points are not in face order"),
])
def test_bad_points(model, points, message):
    with pytest.raises(ValueError, match=message):
        pl.place_face(np.array(points, float), 64, 64, model)


@pytest.mark.parametrize("box,message", [
    ("10,10,5,40", r"^the box \(10,10,5,40\) is empty"),
    ("10,10,80,40", r"^the box \(10,10,80,40\) reaches outside the 64x64 image"),
])
def test_bad_boxes(model, box, message):
    with pytest.raises(ValueError, match=message):
        pl.place_reference(model, (64, 64), "box", box)


def test_place_reference_scales_points_to_the_video_size(model):
    _, points = anime_face(256)
    text = "; ".join(f"{x},{y}" for x, y in points)
    small, note = pl.place_reference(model, (256, 256), "points", text, "pose")
    big, _ = pl.place_reference(model, (256, 256), "points", text, "pose", width=512, height=384)
    assert note.startswith("face placed from 5 points") and big.face.image_size == (512, 384)
    np.testing.assert_allclose(big.points, points * [2.0, 1.5])
    with pytest.raises(ValueError, match=r"set both width and height"):
        pl.place_reference(model, (256, 256), "points", text, width=512)
    mask = np.zeros((256, 256), np.float32)
    mask[40:220, 50:200] = 1
    by_mask, note = pl.place_reference(model, (256, 256), "box", "", mask=mask)
    assert note.startswith("face placed in the mask's box (50, 40, 200, 220)") and by_mask.face.image_size == (256, 256)
    with pytest.raises(ValueError, match=r"^the mask is 128x128 but the image is 256x256"):
        pl.place_reference(model, (256, 256), "box", "", mask=np.ones((128, 128)))


def test_canonical_model_only_needs_the_task(face_landmarker_path):
    model = load_canonical_model(face_landmarker_path)
    assert pl.place_face(anime_face()[1], 512, 512, model).face.landmarks.shape == (478, 3)
