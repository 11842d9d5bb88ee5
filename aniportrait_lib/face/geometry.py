"""MediaPipe's face-geometry pipeline, re-implemented in numpy (float32 throughout).

MediaPipe's FaceLandmarker only returns normalized landmarks (and, on request, a 4x4 facial
transformation matrix). AniPortrait also needs the *metric* face mesh with the head pose removed
("lmks3d"), which current pip wheels no longer expose. This module recomputes both from the
landmarks and the size of the image they were detected on:

1. the landmarks (x, y normalized to the image, z relative depth on the x scale) are projected onto
   the near plane of a perspective camera (vertical FOV 63 deg, near 1, far 10000, origin top-left);
2. the depth is rescaled in two passes, each estimating the scale against the canonical face model
   with a weighted orthogonal Procrustes fit, and the points are unprojected -> metric landmarks in
   camera space (cm, camera looking down -z);
3. a final Procrustes fit canonical -> metric landmarks gives the pose transform (``trans_mat``,
   4x4 = [scale*R | t]), and the metric landmarks mapped back through its inverse give the face in
   the canonical frame (``lmks3d``: expression kept, pose removed).

The canonical model (468 vertices with UVs, 898 triangles, Procrustes weights) is read from
``geometry_pipeline_metadata_landmarks.binarypb`` inside the ``face_landmarker.task`` zip with a tiny
protobuf wire-format reader (no protobuf dependency).
"""
from __future__ import annotations

import logging
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: name of the geometry metadata inside the ``.task`` zip
METADATA_NAME = "geometry_pipeline_metadata_landmarks.binarypb"
#: number of face-mesh landmarks (without the 10 iris points)
NUM_MESH_LANDMARKS = 468

# FaceGeometryEnvGeneratorCalculator defaults used by the FaceLandmarker graph
VERTICAL_FOV_DEG = 63.0
NEAR = 1.0
FAR = 10000.0

# protobuf field numbers (mediapipe/tasks/cc/vision/face_geometry/proto/*.proto)
_META_CANONICAL_MESH = 1  # GeometryPipelineMetadata.canonical_mesh (Mesh3d)
_META_PROCRUSTES = 2  # GeometryPipelineMetadata.procrustes_landmark_basis (repeated WeightedLandmarkRef)
_META_INPUT_SOURCE = 3  # GeometryPipelineMetadata.input_source (enum)
_MESH_VERTEX_TYPE = 1  # Mesh3d.vertex_type (enum, 0 = VERTEX_PT: x, y, z, u, v)
_MESH_PRIMITIVE_TYPE = 2  # Mesh3d.primitive_type (enum, 0 = TRIANGLE)
_MESH_VERTEX_BUFFER = 3  # Mesh3d.vertex_buffer (repeated float)
_MESH_INDEX_BUFFER = 4  # Mesh3d.index_buffer (repeated uint32)
_REF_LANDMARK_ID = 1  # WeightedLandmarkRef.landmark_id (uint32)
_REF_WEIGHT = 2  # WeightedLandmarkRef.weight (float)


@dataclass(frozen=True)
class CanonicalFaceModel:
    """MediaPipe's canonical face model.

    Attributes:
        vertices: (468, 3) float32, metric canonical mesh in cm (x right, y up, z towards viewer).
        uvs: (468, 2) float32 texture coordinates.
        triangles: (898, 3) int64, 0-based vertex indices.
        procrustes_weights: (468,) float32, per-vertex weights of the Procrustes fits (33 non-zero).
    """

    vertices: np.ndarray
    uvs: np.ndarray
    triangles: np.ndarray
    procrustes_weights: np.ndarray

    @property
    def vertex_buffer(self) -> np.ndarray:
        """(468, 5) float32: x, y, z, u, v as stored in the model."""
        return np.concatenate([self.vertices, self.uvs], axis=1)


# ----------------------------------------------------------------------------- protobuf reading


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _iter_fields(buf: bytes):
    """Yield (field_number, wire_type, value) for each field of a serialized message.

    value is an int for varints, bytes for length-delimited, fixed32 and fixed64 fields.
    """
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        if pos > n:
            raise ValueError("truncated protobuf message")
        yield field, wire, value


def _floats(wire: int, value) -> list[float]:
    """A repeated float field entry, packed (wire 2) or not (wire 5)."""
    if wire == 5:
        return [struct.unpack("<f", value)[0]]
    if wire == 2:
        if len(value) % 4:
            raise ValueError("packed float field with a length that is not a multiple of 4")
        return list(struct.unpack(f"<{len(value) // 4}f", value))
    raise ValueError(f"unexpected wire type {wire} for a float field")


