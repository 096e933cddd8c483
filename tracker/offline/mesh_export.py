"""A face's 468-point mesh as a textured 3D file: Wavefront OBJ (+ .mtl + texture PNG) or PLY with colours.

Topology and texture coordinates are MediaPipe's canonical face (``models/canonical_face.npz``:
``vertices`` (468, 3), ``uv`` (468, 2), ``triangles`` (898, 3), extracted from the Face Landmarker
bundle's geometry data); that topology closes the eyes and the mouth with triangles, so its only border
is the face oval (36 vertices). The vertex positions are the face's own landmarks. The OBJ's texture is the
photo unwrapped into the canonical UV layout: every texture pixel inside a triangle takes the image
pixel at the same barycentric position in that triangle of the face, so the PNG is a flat face atlas
that any UV-mapped canonical-face asset can reuse. The PLY carries the image colour under each vertex.

Coordinates: image pixels, right-handed with y up and z towards the viewer, i.e. (x, -y, -z) of the
tracker's points (zero-based pixels, y down, z away from the camera), so Blender shows the face upright
looking at the viewer. Triangles keep MediaPipe's winding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..runtime import ModelError, load_data_file, models_dir

CANONICAL_FILE = "canonical_face.npz"
VERTICES = 468
TEXTURE_SIZE = 1024
# Mesh vertices on the forehead's midline and at the chin: tell whether uv's v runs up or down.
FOREHEAD, CHIN = 10, 152


class MeshExportError(ValueError):
    """The mesh cannot be written (bad landmarks, unknown extension, missing canonical face, disk)."""


@dataclass(frozen=True)
class CanonicalFace:
    triangles: np.ndarray     # (T, 3) int vertex indices
    uv: np.ndarray            # (468, 2) texture coordinates, OBJ convention: v = 0 at the bottom

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], source: str = CANONICAL_FILE) -> "CanonicalFace":
        try:
            triangles = np.asarray(data["triangles"], np.int64)
            uv = np.asarray(data["uv"], np.float64)
        except KeyError as exc:
            raise MeshExportError(f"{source} lacks the array {exc.args[0]!r}") from None
        if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.min() < 0 or triangles.max() >= len(uv):
            raise MeshExportError(f"{source}: triangles must be (T, 3) indices into the {len(uv)} vertices")
        if uv.shape != (VERTICES, 2):
            raise MeshExportError(f"{source}: uv must be ({VERTICES}, 2), not {uv.shape}")
        if uv[FOREHEAD, 1] < uv[CHIN, 1]:      # stored top-down (image-like): turn into OBJ's bottom-up
            uv = np.column_stack([uv[:, 0], 1.0 - uv[:, 1]])
        return cls(triangles, uv)

    @classmethod
    def load(cls) -> "CanonicalFace":
        try:
            data = load_data_file(CANONICAL_FILE)
        except ModelError:
            raise MeshExportError(f"--mesh-out needs MediaPipe's canonical face (triangles and texture "
                                  f"coordinates) in {models_dir() / CANONICAL_FILE}, which is missing") from None
        return cls.from_arrays(data)


def scene_points(landmarks: np.ndarray) -> np.ndarray:
    """The first 468 tracker points (pixels, y down, z away) as (x, -y, -z): y up, z towards the viewer."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[0] < VERTICES or pts.shape[1] != 3 or not np.isfinite(pts).all():
        raise MeshExportError(f"expected finite mesh points of shape (468 or 478, 3), got {pts.shape}")
    return pts[:VERTICES] * np.array([1.0, -1.0, -1.0])


