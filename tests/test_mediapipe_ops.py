"""The MediaPipe custom ops of face_landmark_with_attention.tflite, emitted as standard ONNX.

Each op is built exactly as it appears in the real model (options, tensor shapes), run through
onnxruntime and compared with the numpy reference of the TFLite kernel. Separate tests pin the
reference to the kernel conventions (half-pixel sampling, hard zero outside the input, crop framing).
The TFLite runtime cannot run these custom ops, so the reference is checked against MediaPipe only
end to end, through the converted model.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/ is a folder of tools, not a package

import mediapipe_ops as mpo  # noqa: E402

MODEL_NAME = "face_landmark_with_attention.tflite"
EXTRACTED_WHEEL = Path("/tmp/mp/x/mediapipe/modules/face_landmark")
DATA_IMAGES = ROOT.parent / "shared" / "data" / "images"
NUM_MESH_LANDMARKS = 468
RTOL = 1e-4


# ---------------------------------------------------------------------------------------------
# Model inventory
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomOp:
    """One custom operator of the TFLite model, with what the emitters need."""

    index: int
    code: str
    version: int
    options: dict
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    input_tensors: tuple[int, ...]


def _find_model() -> Path | None:
    cache = ROOT / ".cache" / "mediapipe"
    found = sorted(cache.rglob(MODEL_NAME)) if cache.is_dir() else []
    found.append(EXTRACTED_WHEEL / MODEL_NAME)
    return next((p for p in found if p.is_file()), None)


@pytest.fixture(scope="module")
def model_ops() -> list[CustomOp]:
    tflite = pytest.importorskip("tflite")
    pytest.importorskip("flatbuffers")
    path = _find_model()
    if path is None:
        pytest.skip(
            f"{MODEL_NAME} not found under {ROOT / '.cache' / 'mediapipe'} or {EXTRACTED_WHEEL}; "
            "extract it from the mediapipe==0.10.14 wheel (scripts/convert_models.py does)"
        )
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]

    def shape(t: int) -> tuple[int, ...]:
        return tuple(int(d) for d in graph.Tensors(int(t)).ShapeAsNumpy())

    ops = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = codes[op.OpcodeIndex()]
        if not code.CustomCode():
            continue
        ops.append(
            CustomOp(
                index=k,
                code=code.CustomCode().decode(),
                version=code.Version(),
                options=mpo.decode_custom_options(op.CustomOptionsAsNumpy()),
                input_shapes=tuple(shape(t) for t in op.InputsAsNumpy()),
                output_shape=shape(op.OutputsAsNumpy()[0]),
                input_tensors=tuple(int(t) for t in op.InputsAsNumpy()),
            )
        )
    return ops


def _ops_of(ops: list[CustomOp], code: str) -> list[CustomOp]:
    return [op for op in ops if op.code == code]


# ---------------------------------------------------------------------------------------------
# A stand-in for the converter's graph builder
# ---------------------------------------------------------------------------------------------


class StandInGraph:
    """Collects nodes and initializers with the interface the emitters expect."""

    def __init__(self, opset: int | None = 17) -> None:
        if opset is not None:
            self.opset = opset
        self._opset = opset or 17
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op_type: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> list[str]:
        outputs = list(outputs) if outputs is not None else [self._fresh(op_type.lower())]
        self.nodes.append(onnx.helper.make_node(op_type, inputs, outputs, name=self._fresh("n"), **attrs))
        return outputs

    def const(self, array: np.ndarray, name_hint: str) -> str:
        name = self._fresh(name_hint)
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def session(
        self, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]]
    ) -> ort.InferenceSession:
        """Check the graph (declared output shapes must match ONNX shape inference) and load it."""
        graph = onnx.helper.make_graph(
            self.nodes,
            "mediapipe_op",
            [
                onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s))
                for n, s in inputs.items()
            ],
            [
                onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s))
                for n, s in outputs.items()
            ],
            initializer=self.initializers,
        )
        model = onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", self._opset)], ir_version=10
        )
        onnx.checker.check_model(model, full_check=True)
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Relative 1e-4 agreement, with an absolute floor scaled to the tensor's magnitude."""
    scale = max(float(np.abs(expected).max()), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)