def _uints(wire: int, value) -> list[int]:
    """A repeated uint32 field entry, packed (wire 2) or not (wire 0)."""
    if wire == 0:
        return [value]
    if wire == 2:
        out, pos = [], 0
        while pos < len(value):
            v, pos = _read_varint(value, pos)
            out.append(v)
        return out
    raise ValueError(f"unexpected wire type {wire} for a uint32 field")


def parse_geometry_metadata(data: bytes) -> CanonicalFaceModel:
    """Parse a serialized ``GeometryPipelineMetadata`` protobuf into a :class:`CanonicalFaceModel`."""
    vertex_buffer: list[float] = []
    index_buffer: list[int] = []
    basis: list[tuple[int, float]] = []
    vertex_type = primitive_type = 0
    for field, wire, value in _iter_fields(data):
        if field == _META_CANONICAL_MESH and wire == 2:
            for mfield, mwire, mvalue in _iter_fields(value):
                if mfield == _MESH_VERTEX_TYPE and mwire == 0:
                    vertex_type = mvalue
                elif mfield == _MESH_PRIMITIVE_TYPE and mwire == 0:
                    primitive_type = mvalue
                elif mfield == _MESH_VERTEX_BUFFER:
                    vertex_buffer.extend(_floats(mwire, mvalue))
                elif mfield == _MESH_INDEX_BUFFER:
                    index_buffer.extend(_uints(mwire, mvalue))
        elif field == _META_PROCRUSTES and wire == 2:
            landmark_id, weight = 0, 0.0
            for rfield, rwire, rvalue in _iter_fields(value):
                if rfield == _REF_LANDMARK_ID and rwire == 0:
                    landmark_id = rvalue
                elif rfield == _REF_WEIGHT and rwire == 5:
                    weight = struct.unpack("<f", rvalue)[0]
            basis.append((landmark_id, weight))
    if vertex_type != 0 or primitive_type != 0:
        raise ValueError(f"unsupported canonical mesh (vertex_type={vertex_type}, primitive_type={primitive_type})")
    if not vertex_buffer or len(vertex_buffer) % 5 or not index_buffer or len(index_buffer) % 3:
        raise ValueError(
            f"malformed canonical mesh: {len(vertex_buffer)} vertex floats, {len(index_buffer)} indices"
        )
    vb = np.asarray(vertex_buffer, dtype=np.float32).reshape(-1, 5)
    triangles = np.asarray(index_buffer, dtype=np.int64).reshape(-1, 3)
    n_vertices = vb.shape[0]
    if triangles.max() >= n_vertices:
        raise ValueError("canonical mesh index buffer refers to a vertex that does not exist")
    weights = np.zeros(n_vertices, dtype=np.float32)
    for landmark_id, weight in basis:
        if landmark_id >= n_vertices:
            raise ValueError(f"procrustes landmark id {landmark_id} out of range")
        weights[landmark_id] = weight
    if not np.any(weights > 0):
        raise ValueError("geometry metadata has no positive Procrustes weights")
    return CanonicalFaceModel(
        vertices=np.ascontiguousarray(vb[:, :3]),
        uvs=np.ascontiguousarray(vb[:, 3:]),
        triangles=triangles,
        procrustes_weights=weights,
    )


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> CanonicalFaceModel:
    with zipfile.ZipFile(path) as zf:
        try:
            data = zf.read(METADATA_NAME)
        except KeyError:
            raise ValueError(f"'{path}' has no {METADATA_NAME}; is it MediaPipe's face_landmarker.task?") from None
    model = parse_geometry_metadata(data)
    log.debug(
        "canonical face model from %s: %d vertices, %d triangles, %d procrustes weights",
        path, model.vertices.shape[0], model.triangles.shape[0], int(np.count_nonzero(model.procrustes_weights)),
    )
    return model


def load_canonical_model(task_path: str | os.PathLike) -> CanonicalFaceModel:
    """Read the canonical face model from a MediaPipe ``face_landmarker.task`` file (a zip).

    Raises FileNotFoundError if the file does not exist and ValueError if it is not a zip holding
    a valid ``geometry_pipeline_metadata_landmarks.binarypb``. The result is cached per file.
    """
    path = Path(task_path)
    if not path.is_file():
        raise FileNotFoundError(f"face landmarker model file '{path}' was not found")
    st = path.stat()
    try:
        return _load_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)
    except zipfile.BadZipFile as e:
        raise ValueError(f"'{path}' is not a MediaPipe .task file (not a zip archive): {e}") from None


# ----------------------------------------------------------------------------- Procrustes