def vertex_colours(image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(468, 3) uint8 RGB: the image under each vertex, bilinear."""
    pts = np.asarray(landmarks, np.float32)[:VERTICES, :2]
    sampled = cv2.remap(image_bgr, pts[:, 0].reshape(-1, 1), pts[:, 1].reshape(-1, 1), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(-1, 3)[:, ::-1].copy()


def unwrap_texture(image_bgr: np.ndarray, landmarks: np.ndarray, face: CanonicalFace,
                   size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) BGR texture in the canonical UV layout, piecewise affine from the image."""
    uv_px = np.column_stack([face.uv[:, 0] * size - 0.5, (1.0 - face.uv[:, 1]) * size - 0.5])
    owner = np.zeros((size, size), np.int32)
    for k, tri in enumerate(face.triangles):
        cv2.fillConvexPoly(owner, np.rint(uv_px[tri] * 16).astype(np.int32), k + 1, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(owner)
    tri = face.triangles[owner[ys, xs] - 1]                     # (P, 3) vertices of each pixel's triangle
    a, b, c = uv_px[tri[:, 0]], uv_px[tri[:, 1]], uv_px[tri[:, 2]]
    p = np.column_stack([xs, ys]).astype(np.float64)
    v0, v1, v2 = b - a, c - a, p - a
    det = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    wb = (v2[:, 0] * v1[:, 1] - v2[:, 1] * v1[:, 0]) / det
    wc = (v0[:, 0] * v2[:, 1] - v0[:, 1] * v2[:, 0]) / det
    img_pts = np.asarray(landmarks, np.float64)[:VERTICES, :2]
    src = (1 - wb - wc)[:, None] * img_pts[tri[:, 0]] + wb[:, None] * img_pts[tri[:, 1]] + wc[:, None] * img_pts[tri[:, 2]]
    map_x = np.full((size, size), -1.0, np.float32)
    map_y = np.full((size, size), -1.0, np.float32)
    map_x[ys, xs], map_y[ys, xs] = src[:, 0], src[:, 1]
    return cv2.remap(image_bgr, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def write_obj(path: Path, image_bgr: np.ndarray, landmarks: np.ndarray, face: CanonicalFace,
              texture_size: int = TEXTURE_SIZE) -> list[Path]:
    """``path`` (.obj), ``path.mtl`` and ``path_texture.png`` beside it; returns the three paths."""
    pts = scene_points(landmarks)
    mtl, png = path.with_suffix(".mtl"), path.with_name(f"{path.stem}_texture.png")
    texture = unwrap_texture(image_bgr, landmarks, face, texture_size)
    if not cv2.imwrite(str(png), texture):
        raise MeshExportError(f"could not write {png}")
    lines = [f"# facewire face mesh: {VERTICES} vertices, {len(face.triangles)} triangles (MediaPipe canonical topology)",
             f"mtllib {mtl.name}", "o face"]
    lines += [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in pts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in face.uv]
    lines += ["usemtl face", "s 1"]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (face.triangles + 1).tolist()]
    _write_text(path, "\n".join(lines) + "\n")
    _write_text(mtl, f"newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {png.name}\n")
    return [path, mtl, png]


def write_ply(path: Path, image_bgr: np.ndarray, landmarks: np.ndarray, face: CanonicalFace) -> list[Path]:
    """Binary little-endian PLY: float x, y, z and uchar red, green, blue per vertex; triangles."""
    pts = scene_points(landmarks)
    colours = vertex_colours(image_bgr, landmarks)
    header = ("ply\nformat binary_little_endian 1.0\ncomment facewire face mesh, MediaPipe canonical topology\n"
              f"element vertex {VERTICES}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(face.triangles)}\nproperty list uchar int vertex_indices\nend_header\n")
    vertex = np.zeros(VERTICES, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    vertex["xyz"], vertex["rgb"] = pts, colours
    faces = np.zeros(len(face.triangles), dtype=[("n", "u1"), ("idx", "<i4", 3)])
    faces["n"], faces["idx"] = 3, face.triangles
    try:
        with open(path, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(vertex.tobytes())
            fh.write(faces.tobytes())
    except OSError as exc:
        raise MeshExportError(f"could not write {path}: {exc.strerror or exc}") from None
    return [path]


def export_mesh(path: str | Path, image_bgr: np.ndarray, landmarks: np.ndarray,
                face: CanonicalFace | None = None) -> list[Path]:
    """Write ``.obj`` (with .mtl and texture) or ``.ply`` by the name's extension; returns the files written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".obj", ".ply"):
        raise MeshExportError(f"--mesh-out must end in .obj or .ply, not {path.name!r}")
    if not path.parent.is_dir():
        raise MeshExportError(f"the folder {path.parent} does not exist")
    face = face or CanonicalFace.load()
    return (write_obj if suffix == ".obj" else write_ply)(path, image_bgr, landmarks, face)


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:
        raise MeshExportError(f"could not write {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Border:
    over_shared_edges: int     # edges of more than two triangles (0 for a proper surface)
    odd_vertices: int          # border vertices without exactly two border edges (0 when the border is loops)
    loops: tuple[tuple[int, ...], ...]


def mesh_border(triangles: np.ndarray) -> Border:
    """The holes of a triangle mesh. It is watertight apart from them when no edge has more than two
    triangles and the edges of one triangle form closed loops (the holes' rims)."""
    tri = np.asarray(triangles, np.int64)
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    border = unique[counts == 1]
    neighbours: dict[int, list[int]] = {}
    for a, b in border.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    odd = sum(len(n) != 2 for n in neighbours.values())
    loops, seen = [], set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [n for n in neighbours[cur] if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(tuple(loop))
    return Border(int((counts > 2).sum()), odd, tuple(loops))
