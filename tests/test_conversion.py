"""The converter reproduces the committed models, and the ONNX graphs agree with the TFLite originals.

These need the 'convert' extra (tflite, onnx, ai-edge-litert) and fetch the mediapipe 0.10.14 wheel
from the package registry once into .cache/mediapipe (as scripts/convert_models.py does).
"""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, data_path

pytest.importorskip("tflite", reason="needs the 'convert' extra: pip install -e '.[convert]'")
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert (the 'convert' extra)")
sys.path.insert(0, str(REPO / "scripts"))
import convert_models  # noqa: E402

from facewire.tracker.detection import FaceDetector, letterbox  # noqa: E402
from facewire.tracker.iris import IrisLandmarker, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, eye_roi  # noqa: E402
from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks  # noqa: E402
from facewire.tracker.runtime import make_session  # noqa: E402

CACHE = REPO / ".cache" / "mediapipe"


@pytest.fixture(scope="module")
def wheel():
    try:
        return convert_models.fetch_wheel(CACHE)
    except Exception as exc:  # no registry access
        pytest.skip(f"cannot fetch the mediapipe wheel: {exc}")


@pytest.fixture(scope="module")
def tflite_files(wheel):
    return {spec.name: convert_models.extract(wheel, spec, CACHE) for spec in convert_models.MODELS}


def test_conversion_reproduces_committed_files_byte_for_byte(wheel, tmp_path):
    manifest = convert_models.build(tmp_path, CACHE, licence_root=tmp_path)
    for entry in manifest["models"]:
        assert (tmp_path / entry["file"]).read_bytes() == (REPO / "models" / entry["file"]).read_bytes(), entry["file"]
    assert (tmp_path / "MANIFEST.json").read_text() == (REPO / "models" / "MANIFEST.json").read_text()


def real_inputs():
    """Model inputs cut from real photos exactly as the tracker cuts them."""
    detector, mesh = FaceDetector("short"), Landmarker("mesh")
    images = sorted(data_path("images").glob("*.jpg"))[:6] + sorted(data_path("images").glob("*.png"))[:2]
    inputs = {"face_detection_short_range": [], "face_detection_full_range": [], "face_landmark": [],
              "iris_landmark": []}
    for path in images:
        image = cv2.imread(str(path))
        for name, size in (("face_detection_short_range", 128), ("face_detection_full_range", 192)):
            square = letterbox(image, size)[0]
            inputs[name].append(cv2.cvtColor(square, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 127.5 - 1)
        dets = detector.detect(image)
        if not dets:
            continue
        roi = roi_from_detection(dets[0])
        inputs["face_landmark"].append(Landmarker.preprocess(image, roi))
        points = mesh(image, roi).points
        for corners in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS):
            crop = eye_roi(points, corners).crop(image, 64)
            inputs["iris_landmark"].append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255)
    return inputs


def test_merged_attention_heads_compute_what_the_separate_heads_compute(tflite_files):
    """The committed attention mesh (five heads merged into one wide branch) against the same
    conversion with the heads left apart, on real face crops: same numbers to float rounding."""
    separate = convert_models.convert_tflite(tflite_files["face_landmark_with_attention"].read_bytes(),
                                             merge_branches=False)
    import onnx
    merged_nodes = len(onnx.load(str(REPO / "models" / "face_landmark_with_attention.onnx")).graph.node)
    assert merged_nodes < 0.7 * len(onnx.load_from_string(separate).graph.node)
    ort = pytest.importorskip("onnxruntime")
    reference = ort.InferenceSession(separate, providers=["CPUExecutionProvider"])
    session = make_session("face_landmark_with_attention")
    inputs = real_inputs()["face_landmark"]
    assert len(inputs) >= 6
    worst = 0.0
    for x in inputs:
        for ours, ref in zip(session.run(None, {session.get_inputs()[0].name: x}),
                             reference.run(None, {reference.get_inputs()[0].name: x})):
            assert ours.shape == ref.shape
            worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-3, f"merged heads differ from separate heads by {worst:.2e}"


@pytest.mark.parametrize("name", ["face_detection_short_range", "face_detection_full_range"])
def test_detector_channels_fill_whole_blocks(name):
    """BlazeFace's odd widths (24, 28, 42, 88, ...) are padded with zero channels to multiples of 16;
    only the score heads, whose outputs are reshaped into the graph outputs, keep their real sizes
    (the outputs themselves are checked against TFLite below)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(REPO / "models" / f"{name}.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    widths = [weights[n.input[1]].shape[0] for n in model.graph.node if n.op_type == "Conv"]
    odd = [w for w in widths if w % 16]
    assert len(widths) > 40 and len(odd) == 2 and max(odd) < 16, widths


@pytest.mark.parametrize("name", ["face_detection_short_range", "face_detection_full_range", "face_landmark",
                                  "iris_landmark"])
def test_onnx_matches_tflite_on_real_face_crops(name, tflite_files):
    inputs = real_inputs()[name]
    assert len(inputs) >= 6
    interpreter = litert.Interpreter(model_path=str(tflite_files[name]), num_threads=1)
    interpreter.allocate_tensors()
    session = make_session(name)
    worst = 0.0
    for x in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        ours = session.run(None, {session.get_inputs()[0].name: x})
        for out, meta in zip(ours, session.get_outputs()):
            detail = next(d for d in interpreter.get_output_details() if d["name"] == meta.name)
            ref = interpreter.get_tensor(detail["index"])
            assert out.shape == ref.shape
            worst = max(worst, float(np.abs(out - ref).max()))
    assert worst < 1e-3, f"{name}: largest difference from TFLite {worst:.2e}"


def test_attention_mesh_agrees_with_plain_mesh_and_iris_model():
    """An independent second computation: plain mesh + iris model on the same crops."""
    detector, attention, mesh, iris = FaceDetector("auto"), Landmarker("attention"), Landmarker("mesh"), \
        IrisLandmarker()
    mesh_err, iris_err = [], []
    for path in sorted(data_path("images").glob("aflw2000_*.jpg")):
        image = cv2.imread(str(path))
        dets = detector.detect(image)
        first = attention(image, roi_from_detection(dets[0]))
        roi = roi_from_landmarks(first.points)
        a = attention(image, roi)
        if a.presence < 0.9:
            continue
        m = mesh(image, roi)
        right, left = iris(image, m.points)
        eye_width = np.linalg.norm(a.points[263, :2] - a.points[33, :2])
        mesh_err.append(np.median(np.linalg.norm(a.points[:468, :2] - m.points[:, :2], axis=1)) / eye_width)
        iris_err.append(np.linalg.norm(a.points[468, :2] - right.iris[0, :2]) / eye_width)
        iris_err.append(np.linalg.norm(a.points[473, :2] - left.iris[0, :2]) / eye_width)
    assert len(mesh_err) >= 25
    # Eye widths here are about 120 px: 2% is 2.4 px.
    assert np.median(mesh_err) < 0.02, np.median(mesh_err)
    assert np.median(iris_err) < 0.015 and np.percentile(iris_err, 90) < 0.04, (np.median(iris_err),
                                                                                np.percentile(iris_err, 90))