# ---------------------------------------------------------------------------------------------
# Plausible inputs
# ---------------------------------------------------------------------------------------------

# Canonical (roll-free) positions, in face-radius units, of the landmarks the model's crop ops use
# for rotation: mouth corners 61/291, one eye's corners 33/133, the other's 362/263.
_ANCHORS = {
    61: (-0.30, 0.45),
    291: (0.30, 0.45),
    33: (-0.55, -0.25),
    133: (-0.20, -0.25),
    362: (0.20, -0.25),
    263: (0.55, -0.25),
}


def plausible_mesh(
    rng: np.random.Generator, centre_jitter: float = 20.0, image_size: float = 192.0
) -> np.ndarray:
    """468 (x, y, z) landmarks of a face filling most of the 192x192 crop, rolled up to +-40 deg."""
    radius = rng.uniform(0.30, 0.42) * image_size
    angle = rng.uniform(0, 2 * np.pi, NUM_MESH_LANDMARKS)
    dist = np.sqrt(rng.uniform(0, 1, NUM_MESH_LANDMARKS))
    canon = np.stack([0.8 * dist * np.cos(angle), dist * np.sin(angle)], axis=1)
    for idx, pos in _ANCHORS.items():
        canon[idx] = pos
    roll = np.deg2rad(rng.uniform(-40, 40))
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    centre = image_size / 2 + rng.uniform(-centre_jitter, centre_jitter, 2)
    xy = canon @ rot.T * radius + centre
    z = rng.normal(0, 10, (NUM_MESH_LANDMARKS, 1))
    return np.concatenate([xy, z], axis=1)[None].astype(np.float32)


# The model scales its 192-pixel landmarks by this constant before Landmarks2TransformMatrix, so
# the crop matrix lives in the 48x48 feature map's coordinates.
LANDMARK_TO_FEATURE_SCALE = 0.25


# ---------------------------------------------------------------------------------------------
# Inventory and options of the real model
# ---------------------------------------------------------------------------------------------


def test_model_custom_ops_are_the_three_version_2_ops(model_ops: list[CustomOp]) -> None:
    counts = {code: len(_ops_of(model_ops, code)) for code in {op.code for op in model_ops}}
    assert counts == {
        mpo.LANDMARKS_TO_TRANSFORM_MATRIX: 3,
        mpo.TRANSFORM_TENSOR_BILINEAR: 3,
        mpo.TRANSFORM_LANDMARKS: 5,
    }
    assert {op.version for op in model_ops} == {2}
    for op in _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX):
        assert op.input_shapes == ((1, NUM_MESH_LANDMARKS, 3),) and op.output_shape == (1, 4, 4)
        assert (op.options["output_width"], op.options["output_height"]) == (16, 16)
        assert (op.options["scale_x"], op.options["scale_y"]) == (1.5, 1.5)
    for op in _ops_of(model_ops, mpo.TRANSFORM_TENSOR_BILINEAR):
        assert op.input_shapes == ((1, 48, 48, 32), (1, 4, 4)) and op.output_shape == (1, 16, 16, 32)
    for op in _ops_of(model_ops, mpo.TRANSFORM_LANDMARKS):
        assert op.options == {} and op.input_shapes[0][2] == 2 and op.output_shape == op.input_shapes[0]


# ---------------------------------------------------------------------------------------------
# ONNX emission versus the numpy reference, op by op as used in the model
# ---------------------------------------------------------------------------------------------


def test_landmarks_to_transform_matrix_onnx_matches_reference(model_ops: list[CustomOp]) -> None:
    rng = np.random.default_rng(7)
    for op in _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX):
        g = StandInGraph()
        mpo.emit_landmarks_to_transform_matrix(
            g, ["landmarks"], ["matrix"], op.options, list(op.input_shapes), [False]
        )
        session = g.session({"landmarks": op.input_shapes[0]}, {"matrix": op.output_shape})
        for _ in range(5):
            landmarks = plausible_mesh(rng) * LANDMARK_TO_FEATURE_SCALE
            (got,) = session.run(None, {"landmarks": landmarks})
            _assert_close(got, mpo.landmarks_to_transform_matrix_np(landmarks, op.options))


