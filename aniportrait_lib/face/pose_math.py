"""Head-pose maths and the perspective projection of the original (``src/utils/pose_util.py``).

Conventions: a 6D pose is ``[rx, ry, rz, tx, ty, tz]`` = scipy ``from_euler('xyz', degrees)``
(extrinsic x, then y, then z) + translation (cm), applied to the reference face's canonical mesh
as ``T_ref @ M(pose)``. Pixel coordinates have the origin at the top-left corner.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

#: MediaPipe/AniPortrait virtual camera: vertical field of view (degrees), near and far planes
FOV_DEGREES = 63.0
NEAR = 1.0
FAR = 10000.0
#: the audio2vid post-processing: rotations are halved, then smoothed over this many frames
ROTATION_SCALE = 0.5
SMOOTHING_WINDOW = 7


def poses_to_matrices(poses: np.ndarray) -> np.ndarray:
    """``(T, 6)`` poses (euler xyz degrees, translation) -> ``(T, 4, 4)`` float64 rigid transforms."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 6)
    m = np.tile(np.eye(4), (poses.shape[0], 1, 1))
    if poses.shape[0]:
        m[:, :3, :3] = Rotation.from_euler("xyz", poses[:, :3], degrees=True).as_matrix()
    m[:, :3, 3] = poses[:, 3:]
    return m


def _rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """Markley's matrix -> unit quaternion (x, y, z, w), as scipy <= 1.11 ``from_matrix`` does.

    Pinned here because newer scipy orthogonalises slightly non-orthonormal (float32-derived)
    matrices differently (~1e-6 degrees), and the goldens were made with scipy 1.11.
    """
    decision = np.array([rot[0, 0], rot[1, 1], rot[2, 2], np.trace(rot)])
    choice = int(np.argmax(decision))
    q = np.empty(4)
    if choice != 3:
        i, j, k = choice, (choice + 1) % 3, (choice + 2) % 3
        q[i] = 1 - decision[3] + 2 * rot[i, i]
        q[j] = rot[j, i] + rot[i, j]
        q[k] = rot[k, i] + rot[i, k]
        q[3] = rot[k, j] - rot[j, k]
    else:
        q[0] = rot[2, 1] - rot[1, 2]
        q[1] = rot[0, 2] - rot[2, 0]
        q[2] = rot[1, 0] - rot[0, 1]
        q[3] = 1 + decision[3]
    return q / np.linalg.norm(q)


