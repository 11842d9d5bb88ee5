"""Face reenactment (vid2vid): drive a reference portrait with the face of a source video.

Same maths as the original's ``scripts/vid2vid.py`` (golden ``vid2vid``):

1. every source frame is analysed; extraction stops at the first frame without a face (the
   original ``break``s, later frames are dropped: :func:`faces_until_first_miss`);
2. the neutral frame is the one with the smallest blendshape sum (first on ties);
3. expression retargeting: ``mesh_t = src_mesh_t - src_mesh[neutral] + ref_mesh`` (canonical frame, cm);
4. head pose: the source's ABSOLUTE rotation (the reference's own rotation is discarded) and its
   translation re-anchored as ``t_t - t_0 + t_ref`` (on source frame 0, not on the neutral frame);
   the 6D poses are smoothed (centred window 3) and turned back into matrices;
5. the meshes are projected with those matrices at the SOURCE frame size, drawn there, and the
   pose images resized to the output size (:func:`render_reenactment`).

Units: meshes in cm (MediaPipe canonical frame), poses ``[rx, ry, rz]`` euler xyz degrees +
``[tx, ty, tz]`` cm, pixel coordinates with the origin at the top-left corner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from . import pose_math
from .landmarker import ReferenceFace
from .renderer import draw_pose_images

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


def project_points_with_transforms(meshes: np.ndarray, transforms: np.ndarray, height: int, width: int) -> np.ndarray:
    """Project per-frame meshes with per-frame 4x4 transforms (the original's ``project_points_with_trans``).

    ``p = [v, 1] @ transforms[t].T @ P`` with the original's float32 perspective matrix for
    ``width / height``, then NDC -> pixels.

    Args:
        meshes: ``(T, N, 3)`` vertices (cm).
        transforms: ``(T, 4, 4)`` model -> camera transforms.
        height, width: image size in pixels (the original's ``[frame_height, frame_width]``).
    Returns:
        ``(T, N, 2)`` float64 pixel coordinates (x, y).
    """
    meshes = pose_math._check_meshes(meshes)
    transforms = np.asarray(transforms, dtype=np.float64)
    if transforms.ndim != 3 or transforms.shape[1:] != (4, 4):
        raise ValueError(f"transforms must be (T, 4, 4); got {transforms.shape}")
    if transforms.shape[0] != meshes.shape[0]:
        raise ValueError(f"{meshes.shape[0]} meshes but {transforms.shape[0]} transforms: need one per frame")
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return pose_math._project_with_matrices(meshes, transforms, height, width)


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
    source_faces: Sequence[ReferenceFace],
    reference: ReferenceFace,
    smoothing_window: int = REENACTMENT_SMOOTHING_WINDOW,
) -> Reenactment:
    """Retarget the faces of source frames onto a reference face (see the module docstring).

    Args:
        source_faces: one :class:`ReferenceFace` per source frame, all of the same image size
            (use :func:`faces_until_first_miss` on ``FaceLandmarker.analyze_frames`` output).
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
    return retarget_arrays(
        np.stack([f.transform for f in faces]),
        np.stack([f.mesh_canonical for f in faces]),
        np.stack([f.blendshapes for f in faces]),
        reference.mesh_canonical,
        reference.transform,
        smoothing_window,
        frame_size=faces[-1].image_size,
    )


def faces_until_first_miss(faces: Sequence[ReferenceFace | None]) -> list[ReferenceFace]:
    """The faces before the first face-less frame (``None``), as the original's extraction loop.

    The original ``break``s at the first frame where no face is found, silently dropping every later
    frame (even those with a face); this mirrors it so the reenactment has the original's length.

    Args:
        faces: ``FaceLandmarker.analyze_frames`` output (a face or ``None`` per frame).
    Raises:
        ValueError: there are no frames, or the first frame has no face.
    """
    faces = list(faces)
    if not faces:
        raise ValueError("the source video has no frames")
    if faces[0] is None:
        raise ValueError(
            "no face was found in the first source frame; face reenactment needs a clearly visible face "
            "from the first frame on (extraction stops at the first frame without a face)"
        )
    out: list[ReferenceFace] = []
    for face in faces:
        if face is None:
            break
        out.append(face)
    return out


def project_reenactment(reenactment: Reenactment, src_width: int, src_height: int) -> np.ndarray:
    """``(T, N, 2)`` float64 pixel landmarks at the SOURCE frame size (the original's ``projected_vertices``)."""
    return project_points_with_transforms(reenactment.meshes, reenactment.transforms, src_height, src_width)


def render_reenactment(
    reenactment: Reenactment, src_width: int, src_height: int, out_width: int, out_height: int, progress=None
) -> np.ndarray:
    """Pose images of a reenactment, as the original makes them.

    Projection and drawing at the source frame size (512 canvas -> ``cv2.resize`` to the source
    size inside :func:`renderer.draw_pose_image`), then a second ``cv2.resize`` (INTER_LINEAR) to
    the output size.

    Args:
        reenactment: from :func:`retarget` / :func:`retarget_arrays`.
        src_width, src_height: source frame size in pixels.
        out_width, out_height: pose image size in pixels (the generation size).
        progress: optional ``progress(done, total)`` callback, called per frame.
    Returns:
        ``(T, out_height, out_width, 3)`` uint8, channels as the renderer writes them (the original's BGR array).
    """
    if out_width < 1 or out_height < 1:
        raise ValueError(f"output size must be positive, got {out_width}x{out_height}")
    points = project_reenactment(reenactment, src_width, src_height)
    frames = draw_pose_images(points, src_width, src_height, normalized=False, progress=progress)
    if (out_width, out_height) == (src_width, src_height):
        return frames
    out = np.empty((frames.shape[0], out_height, out_width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (out_width, out_height), interpolation=cv2.INTER_LINEAR)
    return out