def test_crop_matrices_made_together_match_the_reference(model_ops: list[CustomOp]) -> None:
    """All of the model's crop matrices in one subgraph (as the converter emits them), each from its
    own landmarks and options (subsets of different lengths, one with a non-zero target and a
    non-square crop), plus a degenerate rotation pair, against the reference one by one."""
    ops = _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX)
    options = [op.options for op in ops]
    options[1] = {**options[1], "target_rotation_radians": 0.6, "output_width": 24, "output_height": 12}
    assert len({len(o["subset_idxs"]) for o in options}) > 1, "the subsets should differ in length"
    g = StandInGraph()
    names = [f"landmarks{k}" for k in range(len(ops))]
    outs = [f"matrix{k}" for k in range(len(ops))]
    n = ops[0].input_shapes[0][1]
    mpo.emit_landmarks_to_transform_matrix_batch(g, names, outs, options, n)
    session = g.session({name: ops[0].input_shapes[0] for name in names}, {o: (1, 4, 4) for o in outs})
    rng = np.random.default_rng(8)
    for trial in range(4):
        feeds = {name: plausible_mesh(rng) * LANDMARK_TO_FEATURE_SCALE for name in names}
        if trial == 3:
            first = feeds[names[0]]
            first[0, options[0]["right_rotation_idx"]] = first[0, options[0]["left_rotation_idx"]]
        for got, name, opts in zip(session.run(None, feeds), names, options):
            _assert_close(got, mpo.landmarks_to_transform_matrix_np(feeds[name], opts))


@pytest.mark.parametrize("target", [0.6, -2.5, 3.0])
def test_landmarks_to_transform_matrix_with_target_rotation(model_ops: list[CustomOp], target: float) -> None:
    """Non-zero targets and a non-square crop (the model uses 0 and 16x16), plus a degenerate pair."""
    op = _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX)[1]  # its subset has an odd length
    options = {**op.options, "target_rotation_radians": target, "output_width": 24, "output_height": 12}
    g = StandInGraph()
    mpo.emit_landmarks_to_transform_matrix(
        g, ["landmarks"], ["matrix"], options, list(op.input_shapes), [False]
    )
    session = g.session({"landmarks": op.input_shapes[0]}, {"matrix": op.output_shape})
    rng = np.random.default_rng(29)
    left, right = options["left_rotation_idx"], options["right_rotation_idx"]
    for _ in range(3):
        landmarks = plausible_mesh(rng)
        (got,) = session.run(None, {"landmarks": landmarks})
        expected = mpo.landmarks_to_transform_matrix_np(landmarks, options)
        _assert_close(got, expected)
        # In the crop, the left->right direction rescaled by the column norms (the crop's pixel
        # size in landmark units) points at the target angle.
        crop = np.linalg.inv(expected[0].astype(np.float64))
        pair = np.stack([landmarks[0, left], landmarks[0, right]])[:, :2]
        in_crop = pair @ crop[:2, :2].T + crop[:2, 3]
        direction = (in_crop[1] - in_crop[0]) * np.linalg.norm(expected[0, :2, :2], axis=0)
        angle_error = np.angle(np.exp(1j * (np.arctan2(direction[1], direction[0]) - target)))
        assert abs(angle_error) < 1e-4
    landmarks[0, right] = landmarks[0, left]  # atan2(0, 0) = 0
    (got,) = session.run(None, {"landmarks": landmarks})
    _assert_close(got, mpo.landmarks_to_transform_matrix_np(landmarks, options))


def _matrix_for(model_ops: list[CustomOp], op: CustomOp, landmarks: np.ndarray) -> np.ndarray:
    """The crop matrix the model feeds to ``op``: from the Landmarks2TransformMatrix that makes it."""
    producers = _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX)
    position = _ops_of(model_ops, op.code).index(op) % len(producers)
    return mpo.landmarks_to_transform_matrix_np(landmarks, producers[position].options)


