"""Face reenactment (vid2vid): drive a reference portrait with the face of a source video.

Same maths as the original's ``scripts/vid2vid.py`` (golden ``vid2vid``):

1. every source frame is analysed (:func:`~aniportrait_lib.face.tracking.track_faces`; its ``stop``
   policy is the original's: extraction ends at the first frame without a face);
2. the neutral frame is the one with the smallest blendshape sum (first on ties);
3. expression retargeting: ``mesh_t = src_mesh_t - src_mesh[neutral] + ref_mesh`` (canonical frame, cm);
4. head pose: the source's ABSOLUTE rotation (the reference's own rotation is discarded) and its
   translation re-anchored as ``t_t - t_0 + t_ref`` (on source frame 0, not on the neutral frame);
   the 6D poses are smoothed (centred window 3) and turned back into matrices;
5. :func:`reenact` expresses the result relative to the reference face as a :class:`Motion`, which is
   projected and drawn like any other motion. (The original projected at the SOURCE frame size and
   resized the pose images to the output size; projecting at the output size gives the same landmarks
   when the aspect ratios match.)

Units: meshes in cm (MediaPipe canonical frame), poses ``[rx, ry, rz]`` euler xyz degrees +
``[tx, ty, tz]`` cm, pixel coordinates with the origin at the top-left corner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..face import pose_math
from ..data import Face, Motion
from .build import relative_to_reference

#: the original smooths the reenactment poses over 3 frames
REENACTMENT_SMOOTHING_WINDOW = 3


@dataclass
class Reenactment:
    """The retargeted motion of a source video, ready to project.

    Attributes:
        meshes: ``(T, N, 3)`` float64 cm, retargeted canonical meshes ("verts_arr" of the original).
        transforms: ``(T, 4, 4)`` float64 canonical -> camera transforms ("pose_mat_smooth").
        poses: ``(T, 6)`` float64 smoothed poses, euler xyz deg + translation cm ("pose_arr_smooth").
        neutral_index: the source frame used as expression neutral ("min_bs_idx").
        frame_size: ``(width, height)`` of the source frames when known (needed to project and draw).
    """

    meshes: np.ndarray
    transforms: np.ndarray
    poses: np.ndarray
    neutral_index: int
    frame_size: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return self.meshes.shape[0]


def neutral_frame(blendshapes: np.ndarray) -> int:
    """Index of the most neutral frame: ``argmin`` of the per-frame blendshape sum (first on ties).

    Args:
        blendshapes: ``(T, K)`` scores in [0, 1] (K = 51 from MediaPipe), T >= 1.
    """
    bs = np.asarray(blendshapes, dtype=np.float64)
    if bs.ndim != 2 or bs.shape[0] < 1:
        raise ValueError(f"blendshapes must be (T >= 1, K); got {bs.shape}")
    return int(np.argmin(bs.sum(axis=1)))


def source_poses(transforms: np.ndarray) -> np.ndarray:
    """``(T, 4, 4)`` source transforms -> ``(T, 6)`` absolute poses (euler xyz deg, translation cm)."""
    transforms = np.asarray(transforms, dtype=np.float64)
    out = np.empty((transforms.shape[0], 6))
    for i, m in enumerate(transforms):
        out[i, :3], out[i, 3:] = pose_math.matrix_to_euler(m)
    return out


def anchor_translation(poses: np.ndarray, ref_transform: np.ndarray) -> np.ndarray:
    """Re-anchor the translations on the reference: ``t_i - t_0 + ref_transform[:3, 3]``; rotations untouched.

    Args:
        poses: ``(T, 6)`` absolute source poses.
        ref_transform: ``(4, 4)`` reference face transform.
    Returns:
        ``(T, 6)`` float64 ("pose_arr" of the original).
    """
    out = np.array(poses, dtype=np.float64, copy=True)
    out[:, 3:6] = out[:, 3:6] - out[0, 3:6] + np.asarray(ref_transform, dtype=np.float64)[:3, 3]
    return out


def retarget_arrays(
    src_transforms: np.ndarray,
    src_meshes: np.ndarray,
    src_blendshapes: np.ndarray,
    ref_mesh: np.ndarray,
    ref_transform: np.ndarray,
    smoothing_window: int = REENACTMENT_SMOOTHING_WINDOW,
    frame_size: tuple[int, int] | None = None,
) -> Reenactment:
    """The retargeting maths on raw arrays (the original's "trans_mat", "lmks3d", "bs").

    Args:
        src_transforms: ``(T, 4, 4)`` source face transforms (canonical -> camera).
        src_meshes: ``(T, N, 3)`` source canonical meshes (cm).
        src_blendshapes: ``(T, K)`` source blendshape scores.
        ref_mesh: ``(N, 3)`` reference canonical mesh (cm).
        ref_transform: ``(4, 4)`` reference face transform (only its translation is used).
        smoothing_window: centred moving-average window over the 6D poses (the original: 3).
        frame_size: optional ``(width, height)`` of the source frames, stored in the result.
    """
    src_transforms = np.asarray(src_transforms, dtype=np.float64)
    src_meshes = np.asarray(src_meshes, dtype=np.float64)
    src_blendshapes = np.asarray(src_blendshapes, dtype=np.float64)
    ref_mesh = np.asarray(ref_mesh, dtype=np.float64)
    ref_transform = np.asarray(ref_transform, dtype=np.float64)
    if src_transforms.ndim != 3 or src_transforms.shape[1:] != (4, 4) or src_transforms.shape[0] < 1:
        raise ValueError(f"source transforms must be (T >= 1, 4, 4); got {src_transforms.shape}")
    t = src_transforms.shape[0]
    if ref_mesh.ndim != 2 or ref_mesh.shape[1] != 3:
        raise ValueError(f"reference mesh must be (N, 3); got {ref_mesh.shape}")
    if src_meshes.shape != (t,) + ref_mesh.shape:
        raise ValueError(
            f"source meshes must be (T, N, 3) = {(t,) + ref_mesh.shape} to match {t} transforms and the "
            f"reference mesh; got {src_meshes.shape}"
        )
    if src_blendshapes.ndim != 2 or src_blendshapes.shape[0] != t:
        raise ValueError(f"source blendshapes must be (T={t}, K); got {src_blendshapes.shape}")
    if ref_transform.shape != (4, 4):
        raise ValueError(f"reference transform must be (4, 4); got {ref_transform.shape}")
    for name, arr in (("source transforms", src_transforms), ("source meshes", src_meshes),
                      ("source blendshapes", src_blendshapes), ("reference mesh", ref_mesh),
                      ("reference transform", ref_transform)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contain NaN or infinite values")

    neutral = neutral_frame(src_blendshapes)
    meshes = src_meshes - src_meshes[neutral] + ref_mesh
    poses = pose_math.smooth_poses(anchor_translation(source_poses(src_transforms), ref_transform), smoothing_window)
    return Reenactment(meshes=meshes, transforms=pose_math.poses_to_matrices(poses), poses=poses,
                       neutral_index=neutral, frame_size=frame_size)


def retarget(
    source_faces: Sequence[Face],
    reference: Face,
    smoothing_window: int = REENACTMENT_SMOOTHING_WINDOW,
) -> Reenactment:
    """Retarget the faces of source frames onto a reference face (see the module docstring).

    Args:
        source_faces: one :class:`Face` per source frame, all of the same image size
            (from :func:`~aniportrait_lib.face.tracking.track_faces`).
        reference: the analysed reference portrait.
        smoothing_window: pose smoothing window (the original: 3).
    Returns:
        a :class:`Reenactment` whose ``frame_size`` is the source frames' ``(width, height)``.
    """
    faces = list(source_faces)
    if not faces:
        raise ValueError("no source faces to retarget: the source video needs at least one frame with a face")
    sizes = {tuple(f.image_size) for f in faces}
    if len(sizes) != 1:
        raise ValueError(f"all source frames must have the same size; got {sorted(sizes)}")
    result = retarget_arrays(
        np.stack([f.transform for f in faces]),
        np.stack([f.mesh_canonical for f in faces]),
        np.stack([f.blendshapes for f in faces]),
        reference.mesh_canonical,
        reference.transform,
        smoothing_window,
        frame_size=faces[-1].image_size,
    )
    if reference.offset_map is not None:  # a drawn reference: the source's expressions at the drawing's proportions
        result.meshes = reference.map_offsets(result.meshes - reference.mesh_canonical) + reference.mesh_canonical
    return result


def reenact(
    source_faces: Sequence[Face],
    reference: Face,
    fps: float,
    smoothing_window: int = REENACTMENT_SMOOTHING_WINDOW,
) -> Motion:
    """The source frames' expressions and head motion as a :class:`Motion` of the reference face.

    :func:`retarget` gives absolute camera transforms (as the original); they are expressed relative to
    the reference (:func:`~aniportrait_lib.motion.build.relative_to_reference`), so the motion projects to the
    same pixels as the original's ``project_points_with_trans`` and can be edited, projected and
    rendered like an audio-driven one.
    """
    result = retarget(source_faces, reference, smoothing_window)
    return relative_to_reference(result.meshes, result.transforms, reference.transform, fps)