def solve_weighted_orthogonal_problem(src: np.ndarray, tgt: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted orthogonal Procrustes with uniform scale: find ``T`` with ``tgt ~= T @ [src; 1]``.

    Args:
        src: (3, N) source points (columns).
        tgt: (3, N) target points (columns).
        weights: (N,) non-negative point weights.

    Returns:
        (4, 4) float32 ``[[scale * R, t], [0, 0, 0, 1]]`` minimising
        ``sum_i w_i * |scale * R @ src_i + t - tgt_i|^2`` with R a proper rotation.
    """
    src = np.asarray(src, dtype=np.float32)
    tgt = np.asarray(tgt, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if src.ndim != 2 or src.shape[0] != 3 or tgt.shape != src.shape or w.shape != (src.shape[1],):
        raise ValueError(f"expected src/tgt (3, N) and weights (N,), got {src.shape}, {tgt.shape}, {w.shape}")
    sw = np.sqrt(w)
    ws = src * sw  # weighted sources
    wt = tgt * sw  # weighted targets
    total_weight = np.sum(sw * sw, dtype=np.float32)
    center = np.sum(ws * sw, axis=1, dtype=np.float32) / total_weight  # (3,)
    cws = ws - center[:, None] * sw[None, :]  # centered weighted sources
    design = wt @ cws.T  # (3, 3)
    u, _, vt = np.linalg.svd(design)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        u = u.copy()
        u[:, 2] *= -1
    rot = (u @ vt).astype(np.float32)
    scale = np.sum((rot @ cws) * wt, dtype=np.float32) / np.sum(cws * ws, dtype=np.float32)
    rs = (scale * rot).astype(np.float32)
    diffs = (wt - rs @ ws) * sw
    translation = np.sum(diffs, axis=1, dtype=np.float32) / total_weight
    out = np.eye(4, dtype=np.float32)
    out[:3, :3] = rs
    out[:3, 3] = translation
    return out


# ----------------------------------------------------------------------------- the pipeline


def _frustum(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) of the camera frustum at the near plane, float32 like MediaPipe."""
    f32 = np.float32
    deg2rad = f32(math.pi / 180.0)
    h_near = f32(2.0) * f32(NEAR) * np.tan(f32(0.5) * deg2rad * f32(VERTICAL_FOV_DEG), dtype=np.float32)
    w_near = f32(width) * h_near / f32(height)
    return f32(-0.5) * w_near, f32(0.5) * w_near, f32(-0.5) * h_near, f32(0.5) * h_near


def metric_geometry(
    landmarks_normed: np.ndarray, width: int, height: int, model: CanonicalFaceModel
) -> tuple[np.ndarray, np.ndarray]:
    """Metric face mesh (pose removed) and pose transform from MediaPipe's normalized landmarks.

    Args:
        landmarks_normed: (478, 3) or (468, 3): x, y normalized to the image width/height (origin
            top-left), z relative depth on the x scale, as returned by the FaceLandmarker. Iris
            points (index >= 468) are ignored.
        width, height: size in pixels of the image the landmarks were detected on (the frustum
            aspect depends on it).
        model: the canonical face model (:func:`load_canonical_model`).

    Returns:
        mesh_canonical: (468, 3) float32, the face in the canonical model frame, cm ("lmks3d").
        transform: (4, 4) float32, canonical -> camera space (cm, camera looks down -z), "trans_mat".
    """
    lm = np.asarray(landmarks_normed)
    n = model.vertices.shape[0]
    if lm.ndim != 2 or lm.shape[1] != 3 or lm.shape[0] < n:
        raise ValueError(f"expected landmarks of shape (>= {n}, 3), got {lm.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    f32 = np.float32
    left, right, bottom, top = _frustum(width, height)
    near = f32(NEAR)
    canonical = model.vertices.T.astype(np.float32)  # (3, N)
    weights = model.procrustes_weights

    def estimate_scale(points: np.ndarray) -> np.float32:
        t = solve_weighted_orthogonal_problem(canonical, points, weights)
        return f32(np.linalg.norm(t[:3, 0]))

    # ProjectXY
    screen = lm[:n].T.astype(np.float32).copy()  # (3, N)
    screen[1] = f32(1.0) - screen[1]
    screen[0] *= right - left
    screen[1] *= top - bottom
    screen[2] *= right - left
    screen[0] += left
    screen[1] += bottom
    depth_offset = np.mean(screen[2], dtype=np.float32)

    def move_unproject_flip(scale: np.float32) -> np.ndarray:
        pts = screen.copy()
        pts[2] = (pts[2] - depth_offset + near) / scale
        pts[0] = pts[0] * pts[2] / near
        pts[1] = pts[1] * pts[2] / near
        pts[2] = -pts[2]
        return pts

    flipped = screen.copy()
    flipped[2] = -flipped[2]
    s1 = estimate_scale(flipped)
    s2 = estimate_scale(move_unproject_flip(s1))
    metric = move_unproject_flip(f32(s1 * s2))
    transform = solve_weighted_orthogonal_problem(canonical, metric, weights)
    inv = np.linalg.inv(transform).astype(np.float32)
    mesh = (inv[:3, :3] @ metric + inv[:3, 3:4]).T.astype(np.float32)
    return np.ascontiguousarray(mesh), transform