@pytest.mark.parametrize("stored_nchw", [True, False], ids=["nchw", "nhwc"])
def test_transform_tensor_bilinear_onnx_matches_reference(
    model_ops: list[CustomOp], stored_nchw: bool
) -> None:
    rng = np.random.default_rng(11)
    saw_outside = saw_inside = False
    for op in _ops_of(model_ops, mpo.TRANSFORM_TENSOR_BILINEAR):
        feat_shape = op.input_shapes[0]
        g = StandInGraph()
        mpo.emit_transform_tensor_bilinear(
            g, ["features", "matrix"], ["crop"], op.options, list(op.input_shapes), [stored_nchw, False]
        )
        stored = (feat_shape[0], feat_shape[3], feat_shape[1], feat_shape[2]) if stored_nchw else feat_shape
        out_h, out_w, channels = op.output_shape[1:]
        session = g.session(
            {"features": stored, "matrix": op.input_shapes[1]}, {"crop": (1, channels, out_h, out_w)}
        )
        # Faces near the centre and faces pushed to the border (crops partly outside the map).
        for jitter in (10.0, 10.0, 90.0, 90.0):
            features = rng.normal(0, 1, feat_shape).astype(np.float32)
            features = np.where(features > 0, features, 0.25 * features)  # PReLU-like activations
            landmarks = plausible_mesh(rng, centre_jitter=jitter) * LANDMARK_TO_FEATURE_SCALE
            matrix = _matrix_for(model_ops, op, landmarks)
            expected = mpo.transform_tensor_bilinear_np(features, matrix, op.options)
            feed = features.transpose(0, 3, 1, 2) if stored_nchw else features
            (got,) = session.run(None, {"features": np.ascontiguousarray(feed), "matrix": matrix})
            assert got.shape == (1, feat_shape[3], op.options["output_height"], op.options["output_width"])
            _assert_close(got.transpose(0, 2, 3, 1), expected)
            zero_pixels = np.all(expected == 0, axis=-1)
            saw_outside |= bool(zero_pixels.any())
            saw_inside |= bool((~zero_pixels).any())
    assert saw_outside and saw_inside, "inputs did not exercise both in-range and out-of-range samples"


def test_crops_sampled_together_match_the_reference_crop_by_crop(model_ops: list[CustomOp]) -> None:
    """All of the model's crops of one feature map in one subgraph (as the converter emits them):
    channel block k of the output is crop k, equal to the reference sampling."""
    rng = np.random.default_rng(12)
    ops = _ops_of(model_ops, mpo.TRANSFORM_TENSOR_BILINEAR)
    feat_shape = ops[0].input_shapes[0]
    out_h, out_w, channels = ops[0].output_shape[1:]
    g = StandInGraph()
    names = [f"matrix{k}" for k in range(len(ops))]
    stacked = mpo.emit_transform_tensor_bilinear_batch(g, "features", names, feat_shape, ops[0].options)
    g.node("Identity", [stacked], ["crops"])
    nchw = (1, feat_shape[3], feat_shape[1], feat_shape[2])
    session = g.session({"features": nchw, **{n: (1, 4, 4) for n in names}},
                        {"crops": (1, len(ops) * channels, out_h, out_w)})
    saw_outside = False
    for jitter in (10.0, 90.0, 90.0):
        features = rng.normal(0, 1, feat_shape).astype(np.float32)
        landmarks = plausible_mesh(rng, centre_jitter=jitter) * LANDMARK_TO_FEATURE_SCALE
        matrices = [_matrix_for(model_ops, op, landmarks) for op in ops]
        (got,) = session.run(None, {"features": np.ascontiguousarray(features.transpose(0, 3, 1, 2)),
                                    **dict(zip(names, matrices))})
        for k, (op, matrix) in enumerate(zip(ops, matrices)):
            expected = mpo.transform_tensor_bilinear_np(features, matrix, op.options)
            _assert_close(got[0, k * channels:(k + 1) * channels].transpose(1, 2, 0)[None], expected)
            saw_outside |= bool(np.all(expected == 0, axis=-1).any())
    assert saw_outside, "inputs did not push any crop past the feature map's edge"


