"""Which face, in-process with real ComfyUI types: Face Analysis, Video Pose Template and Face Reenactment on the
two-person clip (``../shared/assets/multiface``: the father's face large and lower left, the child's small and upper
right), and core's FACE_LANDMARKS through Face From Core Landmarks and the video nodes' face_landmarks input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from support.comfy_inprocess import comfy_image, ui_text
from support.core_landmarks import core_face_landmarks
from support.paths import shared_assets_dir

FRAMES = 12


@pytest.fixture(scope="module")
def nodes(pack):
    from aniportrait_pack.nodes import core_faces, face

    return type("Nodes", (), dict(face=face, core_faces=core_faces))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    with Image.open(shared_assets_dir() / "multiface" / "utility_hitpaw_video_enhance-1.webp") as im:
        return np.stack([np.asarray(f.convert("RGB")) for f, _ in zip(ImageSequence.Iterator(im), range(FRAMES))])


def _box_centre(face) -> np.ndarray:
    px = face.landmarks_px()
    return (px.min(0) + px.max(0)) / 2


def test_face_analysis_takes_the_chosen_face(nodes, landmarker, clip):
    image = comfy_image(clip[0])
    father = nodes.face.FaceAnalysis.execute(landmarker, image).result[0]  # a saved workflow's inputs: the largest
    child = nodes.face.FaceAnalysis.execute(landmarker, image, 0, 0, "index", 1, "").result[0]
    assert _box_centre(child)[1] < _box_centre(father)[1] and _box_centre(child)[0] > _box_centre(father)[0]
    # nearest a point given in the photo's own pixels, analysed at another size: the point moves with the resize
    resized = nodes.face.FaceAnalysis.execute(landmarker, image, 512, 512, "nearest", 0, "190,100").result[0]
    assert resized.image_size == (512, 512)
    np.testing.assert_allclose(_box_centre(resized) * 350 / 512, _box_centre(child), atol=3.0)
    with pytest.raises(ValueError, match=r"^face_index 2 asked for the third face from the left but the reference image "
                                         r"has 2 faces; set face_index to 0 or 1"):
        nodes.face.FaceAnalysis.execute(landmarker, image, 0, 0, "index", 2, "")
    with pytest.raises(ValueError, match=r"^face_point must be 'x,y' in pixels"):
        nodes.face.FaceAnalysis.execute(landmarker, image, 0, 0, "nearest", 0, "")


def test_video_nodes_follow_the_chosen_person(nodes, landmarker, clip):
    frames = torch.from_numpy(clip).float().div(255.0)
    per_person = {}
    for index in (0, 1):
        out = nodes.face.VideoPoseTemplate.execute(landmarker, frames, 25.0, 5, "interpolate", "index", index, "")
        assert ui_text(out) == (f"face found in {FRAMES} of {FRAMES} frames; up to 2 faces in view, following the "
                                f"{('first', 'second')[index]} face from the left (chosen in frame 0)")
        per_person[index] = out.result[0]
    # the two people move differently: their head motions differ
    assert not np.allclose(np.asarray(per_person[0].poses), np.asarray(per_person[1].poses), atol=1e-3)
    reference = nodes.face.FaceAnalysis.execute(landmarker, comfy_image(clip[0])).result[0]
    child = nodes.face.FaceReenactment.execute(landmarker, frames, reference, 25.0, 3, "interpolate", "nearest", 0,
                                               "190,100").result[0]
    father = nodes.face.FaceReenactment.execute(landmarker, frames, reference, 25.0, 3, "interpolate").result[0]
    assert child.num_frames == father.num_frames == FRAMES
    assert not np.allclose(child.meshes, father.meshes, atol=1e-3)


def test_core_face_landmarks_feed_the_pack(nodes, landmarker, clip):
    """FACE_LANDMARKS in core's layout, built from the pack's own detections: the same face and the same motion."""

    per_frame = [landmarker.detect(f) for f in clip]
    value = core_face_landmarks(per_frame, clip.shape[2], clip.shape[1])
    image = comfy_image(clip[0])
    own = nodes.face.FaceAnalysis.execute(landmarker, image, 0, 0, "index", 1, "").result
    out = nodes.core_faces.FaceFromCoreLandmarks.execute(landmarker, value, 0, "index", 1, "")
    face, pose = out.result
    assert ui_text(out) == "2 faces found, using the second face from the left"
    np.testing.assert_allclose(face.landmarks, own[0].landmarks, atol=1e-5)
    np.testing.assert_allclose(face.transform, own[0].transform, atol=1e-5)
    assert tuple(pose.shape) == tuple(own[1].shape) and float((pose - own[1]).abs().max()) <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match=rf"^frame {FRAMES} asked for but face_landmarks covers {FRAMES} images"):
        nodes.core_faces.FaceFromCoreLandmarks.execute(landmarker, value, FRAMES)
    frames = torch.from_numpy(clip).float().div(255.0)
    mine = nodes.face.VideoPoseTemplate.execute(landmarker, frames, 25.0, 5, "interpolate", "index", 1, "").result[0]
    core = nodes.face.VideoPoseTemplate.execute(landmarker, frames, 25.0, 5, "interpolate", "index", 1, "", value).result[0]
    np.testing.assert_allclose(np.asarray(core.poses), np.asarray(mine.poses), atol=1e-4)
    with pytest.raises(ValueError, match=rf"^face_landmarks covers {FRAMES} images but the frames input has 3"):
        nodes.face.VideoPoseTemplate.execute(landmarker, frames[:3], 25.0, 5, "interpolate", "largest", 0, "", value)
