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
    # across, the box keeps the mesh's proportions; its heights are the facial thirds (the box is hairline to chin,
    # the mesh stops mid-forehead), in the mesh's order: eyes above the nose above the mouth
    np.testing.assert_allclose(pl.BOX_POINT_RATIOS[:, 0], ratios[:, 0], atol=RATIO_ROUNDING)
    assert pl.BOX_POINT_RATIOS[0, 1] < pl.BOX_POINT_RATIOS[2, 1] < pl.BOX_POINT_RATIOS[3, 1] < 1.0
    # the extra points' vertices: eye corners at each eye contour's ends, lips and chin on the midline, top to bottom
    for outer, inner, eye in ((33, 133, pl.IMAGE_LEFT_EYE), (263, 362, pl.IMAGE_RIGHT_EYE)):
        xs = v[list(eye), 0]
        assert {v[outer, 0], v[inner, 0]} == {xs.min(), xs.max()} and abs(v[outer, 0]) > abs(v[inner, 0])
    lips_chin = [pl.EXTRA_POINTS[n] for n in ("upper_lip", "lower_lip", "chin")]
    assert np.all(v[lips_chin, 0] == 0) and int(np.argmin(v[:, 1])) == pl.CHIN
    assert v[pl.UPPER_LIP, 1] > v[61, 1] > v[pl.LOWER_LIP, 1]


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
    # the mesh is the canonical one shaped to the drawing (no longer the canonical mesh itself)
    np.testing.assert_allclose(face.mesh_canonical, pl.shaped_mesh(model, pl.fit_shape(points, {}, 512, 512, model)[1])[0])
    # with no shape it is the canonical mesh itself
    plain = pl.face_from_transform(face.transform, model, 512, 512)
    np.testing.assert_allclose(plain.mesh_canonical, np.asarray(model.vertices, dtype=np.float64), atol=1e-12)
    # the pack's projection with zero motion gives back the landmarks
    projected = pose_math.project_points(face.mesh_canonical[None], face.transform, np.zeros((1, 6)), 512, 512)[0]
    assert np.abs(projected - face.landmarks_px()[:468]).max() < 1e-6
    # MediaPipe's geometry pipeline on the landmarks of the canonical face gives back the transform and the mesh (a
    # shaped face is not the canonical one, so MediaPipe would split it into pose and shape differently)
    mesh, transform = metric_geometry(plain.landmarks, 512, 512, model)
    assert np.abs(transform - plain.transform).max() < METRIC_TRANSFORM_TOL
    assert np.abs(mesh - plain.mesh_canonical).max() < METRIC_MESH_TOL
    # iris: centres on the eyes, ring in MediaPipe's order (image right, up, image left, down)
    px = face.landmarks_px()
    np.testing.assert_allclose(px[[468, 473]], pl.five_points_from_landmarks(px)[:2], atol=IRIS_CENTRE_PX)
    ring = px[469:473] - px[468]
    assert ring[0, 0] > 0 and ring[1, 1] < 0 and ring[2, 0] < 0 and ring[3, 1] > 0