def test_transform_landmarks_onnx_matches_reference(model_ops: list[CustomOp]) -> None:
    rng = np.random.default_rng(13)
    producers = _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX)
    for op in _ops_of(model_ops, mpo.TRANSFORM_LANDMARKS):
        g = StandInGraph()
        mpo.emit_transform_landmarks(
            g, ["points", "matrix"], ["moved"], op.options, list(op.input_shapes), [False, False]
        )
        session = g.session(
            {"points": op.input_shapes[0], "matrix": op.input_shapes[1]}, {"moved": op.output_shape}
        )
        for producer in producers:
            points = rng.uniform(0, 16, op.input_shapes[0]).astype(np.float32)  # crop-space predictions
            matrix = mpo.landmarks_to_transform_matrix_np(plausible_mesh(rng), producer.options)
            (got,) = session.run(None, {"points": points, "matrix": matrix})
            _assert_close(got, mpo.transform_landmarks_np(points, matrix, op.options))


def test_transform_landmarks_passes_z_through() -> None:
    rng = np.random.default_rng(17)
    points = rng.uniform(0, 16, (1, 30, 3)).astype(np.float32)
    matrix = rng.normal(0, 2, (1, 4, 4)).astype(np.float32)
    g = StandInGraph()
    mpo.emit_transform_landmarks(
        g, ["points", "matrix"], ["moved"], {}, [(1, 30, 3), (1, 4, 4)], [False, False]
    )
    (got,) = g.session({"points": (1, 30, 3), "matrix": (1, 4, 4)}, {"moved": (1, 30, 3)}).run(
        None, {"points": points, "matrix": matrix}
    )
    expected = mpo.transform_landmarks_np(points, matrix)
    np.testing.assert_array_equal(expected[..., 2], points[..., 2])
    homogeneous = np.concatenate([points[0, :, :2], np.zeros((30, 1)), np.ones((30, 1))], axis=1)
    np.testing.assert_allclose(expected[0, :, :2], (homogeneous @ matrix[0].T)[:, :2], rtol=1e-5, atol=1e-4)
    _assert_close(got, expected)


@pytest.mark.parametrize("opset", [16, 20, None], ids=["opset16", "opset20", "no-opset-attr"])
def test_grid_sample_mode_follows_builder_opset(opset: int | None) -> None:
    rng = np.random.default_rng(19)
    features = rng.normal(0, 1, (1, 12, 10, 3)).astype(np.float32)
    matrix = np.array([[[0.9, 0.3, 0, 1.2], [-0.3, 0.9, 0, 0.4], [0, 0, 1, 0], [0, 0, 0, 1]]], np.float32)
    options = {"output_height": 9, "output_width": 11}
    g = StandInGraph(opset)
    mpo.emit_transform_tensor_bilinear(
        g, ["f", "m"], ["y"], options, [(1, 12, 10, 3), (1, 4, 4)], [False, False]
    )
    (got,) = g.session({"f": (1, 12, 10, 3), "m": (1, 4, 4)}, {"y": (1, 3, 9, 11)}).run(
        None, {"f": features, "m": matrix}
    )
    _assert_close(got.transpose(0, 2, 3, 1), mpo.transform_tensor_bilinear_np(features, matrix, options))


# ---------------------------------------------------------------------------------------------
# The reference follows the kernel's conventions
# ---------------------------------------------------------------------------------------------


