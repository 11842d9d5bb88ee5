"""The face-tracking loop on a real clip with face-less frames, and its missing-face policies."""
from __future__ import annotations

import numpy as np
import pytest

from aniportrait_lib.data import Face
from aniportrait_lib.face import tracking
from aniportrait_lib.face.landmarker import FaceLandmarker

from support.media import real_clip_frames

GUITAR_CLIP = "video_wan2_2_14B_s2v-1.webp"  # the assets README: some frames have no face, the first is frame 10


@pytest.fixture(scope="module")
def guitar_detections(face_landmarker_path):
    frames = real_clip_frames(GUITAR_CLIP)
    with FaceLandmarker(face_landmarker_path) as lm:
        return frames, lm.analyze_frames(frames)


def test_interpolate_fills_every_faceless_frame_of_a_real_clip(guitar_detections, face_landmarker_path):
    frames, detections = guitar_detections
    missing = [i for i, f in enumerate(detections) if f is None]
    assert missing, "the clip is expected to have frames without a face"
    with FaceLandmarker(face_landmarker_path) as lm:
        calls = []
        tracked = tracking.track_faces(frames, lm, "interpolate", progress=lambda done, total: calls.append((done, total)))
    assert len(tracked.faces) == len(frames) and tracked.filled == len(missing) and tracked.dropped == 0
    assert calls[-1] == (len(frames), len(frames))
    # frames 23 and 25 also hold a small face-like patch (lower left) the many-face detector returns
    assert (f"face found in {len(frames) - len(missing)} of {len(frames)} frames, {len(missing)} filled in; up to 2 faces "
            f"in view, following the largest face (chosen in frame 0)") == tracked.summary()
    for i in missing:  # each filled frame lies between its nearest detected neighbours
        before = max(j for j in range(i) if detections[j] is not None) if any(detections[j] for j in range(i)) else None
        after = min((j for j in range(i + 1, len(frames)) if detections[j] is not None), default=None)
        if before is not None and after is not None:
            w = (i - before) / (after - before)
            want = (1 - w) * detections[before].transform + w * detections[after].transform
            np.testing.assert_allclose(tracked.faces[i].transform, want, atol=1e-12)


def test_stop_cuts_at_the_first_faceless_frame_and_says_so(guitar_detections):
    _, detections = guitar_detections
    first_miss = next(i for i, f in enumerate(detections) if f is None)
    tracked = tracking.fill_missing(detections, "stop")
    assert len(tracked.faces) == first_miss and tracked.filled == 0
    assert tracked.dropped == len(detections) - first_miss
    assert f"{tracked.dropped} dropped after the first frame without a face" in tracked.summary()


def test_hold_repeats_the_last_face(guitar_detections):
    _, detections = guitar_detections
    tracked = tracking.fill_missing(detections, "hold")
    for i, face in enumerate(detections):
        if face is None:
            last = max(j for j in range(i) if detections[j] is not None)
            assert tracked.faces[i] is detections[last]


def _face(value: float) -> Face:
    return Face(np.full((478, 3), value), np.full((468, 3), value), np.eye(4) * (1 + value), np.full(51, value),
                [f"b{i}" for i in range(51)], (64, 48))


def test_policies_at_the_ends_and_errors():
    a, b = _face(0.0), _face(1.0)
    tracked = tracking.fill_missing([None, a, None, None, b, None], "interpolate")
    assert [float(f.landmarks[0, 0]) for f in tracked.faces] == pytest.approx([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0])
    assert tracked.detected.tolist() == [False, True, False, False, True, False]
    with pytest.raises(ValueError, match="no face was found in any of the 3 frames"):
        tracking.fill_missing([None, None, None])
    with pytest.raises(ValueError, match="on_missing must be one of interpolate, hold, stop; got 'skip'"):
        tracking.fill_missing([a], "skip")
    with pytest.raises(ValueError, match="the video has no frames"):
        tracking.fill_missing([])