def test_self_check_on_real_faces(landmarker, model):
    """The fit from the five points MediaPipe itself finds, against MediaPipe's 468 landmarks (512x512 images).

    total: the neutral canonical face as placed vs MediaPipe's landmarks (includes the person's own face shape and
    expression, which a neutral canonical face cannot have; the shaped fit follows some of it); pose: the person's own
    mesh (mesh_canonical) under the rigid fit's transform (:func:`fit_transform`, where the shaped fit starts) vs the
    landmarks, i.e. the error of the head pose alone.
    """
    totals, poses = [], []
    for name, image in _real_images().items():
        face = landmarker.analyze(image)
        px = face.landmarks_px()[:468]
        placed = pl.place_face(pl.five_points_from_landmarks(px), 512, 512, model)
        total = np.linalg.norm(placed.face.landmarks_px()[:468] - px, axis=1)
        rigid = pl.fit_transform(pl.five_points_from_landmarks(px), 512, 512, model)
        pose = np.linalg.norm(pl._project(face.mesh_canonical, rigid, 512, 512) - px, axis=1)
        print(f"[placement] {name}: total mean {total.mean():.2f} max {total.max():.2f} px; pose mean {pose.mean():.2f} "
              f"max {pose.max():.2f} px; five points mean {placed.errors_px.mean():.2f} max {placed.errors_px.max():.2f} px")
        assert total.mean() < 10.0 and pose.mean() < 6.0 and placed.errors_px[:3].max() < 12.0, name
        totals.append(total.mean())
        poses.append(pose.mean())
        assert placed.face.blendshape_names == face.blendshape_names
    print(f"[placement] over {len(totals)} images: total mean {np.mean(totals):.2f} px, pose mean {np.mean(poses):.2f} px")
    assert np.mean(totals) < 7.0 and np.mean(poses) < 4.5


