"""Choosing the face of a picture with two people, and following that person through the clip.

Material: ``../shared/assets/multiface`` (a father and a child; its README: the child's face is above and to the
right of the father's). Looked at frame 0 (saved as png): the father's face is the large one lower left, the
child's the small one upper right, in every frame.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageSequence

from aniportrait_lib.face import selection, tracking
from aniportrait_lib.face.landmarker import FaceLandmarker, NoFaceError
from aniportrait_lib.face.selection import FaceChoice, face_box

from support.media import real_clip_frames
from support.paths import shared_assets_dir

#: a followed face box moves at most this many face sizes between frames in this clip (measured: 0.03 father, 0.06 child)
MAX_STEP = 0.1
POINT_ON_CHILD = (190.0, 100.0)
POINT_ON_FATHER_CHIN = (150.0, 290.0)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    with Image.open(shared_assets_dir() / "multiface" / "utility_hitpaw_video_enhance-1.webp") as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


@pytest.fixture(scope="module")
def landmarker(face_landmarker_path):
    with FaceLandmarker(face_landmarker_path) as lm:
        yield lm


@pytest.fixture(scope="module")
def people(clip, landmarker):
    """Per frame, the (father, child) boxes: both faces found in every frame; the child's is the higher one."""
    out = []
    for frame in clip:
        boxes = [face_box(f) for f in landmarker.detect(frame)]
        assert len(boxes) == 2
        father, child = sorted(boxes, key=lambda b: -(b[1] + b[3]))
        out.append((father, child))
    return out


def _centre(box):
    return (box[:2] + box[2:]) / 2


def test_the_choice_picks_the_person_in_the_first_frame(clip, landmarker, people):
    father, child = people[0]
    # the README's description: the child's face above and to the right of the father's, the father's the larger
    assert _centre(child)[1] < _centre(father)[1] and _centre(child)[0] > _centre(father)[0]
    assert selection.box_size(father) > 1.3 * selection.box_size(child)
    picks = {
        "largest": landmarker.analyze(clip[0]),
        "index 0": landmarker.analyze(clip[0], FaceChoice("index", 0)),
        "index 1": landmarker.analyze(clip[0], FaceChoice("index", 1)),
        "nearest the child": landmarker.analyze(clip[0], FaceChoice("nearest", point=POINT_ON_CHILD)),
        "nearest the father's chin": landmarker.analyze(clip[0], FaceChoice("nearest", point=POINT_ON_FATHER_CHIN)),
    }
    want = {"largest": father, "index 0": father, "index 1": child, "nearest the child": child,
            "nearest the father's chin": father}
    for name, face in picks.items():
        np.testing.assert_allclose(face_box(face), want[name], atol=1e-9, err_msg=name)


@pytest.mark.parametrize("choice, who", [
    (FaceChoice(), 0), (FaceChoice("index", 0), 0), (FaceChoice("index", 1), 1),
    (FaceChoice("nearest", point=POINT_ON_CHILD), 1),
])
def test_tracking_stays_on_the_chosen_person(clip, landmarker, people, choice, who):
    calls = []
    tracked = tracking.track_faces(iter(clip), landmarker, "interpolate", lambda d, t: calls.append((d, t)), count=len(clip),
                                   choose=choice)
    assert calls[-1] == (len(clip), len(clip)) and tracked.detected.all() and len(tracked.faces) == len(clip)
    assert tracked.summary() == (f"face found in {len(clip)} of {len(clip)} frames; up to 2 faces in view, following "
                                 f"{choice.describe()} (chosen in frame 0)")
    boxes = np.array([face_box(f) for f in tracked.faces])
    for i, box in enumerate(boxes):  # the same person's box in every frame, never the other one's
        np.testing.assert_allclose(box, people[i][who], atol=1e-9, err_msg=f"frame {i}")
    steps = np.linalg.norm(np.diff((boxes[:, :2] + boxes[:, 2:]) / 2, axis=0), axis=1) / selection.box_size(boxes[0])
    assert steps.max() < MAX_STEP