def matrix_to_euler(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(4, 4)`` transform -> (euler xyz degrees ``(3,)``, translation ``(3,)``)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    quat = _rotation_to_quaternion(matrix[:3, :3])
    return Rotation.from_quat(quat).as_euler("xyz", degrees=True), matrix[:3, 3].copy()


def smooth_poses(seq: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Centred moving average, truncated at the ends (even windows are ``window + 1`` wide).

    ``out[i] = mean(seq[max(0, i - w//2) : min(T, i + w//2 + 1)])``; keeps the input dtype.
    ``window <= 1`` returns a copy.
    """
    seq = np.asarray(seq)
    if window <= 1 or seq.shape[0] == 0:
        return seq.copy()
    half = window // 2
    n = seq.shape[0]
    csum = np.concatenate([np.zeros((1,) + seq.shape[1:]), np.cumsum(seq.astype(np.float64), axis=0)])
    lo = np.maximum(0, np.arange(n) - half)
    hi = np.minimum(n, np.arange(n) + half + 1)
    counts = (hi - lo).reshape((-1,) + (1,) * (seq.ndim - 1))
    return ((csum[hi] - csum[lo]) / counts).astype(seq.dtype)


def postprocess_poses(chunks: list[np.ndarray], rotation_scale: float = ROTATION_SCALE, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """The audio2vid post-processing: scale rotations of each raw chunk, concatenate, smooth.

    Args:
        chunks: raw Audio2Pose outputs, each ``(T_k, 6)``.
    Returns:
        ``(sum T_k, 6)`` poses in the chunks' dtype.
    """
    scaled = []
    for c in chunks:
        c = np.array(c, copy=True)
        c[:, :3] *= rotation_scale
        scaled.append(c)
    return smooth_poses(np.concatenate(scaled, axis=0), window)


def perspective_matrix(aspect: float) -> np.ndarray:
    """The original's flat float32 perspective matrix (16,) for ``aspect = W / H`` (y flipped)."""
    f = 1.0 / np.tan(np.pi / 180.0 * FOV_DEGREES / 2.0)
    denom = 1.0 / (NEAR - FAR)
    m = np.zeros(16, dtype=np.float32)
    m[0] = f / aspect
    m[5] = -f
    m[10] = (NEAR + FAR) * denom
    m[11] = -1.0
    m[14] = FAR * NEAR * denom
    return m


def project_points(meshes: np.ndarray, ref_transform: np.ndarray, poses: np.ndarray, height: int, width: int) -> np.ndarray:
    """Project per-frame canonical meshes to pixels exactly as the original.

    ``p = [v, 1] @ (T_ref @ M(pose_i)).T @ P`` with ``P`` the float32 perspective matrix used as
    row-vector matrix (reference quirk 14: w = -1.0001 z), then ``x = (ndc_x + 1) / 2 * W``,
    ``y = (ndc_y + 1) / 2 * H``.

    Args:
        meshes: ``(T, N, 3)`` vertices (cm, canonical frame).
        ref_transform: ``(4, 4)`` reference face transform (canonical -> camera).
        poses: ``(T, 6)`` head poses relative to the reference.
        height, width: output image size in pixels.
    Returns:
        ``(T, N, 2)`` float64 pixel coordinates (x, y).
    """
    meshes = _check_meshes(meshes)
    poses = np.asarray(poses)
    if poses.shape[0] != meshes.shape[0]:
        raise ValueError(f"{meshes.shape[0]} meshes but {poses.shape[0]} poses: need one pose per mesh frame")
    full = np.einsum("ij,tjk->tik", np.asarray(ref_transform, dtype=np.float64), poses_to_matrices(poses))
    return _project_with_matrices(meshes, full, height, width)


def _check_meshes(meshes: np.ndarray) -> np.ndarray:
    meshes = np.asarray(meshes, dtype=np.float64)
    if meshes.ndim != 3 or meshes.shape[2] != 3:
        raise ValueError(f"meshes must be (T, N, 3); got {meshes.shape}")
    return meshes


#: frames projected at once (bounds the float64 temporaries: ~15 MB per 256 frames of 468 points)
PROJECTION_CHUNK_FRAMES = 256


def _project_with_matrices(meshes: np.ndarray, matrices: np.ndarray, height: int, width: int) -> np.ndarray:
    """The projection core of :func:`project_points`.

    ``p = [v, 1] @ matrices[t].T @ P`` (``P`` the float32 perspective matrix for ``width / height``
    promoted to float64), perspective divide, then NDC -> pixels (origin top-left). Frames are independent,
    so they are projected :data:`PROJECTION_CHUNK_FRAMES` at a time: memory does not grow with the clip.

    Args:
        meshes: ``(T, N, 3)`` float64 vertices (cm).
        matrices: ``(T, 4, 4)`` float64 model -> camera transforms, one per frame.
        height, width: image size in pixels.
    Returns:
        ``(T, N, 2)`` float64 pixel coordinates (x, y).
    """
    p = perspective_matrix(width / height).reshape(4, 4).T.astype(np.float64)
    out = np.empty(meshes.shape[:2] + (2,))
    for start in range(0, meshes.shape[0], PROJECTION_CHUNK_FRAMES):
        part = slice(start, start + PROJECTION_CHUNK_FRAMES)
        homog = np.concatenate([meshes[part], np.ones(meshes[part].shape[:2] + (1,))], axis=2)
        clip = np.einsum("tnj,tij->tni", homog, matrices[part]) @ p
        ndc = clip[..., :2] / clip[..., 3:4]
        out[part, :, 0] = (ndc[..., 0] + 1) * 0.5 * width
        out[part, :, 1] = (ndc[..., 1] + 1) * 0.5 * height
    return out
