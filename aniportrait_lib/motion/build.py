"""Steps on a :class:`~aniportrait_lib.data.Motion`: build it, give it head poses, project it.

Whatever made a motion (Audio2Mesh + Audio2Pose, a pose template, face reenactment), it is
projected and drawn the same way: frame ``t`` is seen through ``reference.transform @ M(poses[t])``.
"""
from __future__ import annotations

import numpy as np

from ..data import Face, Landmarks, Motion, PoseTemplate
from ..face import pose_math
from . import pose_template


def motion_from_mesh_offsets(offsets: np.ndarray, face: Face, fps: float) -> Motion:
    """Audio2Mesh output -> a motion with the reference's head pose on every frame.

    Args:
        offsets: ``(T, 468, 3)`` per-frame vertex displacements (cm) from the canonical reference mesh.
        face: the reference face (a face placed on a drawing maps the offsets to its proportions).
        fps: frame rate of the offsets.
    """
    meshes = face.map_offsets(offsets) + face.mesh_canonical[None]
    return Motion(meshes, np.zeros((meshes.shape[0], 6)), fps)


def apply_pose_template(motion: Motion, template: PoseTemplate) -> Motion:
    """Replace the motion's head poses by ``template``, resampled to the motion's fps when they differ
    and looped back and forth to its length (no halving, no smoothing, as the original)."""
    poses = template.poses
    if abs(template.fps - motion.fps) > 1e-6:
        poses = pose_template.resample_poses(poses, template.fps, motion.fps)
    return motion.with_poses(pose_template.loop_template(poses, motion.num_frames))


def project_motion(motion: Motion, face: Face, width: int, height: int) -> Landmarks:
    """Project a motion through the reference face's transform to ``width x height`` pixels."""
    if width < 1 or height < 1:
        raise ValueError(f"the output size must be positive, got {width}x{height}")
    points = pose_math.project_points(motion.meshes, face.transform, motion.poses, height, width)
    return Landmarks(points, width, height, motion.fps)


def relative_to_reference(meshes: np.ndarray, transforms: np.ndarray, ref_transform: np.ndarray, fps: float) -> Motion:
    """Absolute per-frame camera transforms -> a motion relative to ``reference`` that projects the same.

    The reference transform ``L | t_ref`` carries MediaPipe's scale (``L = s R``, s ~ 1) while the
    absolute transforms are rigid. For frame ``t`` with ``R_t | t_t``: ``L^-1 R_t = R_rel S`` (polar
    decomposition); the pose gets the rotation ``R_rel`` and the translation ``L^-1 (t_t - t_ref)``,
    and the mesh is multiplied by ``S`` (``~ I / s``), so ``T_ref @ M(pose) @ S v = R_t v + t_t``.

    Args:
        meshes: ``(T, N, 3)`` cm canonical meshes.
        transforms: ``(T, 4, 4)`` canonical -> camera transforms.
        ref_transform: ``(4, 4)`` transform of the reference face the motion is relative to.
        fps: frame rate.
    """
    transforms = np.asarray(transforms, dtype=np.float64)
    ref_transform = np.asarray(ref_transform, dtype=np.float64)
    linear_inv = np.linalg.inv(ref_transform[:3, :3])
    out_meshes = np.empty_like(np.asarray(meshes, dtype=np.float64))
    poses = np.empty((transforms.shape[0], 6))
    for t, matrix in enumerate(transforms):
        u, sigma, vt = np.linalg.svd(linear_inv @ matrix[:3, :3])
        rotation = u @ vt
        stretch = vt.T @ np.diag(sigma) @ vt
        out_meshes[t] = np.asarray(meshes[t], dtype=np.float64) @ stretch.T
        relative = np.eye(4)
        relative[:3, :3] = rotation
        relative[:3, 3] = linear_inv @ (matrix[:3, 3] - ref_transform[:3, 3])
        poses[t, :3], poses[t, 3:] = pose_math.matrix_to_euler(relative)
    return Motion(out_meshes, poses, fps)
