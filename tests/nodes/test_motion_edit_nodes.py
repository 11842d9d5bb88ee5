"""Motion editing nodes called in-process with a real reference face and motion."""
from __future__ import annotations

import numpy as np
import pytest

from support.comfy_inprocess import ui_text
from support.paths import shared_assets_dir


@pytest.fixture(scope="module")
def lib(pack):
    from aniportrait_pack.aniportrait_lib import data
    from aniportrait_pack.aniportrait_lib.motion import build as motion, edit as motion_edit
    from aniportrait_pack.aniportrait_lib.face.landmarker import FaceLandmarker
    from aniportrait_pack.nodes import motion_edit as nodes

    return type("Lib", (), dict(data=data, motion=motion, motion_edit=motion_edit, FaceLandmarker=FaceLandmarker, nodes=nodes))


@pytest.fixture(scope="module")
def face(lib):
    from skimage import data

    with lib.FaceLandmarker(shared_assets_dir() / "face_landmarker.task") as lm:
        return lm.analyze(np.ascontiguousarray(data.astronaut()[10:220, 120:330]))


@pytest.fixture()
def motion(lib, face):
    """10 s at 30 fps: the reference mesh with small moving offsets, and head poses."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 6, 300)[:, None, None]
    offsets = 0.03 * np.sin(t * rng.uniform(1, 3, (1, 468, 3)))
    poses = np.concatenate([rng.normal(0, 4, (300, 3)), rng.normal(0, 1, (300, 3))], axis=1)
    return lib.data.Motion(face.mesh_canonical[None] + offsets, poses, 30.0)


def test_nodes_are_registered_with_valid_schemas(pack, lib):
    import asyncio

    import aniportrait_pack.nodes as pack_nodes

    listed = asyncio.run(asyncio.run(pack_nodes.comfy_entrypoint()).get_node_list())
    for node in lib.nodes.NODES:
        assert node in listed
        schema = node.define_schema()
        assert schema.category == "AniPortrait/motion" and schema.display_name.startswith("AniPortrait ")


def test_edit_motion_node(lib, face, motion):
    node = lib.nodes.EditMotion
    same = node.execute(face, motion, 1.0, 1.0, 1.0, 1.0, False, 1).result[0]
    assert np.array_equal(same.meshes, motion.meshes) and np.array_equal(same.poses, motion.poses)
    out = node.execute(face, motion, 0.0, 1.0, 0.5, 2.0, False, 1).result[0]
    lips = lib.motion_edit.mouth_indices()
    np.testing.assert_allclose(out.meshes[:, lips], np.broadcast_to(face.mesh_canonical[lips], (300, len(lips), 3)), atol=1e-12)
    assert np.array_equal(out.meshes[:, 10], motion.meshes[:, 10])  # forehead untouched
    assert np.array_equal(out.poses[:, :3], motion.poses[:, :3] * 0.5) and np.array_equal(out.poses[:, 3:], motion.poses[:, 3:] * 2.0)
    frozen = node.execute(face, motion, 1.0, 1.0, 1.0, 1.0, True, 5).result[0]
    assert not frozen.poses.any() and frozen.num_frames == 300
    landmarks = lib.motion.project_motion(frozen, face, 256, 256)  # still a motion the rest of the graph takes
    assert landmarks.points.shape == (300, 468, 2)


def test_shift_motion_node(lib, motion):
    out = lib.nodes.ShiftMotion.execute(motion, 3, True, 0, 0)
    shifted = out.result[0]
    assert shifted.num_frames == 300 and np.array_equal(shifted.meshes[3:], motion.meshes[:297])
    assert ui_text(out) == "300 -> 300 frames (10.00 s at 30 fps)"
    out = lib.nodes.ShiftMotion.execute(motion, -2, False, 10, 30)
    assert np.array_equal(out.result[0].poses, motion.poses[12:270]) and ui_text(out) == "300 -> 258 frames (8.60 s at 30 fps)"


def test_add_blinks_node(lib, face, motion):
    out = lib.nodes.AddBlinks.execute(face, motion, 15.0, 6, 4, 1.0)
    blinking = out.result[0]
    plan = lib.motion_edit.plan_blinks(face, motion, 15.0, 6, 4)
    assert ui_text(out) == f"{len(plan.starts)} blinks of 6 frames added" and len(plan.starts) >= 1
    upper, lower = lib.motion_edit.eyelid_pairs(face.mesh_canonical)[1]
    points = lib.motion.project_motion(blinking, face, 512, 512).points
    centre = plan.starts[0] + 2
    assert np.linalg.norm(points[centre, upper] - points[centre, lower], axis=1).max() < 0.05
    again = lib.nodes.AddBlinks.execute(face, motion, 15.0, 6, 4, 1.0).result[0]
    assert np.array_equal(again.meshes, blinking.meshes)


def test_motion_keyframes_node(lib, face, motion):
    out = lib.nodes.MotionKeyframes.execute(motion, 3)
    kept, multiplier, video_fps = out.result
    # 300 frames: 0, 3, ..., 297 and the last frame 299; x3 interpolation gives 301 frames at 30 fps
    assert kept.num_frames == 101 and kept.fps == 10.0 and multiplier == 3 and video_fps == 30.0
    assert np.array_equal(kept.meshes[:100], motion.meshes[0:300:3]) and np.array_equal(kept.poses[100], motion.poses[299])
    assert ui_text(out) == "300 -> 101 keyframes; interpolated x3: 301 frames at 30 fps"
    landmarks = lib.motion.project_motion(kept, face, 256, 256)  # the sampler draws 101 pose frames at 10 fps
    assert landmarks.points.shape == (101, 468, 2) and landmarks.fps == 10.0


def test_bad_inputs_are_plain_value_errors(lib, face, motion):
    with pytest.raises(ValueError, match=r"^trim_start=200 and trim_end=100 remove all 300 frames of the motion$") as info:
        lib.nodes.ShiftMotion.execute(motion, 0, True, 200, 100)
    assert type(info.value) is ValueError
    with pytest.raises(ValueError, match=r"^offset_frames=300 with keep_length on shifts all movement out of the "
                                         r"300-frame motion, so every frame would be a held copy of its first frame "
                                         r"\(a still face\); use offset_frames from -298 to 298, or turn keep_length off$"):
        lib.nodes.ShiftMotion.execute(motion, 300, True, 0, 0)
    with pytest.raises(ValueError, match=r"^60 blinks per minute of 30 frames each at 30 fps leave no open-eye time"):
        lib.nodes.AddBlinks.execute(face, motion, 60.0, 30, 0, 1.0)