@pytest.mark.parametrize("box", [(100.0, 80.0, 300.0, 320.0), (40.0, 150.0, 360.0, 520.0)])
def test_box_places_the_face_in_the_box(model, box):
    """The features at the box's proportions, the chin on its bottom edge, centred; the second box reaches 120 px
    below the 400x400 image (a close-up's chin below the frame)."""
    box = np.array(box)
    placed = pl.place_face_in_box(box, 400, 400, model)
    px = placed.face.landmarks_px()
    size = box[3] - box[1]
    np.testing.assert_allclose(pl.five_points_from_landmarks(px), pl.five_points_from_box(box), atol=0.02 * size)
    np.testing.assert_allclose(px[pl.CHIN], [(box[0] + box[2]) / 2, box[3]], atol=0.03 * size)
    assert abs((px[:468, 0].min() + px[:468, 0].max()) / 2 - (box[0] + box[2]) / 2) < 0.01 * size  # centred
    angles, _ = pose_math.matrix_to_euler(placed.face.transform)
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
    points, extra = pl.parse_points(text)
    np.testing.assert_array_equal(points, [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    assert extra == {}


@pytest.mark.parametrize("text", ["10,20; 30,20; 20,30; 12,40; 28,40; chin=20,55; Left Eye Outer = 5,21",
                                  "10,20; 30,20; 20,30; 12,40; 28,40\nchin=20,55\nleft_eye_outer=5,21",
                                  '{"left_eye": [10,20], "right_eye": [30,20], "nose": {"x": 20, "y": 30}, '
                                  '"left_mouth": [12,40], "right_mouth": [28,40], "chin": [20,55], "left_eye_outer": [5,21]}'])
def test_parse_named_points(text):
    """Named points follow the five (old texts read as before); a JSON object of names holds them all."""
    points, extra = pl.parse_points(text)
    np.testing.assert_array_equal(points, [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    assert sorted(extra) == ["chin", "left_eye_outer"]
    np.testing.assert_array_equal(extra["chin"], [20, 55])
    np.testing.assert_array_equal(extra["left_eye_outer"], [5, 21])


@pytest.mark.parametrize("text,message", [
    ("10,20; 30,20; 20,30; 12,40; 28,40; forehead=1,2", r"^the point name 'forehead' is not known; use left_eye, .*chin\.$"),
    ("10,20; 30,20; 20,30; 12,40; 28,40; chin=1,2,3", r"^the points could not be read \(the point chin holds 3 numbers"),
    ("10,20; 30,20; 20,30; 12,40; 28,40; chin=1,x", r"^the points could not be read \(value 2, 'x', is not a number\)"),
    ('{"left_eye": [10,20], "chin": [1,2]}', r"^give the five points all unnamed \(first\) or all by name"),
])
def test_parse_named_points_errors(text, message):
    with pytest.raises(ValueError, match=message):
        pl.parse_points(text)


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
    ("70,10,90,40", r"^the box \(70,10,90,40\) lies outside the 64x64 image"),
    ("10,10,15,40", r"^the box \(10,10,15,40\) is smaller than 8 px"),
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


# ----------------------------------------------------------------------------- stylized faces (hand-annotated)

#: targets on the annotated stylized faces with eye centres >= 60 px apart (fractions of the IOD, mean over images)
TARGETS = {"five": 0.02, "eye corners": 0.08, "lips": 0.06, "chin": 0.10}
#: with the extra points given, the fit follows them to about the annotation's uncertainty (3-5% of the IOD on the
#: big face, 6-20% on the small ones): mean over all images per group, and worst image and group (measured: 5.0%
#: and 7.3%, both on the 16 px IOD three-quarter face)
WITH_EXTRA_MEAN, WITH_EXTRA_WORST = 0.06, 0.09


@pytest.fixture(scope="module")
def stylized():
    """points.json of ../shared/assets/stylized, with each image's first-frame size."""
    import json

    from PIL import Image

    folder = shared_assets_dir() / "stylized"
    if not (folder / "points.json").is_file():
        pytest.skip(f"the annotated stylized faces are not at {folder}")
    table = json.loads((folder / "points.json").read_text())
    for item in table.values():
        with Image.open(folder / item["file"]) as image:
            item["size"] = image.size
    return table


def _scores(model, table, extra: bool, rigid: bool = False) -> dict[str, dict[str, float]]:
    from tools import score_stylized as ss

    out = {}
    for key, item in table.items():
        points, named = pl.parse_points(ss.position_text(item["points"], extra))
        if rigid:  # the rigid fit of the canonical face, as before the shaped fit
            face = pl.face_from_transform(pl.fit_transform(points, *item["size"], model), model, *item["size"])
        else:
            face = pl.place_face(points, *item["size"], model, "pose", named).face
        out[key] = ss.score_face(face, {k: np.asarray(v, float) for k, v in item["points"].items()})
    return out


def _iod(item) -> float:
    return float(np.linalg.norm(np.subtract(item["points"]["left_eye_centre"], item["points"]["right_eye_centre"])))


def test_stylized_faces_fit_the_drawing(model, stylized):
    """Scored on the points not given (eye corners, lips, chin) and the five given ones."""
    scores = _scores(model, stylized, extra=False)
    big = [k for k, item in stylized.items() if _iod(item) >= 60]
    small = [k for k in stylized if k not in big]
    assert big and small
    for group, limit in TARGETS.items():
        mean = np.mean([scores[k][group] for k in big])
        assert mean <= limit, f"{group}: {mean:.3f} of the IOD on the faces with IOD >= 60 px (target {limit})"
    assert max(s["five"] for s in scores.values()) <= TARGETS["five"]  # every face passes through its five points
    # smaller faces (annotation uncertainty 6-20% of their IOD) do not get worse than the rigid fit, on average
    rigid = _scores(model, stylized, extra=False, rigid=True)
    for group in TARGETS:
        assert np.mean([scores[k][group] for k in small]) <= np.mean([rigid[k][group] for k in small]), group


def test_stylized_faces_follow_extra_points(model, stylized):
    scores = _scores(model, stylized, extra=True)
    for group in TARGETS:
        assert np.mean([s[group] for s in scores.values()]) <= WITH_EXTRA_MEAN, (group, scores)
    assert max(max(s.values()) for s in scores.values()) <= WITH_EXTRA_WORST, scores
    big = [k for k, item in stylized.items() if _iod(item) >= 60]
    assert max(scores[k]["five"] for k in big) <= TARGETS["five"]


def test_stylized_close_up_box_reaching_below_the_image(model, stylized):
    """The manga close-up's face box ends 50 px below the 400x400 frame: accepted, the chin placed on it."""
    item = next(item for item in stylized.values() if item["face_box"][3] > item["size"][1])
    placed, note = pl.place_reference(model, item["size"], "box", ",".join(map(str, item["face_box"])))
    assert note == "face placed in the box, facing the camera"
    chin = placed.face.landmarks_px()[pl.CHIN]
    assert abs(chin[1] - item["face_box"][3]) < 0.03 * (item["face_box"][3] - item["face_box"][1])


def test_mouth_motion_stays_on_the_drawing(model, stylized):
    """A synthetic mouth opening (jaw and lower lip down 1.2 cm, corners barely moving) retargeted onto the fitted
    manga close-up: the eyes and mouth corners stay on the drawn ones, the lower lip opens below the upper one."""
    from aniportrait_lib.motion.build import motion_from_mesh_offsets, project_motion
    from tools import score_stylized as ss

    key = max(stylized, key=lambda k: _iod(stylized[k]))
    item = stylized[key]
    points, _ = pl.parse_points(ss.position_text(item["points"], False))
    face = pl.place_face(points, *item["size"], model).face
    v = np.asarray(model.vertices, dtype=np.float64)
    # opening weight: 0 at and above the mouth corners' height, 1 from 1 cm below it (lower lip, jaw, chin)
    weight = np.clip((v[61, 1] - v[:, 1]) / 1.0, 0.0, 1.0)
    opening = np.linspace(0.0, 1.2, 6)
    offsets = np.zeros((len(opening), 468, 3))
    offsets[:, :, 1] = -opening[:, None] * weight[None]
    motion = motion_from_mesh_offsets(offsets, face, 30.0)
    frames = project_motion(motion, face, *item["size"]).points
    iod = _iod(item)
    for px in frames:
        five = pl.five_points_from_landmarks(px)
        assert np.linalg.norm(five[[0, 1, 3, 4]] - points[[0, 1, 3, 4]], axis=1).max() < 0.03 * iod
    gap = frames[:, pl.LOWER_LIP, 1] - frames[:, pl.UPPER_LIP, 1]
    assert np.all(np.diff(gap) > 0) and gap[-1] - gap[0] > 0.05 * iod


def test_lip_motion_is_scaled_to_the_drawn_mouth(model, stylized):
    """The placed face maps motion offsets through its reshaping: a lip opening measured on human proportions opens
    a drawn mouth in proportion to its width (the mouth region's scale), and a detected face's offsets stay as they are."""
    from aniportrait_lib.data import Face
    from aniportrait_lib.motion.build import motion_from_mesh_offsets
    from tools import score_stylized as ss

    v = np.asarray(model.vertices, dtype=np.float64)
    human_width = np.linalg.norm(v[291] - v[61])
    for key, item in stylized.items():
        points, _ = pl.parse_points(ss.position_text(item["points"], False))
        face = pl.place_face(points, *item["size"], model).face
        mouth_scale = np.linalg.norm(face.mesh_canonical[291] - face.mesh_canonical[61]) / human_width
        offsets = np.zeros((1, 468, 3))
        offsets[0, pl.LOWER_LIP, 1] = -1.0  # the lower lip 1 cm down
        moved = motion_from_mesh_offsets(offsets, face, 30.0).meshes[0] - face.mesh_canonical
        drop = -moved[pl.LOWER_LIP, 1]
        print(f"[placement] {key}: mouth {mouth_scale:.2f} x the human width, a 1 cm lip drop moves {drop:.2f} cm")
        assert abs(drop - mouth_scale) < 0.1 * mouth_scale, (key, drop, mouth_scale)
        assert np.abs(np.delete(moved, pl.LOWER_LIP, axis=0)).max() == 0.0  # only the moved vertex moves
        assert np.allclose(Face.from_dict(face.to_dict()).offset_map, face.offset_map)
    detected = Face.from_dict({**face.to_dict(), "offset_map": None})
    assert np.array_equal(motion_from_mesh_offsets(offsets, detected, 30.0).meshes[0] - detected.mesh_canonical, offsets[0])