def test_matrix_frames_subset_in_the_centre_of_the_crop(model_ops: list[CustomOp]) -> None:
    """Inverse-mapped, the subset's box is centred, 1/scale of the crop, and the rotation pair level."""
    rng = np.random.default_rng(23)
    for op in _ops_of(model_ops, mpo.LANDMARKS_TO_TRANSFORM_MATRIX):
        landmarks = plausible_mesh(rng)
        matrix = mpo.landmarks_to_transform_matrix_np(landmarks, op.options).astype(np.float64)
        crop = np.linalg.inv(matrix[0])
        homogeneous = np.concatenate(
            [landmarks[0, :, :2], np.zeros((NUM_MESH_LANDMARKS, 1)), np.ones((NUM_MESH_LANDMARKS, 1))], axis=1
        )
        in_crop = (homogeneous @ crop.T)[:, :2]
        subset = in_crop[op.options["subset_idxs"]]
        size = np.array([op.options["output_width"], op.options["output_height"]], float)
        scale = np.array([op.options["scale_x"], op.options["scale_y"]])
        np.testing.assert_allclose(subset.min(axis=0), size / 2 - size / (2 * scale), atol=1e-3)
        np.testing.assert_allclose(subset.max(axis=0), size / 2 + size / (2 * scale), atol=1e-3)
        left, right = in_crop[op.options["left_rotation_idx"]], in_crop[op.options["right_rotation_idx"]]
        assert right[0] > left[0]
        assert right[1] == pytest.approx(left[1], abs=1e-3)
        # TransformLandmarks takes crop coordinates back to the landmarks' frame.
        back = mpo.transform_landmarks_np(in_crop[None].astype(np.float32), matrix.astype(np.float32))
        np.testing.assert_allclose(back[0], landmarks[0, :, :2], atol=2e-3)


def test_bilinear_reference_integer_shift_copies_pixels() -> None:
    features = np.arange(1 * 6 * 7 * 2, dtype=np.float32).reshape(1, 6, 7, 2)
    matrix = np.eye(4, dtype=np.float32)[None]
    matrix[0, 0, 3], matrix[0, 1, 3] = 2.0, -1.0
    out = mpo.transform_tensor_bilinear_np(features, matrix, {"output_height": 6, "output_width": 7})
    # Output (ox, oy) reads input (ox + 2, oy - 1); anything past the edges is zero.
    np.testing.assert_array_equal(out[0, 1:, :5], features[0, :5, 2:])
    assert not out[0, 0].any() and not out[0, :, 5:].any()