def test_a_frame_where_only_the_other_person_is_seen_is_a_missing_face(clip, landmarker, people):
    """The child's face greyed out in frames 10-14: tracking the child fills those frames, it does not jump to the father."""
    frames = clip.copy()
    hidden = range(10, 15)
    for i in hidden:
        x0, y0, x1, y1 = np.round(people[i][1] + [-12, -12, 12, 12]).astype(int)
        frames[i, max(y0, 0):y1, max(x0, 0):x1] = 128
        assert len(landmarker.detect(frames[i])) == 1  # only the father is found there
    tracked = tracking.track_faces(frames, landmarker, "interpolate", choose=FaceChoice("index", 1))
    assert [i for i, d in enumerate(tracked.detected) if not d] == list(hidden)
    for i in hidden:  # filled between the child's faces of frames 9 and 15, far from the father
        want = face_box(tracked.faces[9]) + (i - 9) / 6 * (face_box(tracked.faces[15]) - face_box(tracked.faces[9]))
        np.testing.assert_allclose(face_box(tracked.faces[i]), want, atol=1e-6)
    stopped = tracking.track_faces(frames, landmarker, "stop", choose=FaceChoice("index", 1))
    assert len(stopped.faces) == 10 and stopped.dropped == len(frames) - 10


def test_single_face_clips_give_the_same_faces_as_before(landmarker):
    """Default choice on one-person clips = the former one-face tracking, landmark for landmark.

    The guitar clip has face-less frames and, in frames 23 and 25, a second face-like patch (small, lower left) the
    many-face detector returns: the followed face stays the man's."""
    for name in ("api_kling_avatar2-1.webp", "video_wan2_2_14B_s2v-1.webp"):
        frames = real_clip_frames(name)
        before = tracking.fill_missing(landmarker.analyze_frames(frames), "interpolate")
        now = tracking.track_faces(frames, landmarker, "interpolate")
        assert now.detected.tolist() == before.detected.tolist(), name
        for i, (a, b) in enumerate(zip(before.faces, now.faces)):
            np.testing.assert_array_equal(a.landmarks, b.landmarks, err_msg=f"{name} frame {i}")
            np.testing.assert_array_equal(a.transform, b.transform, err_msg=f"{name} frame {i}")
        if name.startswith("video_wan"):
            assert len(landmarker.detect(frames[23])) == 2
            assert now.summary().startswith("face found in 64 of 69 frames, 5 filled in")


def test_the_lone_face_is_taken_after_a_cut_only_while_one_person_was_ever_seen(landmarker):
    face = landmarker.analyze(real_clip_frames("api_kling_avatar2-1.webp", 1)[0])
    moved = type(face)(face.landmarks + [0.45, 0.0, 0.0], face.mesh_canonical, face.transform, face.blendshapes,
                       face.blendshape_names, face.image_size)
    assert selection.continuation_cost(face_box(face), face_box(moved)) is None  # far beyond one face size
    alone = selection.follow_faces([[face], [moved]])
    assert alone.faces[1] is moved  # a cut in a one-person clip: still that person
    other = selection.follow_faces([[face, moved], [moved]], FaceChoice("index", 0))
    assert other.faces == [face, None] and other.most_faces == 2  # the other person, not the followed one


def test_choice_errors_are_one_sentence_saying_what_to_change(clip, landmarker):
    with pytest.raises(ValueError, match=r"^face_index 2 asked for the third face from the left but the reference image has "
                                         r"2 faces; set face_index to 0 or 1 \(0 = leftmost\), or use which_face = largest or "
                                         r"nearest$"):
        landmarker.analyze(clip[0], FaceChoice("index", 2))
    with pytest.raises(ValueError, match=r"^face_index 3 asked for the fourth face from the left but no frame of the video "
                                         r"has more than 2 faces; set face_index to 0 or 1"):
        tracking.track_faces(clip[:3], landmarker, choose=FaceChoice("index", 3))
    with pytest.raises(ValueError, match=r"^face_point must be 'x,y' in pixels of the image \(e\.g\. 320,180\) when "
                                         r"which_face = nearest; got 'left'$"):
        FaceChoice.from_inputs("nearest", 0, "left")
    with pytest.raises(ValueError, match=r"^which_face must be one of largest, index, nearest; got 'biggest'$"):
        FaceChoice.from_inputs("biggest")
    assert FaceChoice.from_inputs("nearest", 5, " (190, 100) ") == FaceChoice("nearest", 0, POINT_ON_CHILD)
    assert FaceChoice.from_inputs("index", 1, "junk") == FaceChoice("index", 1)
    with pytest.raises(NoFaceError):
        landmarker.analyze(np.zeros((64, 64, 3), np.uint8), FaceChoice("index", 1))
