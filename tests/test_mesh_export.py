"""Textured mesh export: OBJ (+ .mtl + texture atlas) and PLY, reopened and checked on a real face.

The writers are checked with MediaPipe's canonical topology when ``models/canonical_face.npz`` is
present, and always with a stand-in topology (the Delaunay triangulation of the reference face's
front view, uv from the same view): it is not MediaPipe's, but it lets every value the writers produce
be checked against the photo.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import REPO, data_path
from facewire.tracker.analysis import load_image
from facewire.tracker.cli import main
from facewire.tracker.runtime import models_dir
from facewire.tracker.offline.mesh_export import (CanonicalFace, MeshExportError, export_mesh, mesh_border,
                                                  vertex_colours)

HAS_CANONICAL = (models_dir() / "canonical_face.npz").exists()


@pytest.fixture(scope="module")
def photo(analyzer):
    image = load_image(data_path("images", "lfpw_image_0010.png"))
    return image, analyzer.analyze(image)[0].landmarks


@pytest.fixture(scope="module")
def stand_in() -> CanonicalFace:
    spatial = pytest.importorskip("scipy.spatial", reason="scipy (convert extra) not installed")
    with np.load(REPO / "models" / "reference_face.npz") as d:
        xy = d["vertices"][:468, :2].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    uv = 0.05 + 0.9 * (xy - lo) / (hi - lo)
    uv[:, 1] = 1 - uv[:, 1]                     # head y points down; OBJ's v up
    return CanonicalFace.from_arrays({"triangles": spatial.Delaunay(xy).simplices, "uv": uv})


def read_obj(path):
    v, vt, f, other = [], [], [], []
    for line in path.read_text().splitlines():
        key, *rest = line.split()
        if key == "v":
            v.append([float(x) for x in rest])
        elif key == "vt":
            vt.append([float(x) for x in rest])
        elif key == "f":
            corners = [c.split("/") for c in rest]
            assert all(a == b for a, b in corners)
            f.append([int(a) - 1 for a, _ in corners])
        else:
            other.append(line)
    return np.array(v), np.array(vt), np.array(f), other


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[1] == "format binary_little_endian 1.0"
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    vtype = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
    ftype = np.dtype([("n", "u1"), ("idx", "<i4", 3)])
    vertices = np.frombuffer(data, vtype, nv, end)
    faces = np.frombuffer(data, ftype, nf, end + nv * vtype.itemsize)
    assert len(data) == end + nv * vtype.itemsize + nf * ftype.itemsize and (faces["n"] == 3).all()
    return vertices, faces["idx"]


def test_obj_with_texture(photo, stand_in, tmp_path):
    image, landmarks = photo
    written = export_mesh(tmp_path / "face.obj", image, landmarks, stand_in)
    assert [p.name for p in written] == ["face.obj", "face.mtl", "face_texture.png"]
    v, vt, f, other = read_obj(tmp_path / "face.obj")
    assert v.shape == (468, 3) and vt.shape == (468, 2) and np.array_equal(f, stand_in.triangles)
    assert np.allclose(v, landmarks[:468] * [1, -1, -1], atol=1e-3)
    assert "mtllib face.mtl" in other and "usemtl face" in other
    assert "map_Kd face_texture.png" in (tmp_path / "face.mtl").read_text()
    texture = cv2.imread(str(tmp_path / "face_texture.png"))
    assert texture.shape == (1024, 1024, 3)
    # The texture under each vertex's uv shows the photo under that vertex.
    size = texture.shape[0]
    tx, ty = vt[:, 0] * size - 0.5, (1 - vt[:, 1]) * size - 0.5
    inner = [k for k in range(468) if 2 < tx[k] < size - 3 and 2 < ty[k] < size - 3]
    at_uv = texture[np.rint(ty[inner]).astype(int), np.rint(tx[inner]).astype(int)].astype(int)
    at_image = image[np.rint(landmarks[inner, 1]).astype(int), np.rint(landmarks[inner, 0]).astype(int)].astype(int)
    assert np.median(np.abs(at_uv - at_image)) < 12
    covered = (texture.sum(axis=2) > 0).mean()
    assert covered > 0.5                       # the face fills the atlas between its uv hull


def test_ply_with_colours(photo, stand_in, tmp_path):
    image, landmarks = photo
    assert export_mesh(tmp_path / "face.PLY", image, landmarks, stand_in) == [tmp_path / "face.PLY"]
    vertices, faces = read_ply(tmp_path / "face.PLY")
    assert len(vertices) == 468 and np.array_equal(faces, stand_in.triangles)
    assert np.allclose(vertices["xyz"], landmarks[:468] * [1, -1, -1], atol=1e-3)
    rgb = image[np.rint(landmarks[:468, 1]).astype(int), np.rint(landmarks[:468, 0]).astype(int)][:, ::-1]
    assert np.median(np.abs(vertices["rgb"].astype(int) - rgb)) < 10
    assert np.array_equal(vertices["rgb"], vertex_colours(image, landmarks))


def test_bad_requests(photo, stand_in, tmp_path):
    image, landmarks = photo
    with pytest.raises(MeshExportError, match=".obj or .ply"):
        export_mesh(tmp_path / "face.stl", image, landmarks, stand_in)
    with pytest.raises(MeshExportError, match="does not exist"):
        export_mesh(tmp_path / "nowhere" / "face.obj", image, landmarks, stand_in)
    with pytest.raises(MeshExportError, match="shape"):
        export_mesh(tmp_path / "face.obj", image, landmarks[:100], stand_in)
    with pytest.raises(MeshExportError, match="triangles"):
        CanonicalFace.from_arrays({"triangles": np.array([[0, 1, 999]]), "uv": stand_in.uv})
    flipped = CanonicalFace.from_arrays({"triangles": stand_in.triangles,
                                         "uv": np.column_stack([stand_in.uv[:, 0], 1 - stand_in.uv[:, 1]])})
    assert np.allclose(flipped.uv, stand_in.uv)       # top-down uv recognised and turned


def test_border_of_a_mesh_with_a_hole():
    # A 3x3 grid of squares without the middle one: an outer loop and the hole's loop.
    idx = np.arange(16).reshape(4, 4)
    tris = []
    for r in range(3):
        for c in range(3):
            if (r, c) != (1, 1):
                a, b, d, e = idx[r, c], idx[r, c + 1], idx[r + 1, c], idx[r + 1, c + 1]
                tris += [[a, b, e], [a, e, d]]
    border = mesh_border(np.array(tris))
    assert border.over_shared_edges == 0 and border.odd_vertices == 0
    assert sorted(len(loop) for loop in border.loops) == [4, 12]
    assert set(sorted(border.loops, key=len)[0]) == {5, 6, 9, 10}
    assert mesh_border(np.array(tris + [[0, 1, 5]])).over_shared_edges == 2     # a doubled triangle: 1-5, 0-5


@pytest.mark.skipif(not HAS_CANONICAL, reason="models/canonical_face.npz (MediaPipe's canonical face) not present")
def test_canonical_face_is_watertight_but_for_its_rim(photo, tmp_path):
    """MediaPipe's canonical topology closes the eyes and the mouth with triangles (checked: the
    triangles inside the inner-lip and eye rings are there), so its only border is the face oval."""
    face = CanonicalFace.load()
    assert face.triangles.shape == (898, 3) and face.uv.shape == (468, 2)
    border = mesh_border(face.triangles)
    assert border.over_shared_edges == 0 and border.odd_vertices == 0
    assert len(border.loops) == 1
    rim = set(border.loops[0])
    # MediaPipe's face oval: 36 vertices from the forehead (10) round by the chin (152).
    assert len(rim) == 36 and {10, 338, 297, 152, 148, 234, 127, 109} <= rim
    assert not rim & {1, 4, 13, 14, 33, 133, 263, 362}     # nose tip, inner lips, eye corners are inside
    # Consistent winding: every inner edge is used once in each direction.
    directed = np.concatenate([face.triangles[:, [0, 1]], face.triangles[:, [1, 2]], face.triangles[:, [2, 0]]])
    assert len({tuple(e) for e in directed.tolist()}) == len(directed)
    image, landmarks = photo
    assert main(["analyze", str(data_path("images", "lfpw_image_0010.png")), "--mesh-out", str(tmp_path / "f.obj")]) == 0
    v, vt, f, _ = read_obj(tmp_path / "f.obj")
    assert v.shape == (468, 3) and vt.shape == (468, 2) and f.shape == (898, 3)
    # Winding: counter-clockwise seen from the viewer, so the face's front faces out (this photo is
    # turned 27 degrees: a few triangles on the far cheek face away).
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (normals[:, 2] > 0).mean() > 0.85
    texture = cv2.imread(str(tmp_path / "f_texture.png"))
    assert (texture.sum(axis=2) > 0).mean() > 0.6          # the face oval fills most of the atlas
    assert main(["analyze", str(data_path("images", "lfpw_image_0010.png")), "--mesh-out", str(tmp_path / "f.ply")]) == 0
    vertices, faces = read_ply(tmp_path / "f.ply")
    assert len(vertices) == 468 and faces.shape == (898, 3)


def test_cli_mesh_out_errors(tmp_path, capsys):
    image = str(data_path("images", "lfpw_image_0010.png"))
    assert main(["analyze", image, "--mesh-out", str(tmp_path / "face.stl")]) == 2
    assert main(["analyze", image, "--mesh-out", str(tmp_path / "missing" / "face.obj")]) == 2
    if not HAS_CANONICAL:
        assert main(["analyze", image, "--mesh-out", str(tmp_path / "face.obj")]) == 2
        assert not (tmp_path / "face.obj").exists()
        with pytest.raises(MeshExportError, match="canonical face .*canonical_face.npz, which is missing"):
            CanonicalFace.load()