def test_bilinear_reference_zeroes_samples_past_the_last_pixel_centre() -> None:
    """Half a pixel past the last centre is zero, unlike GridSample's blend with zero padding."""
    features = (
        np.ones((1, 3, 4, 1), np.float32) * np.array([1.0, 3.0, 5.0, 7.0], np.float32)[None, None, :, None]
    )
    matrix = np.eye(4, dtype=np.float32)[None]
    matrix[0, 0, 3] = 0.5
    options = {"output_height": 3, "output_width": 4}
    out = mpo.transform_tensor_bilinear_np(features, matrix, options)
    np.testing.assert_allclose(out[0, :, :, 0], np.tile([2.0, 4.0, 6.0, 0.0], (3, 1)))
    g = StandInGraph()
    mpo.emit_transform_tensor_bilinear(
        g, ["f", "m"], ["y"], options, [(1, 3, 4, 1), (1, 4, 4)], [False, False]
    )
    (got,) = g.session({"f": (1, 3, 4, 1), "m": (1, 4, 4)}, {"y": (1, 1, 3, 4)}).run(
        None, {"f": features, "m": matrix}
    )
    np.testing.assert_allclose(got[0, 0], out[0, :, :, 0], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Real faces: 68-point annotations drive a mouth crop of the real photo
# ---------------------------------------------------------------------------------------------


def _read_pts(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    start = lines.index("{") + 1
    return np.array([[float(v) for v in line.split()] for line in lines[start : lines.index("}")]])


def test_mouth_crop_of_real_faces_matches_reference() -> None:
    cv2 = pytest.importorskip("cv2")
    if not DATA_IMAGES.is_dir():
        pytest.skip(f"real face data missing: {DATA_IMAGES} (expected <repo>/../shared/data/images)")
    images = [p for p in sorted(DATA_IMAGES.glob("*.jpg")) if p.with_suffix(".pts").is_file()][:4]
    if not images:
        pytest.skip(f"no annotated .jpg/.pts pairs in {DATA_IMAGES}")
    # iBUG 68: mouth corners 48 and 54, outer and inner lips 48..67.
    options = {
        "left_rotation_idx": 48,
        "right_rotation_idx": 54,
        "subset_idxs": list(range(48, 68)),
        "target_rotation_radians": 0.0,
        "output_width": 24,
        "output_height": 16,
        "scale_x": 1.5,
        "scale_y": 1.5,
    }
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, f"unreadable image {path}"
        factor = 96.0 / max(image.shape[:2])
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        features = (small.astype(np.float32) / 255.0)[None]
        # Annotations are zero-based pixel centres; the ops use pixel i = [i, i + 1).
        points = (_read_pts(path.with_suffix(".pts")) + 0.5) * factor
        landmarks = np.concatenate([points, np.zeros((68, 1))], axis=1)[None].astype(np.float32)

        g = StandInGraph()
        matrix_name = mpo.emit_landmarks_to_transform_matrix(
            g, ["lm"], ["matrix"], options, [(1, 68, 3)], [False]
        )[0]
        mpo.emit_transform_tensor_bilinear(
            g, ["f", matrix_name], ["crop"], options, [features.shape, (1, 4, 4)], [False, False]
        )
        mpo.emit_transform_landmarks(
            g, ["lm", matrix_name], ["moved"], {}, [(1, 68, 3), (1, 4, 4)], [False, False]
        )
        session = g.session(
            {"lm": (1, 68, 3), "f": features.shape},
            {"matrix": (1, 4, 4), "crop": (1, 3, 16, 24), "moved": (1, 68, 3)},
        )
        matrix, crop, moved = session.run(None, {"lm": landmarks, "f": features})

        expected_matrix = mpo.landmarks_to_transform_matrix_np(landmarks, options)
        _assert_close(matrix, expected_matrix)
        expected_crop = mpo.transform_tensor_bilinear_np(features, expected_matrix, options)
        _assert_close(crop.transpose(0, 2, 3, 1), expected_crop)
        _assert_close(moved, mpo.transform_landmarks_np(landmarks, expected_matrix))
        assert np.count_nonzero(expected_crop.any(axis=-1)) == 24 * 16, (
            f"mouth crop of {path.name} left the image"
        )


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_emitters_reject_what_the_kernels_cannot_take() -> None:
    g = StandInGraph()
    options = {
        "left_rotation_idx": 0,
        "right_rotation_idx": 1,
        "subset_idxs": [0, 1],
        "output_width": 4,
        "output_height": 4,
        "scale_x": 1.0,
        "scale_y": 1.0,
    }
    with pytest.raises(mpo.MediapipeOpError, match=r"\(1, N, C\)"):
        mpo.emit_landmarks_to_transform_matrix(g, ["a"], ["b"], options, [(2, 5, 3)], [False])
    with pytest.raises(mpo.MediapipeOpError, match="lack 'right_rotation_idx'"):
        mpo.emit_landmarks_to_transform_matrix(
            g, ["a"], ["b"], {"left_rotation_idx": 0}, [(1, 5, 3)], [False]
        )
    with pytest.raises(mpo.MediapipeOpError, match="indexes landmark 9"):
        mpo.emit_landmarks_to_transform_matrix(
            g, ["a"], ["b"], {**options, "subset_idxs": [9]}, [(1, 5, 3)], [False]
        )
    with pytest.raises(mpo.MediapipeOpError, match="output_height"):
        mpo.emit_transform_tensor_bilinear(g, ["a", "m"], ["b"], {}, [(1, 8, 8, 2), (1, 4, 4)], [True, False])
    with pytest.raises(mpo.MediapipeOpError, match="C in"):
        mpo.emit_transform_landmarks(g, ["a", "m"], ["b"], {}, [(1, 5, 4), (1, 4, 4)], [False, False])
    with pytest.raises(mpo.MediapipeOpError, match="no ONNX emitter"):
        mpo.custom_op_emitter("FusedBatchNormV3")
    assert mpo.custom_op_emitter("TransformLandmarks") is mpo.emit_transform_landmarks
