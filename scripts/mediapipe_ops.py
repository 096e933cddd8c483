"""MediaPipe's custom TFLite ops, as numpy references and as standard ONNX subgraphs.

``face_landmark_with_attention.tflite`` uses three MediaPipe custom operators (all registered as
version 2) that onnxruntime does not know. This module re-expresses them with standard ONNX ops
(Gather, MatMul, GlobalMaxPool, GridSample, ...) so the converted model runs end to end, and keeps
small numpy implementations of the TFLite (NHWC) semantics that the ONNX output is tested against.

Semantics (read from MediaPipe's CPU kernels; landmark arrays are ``(1, N, C)``, x/y in the first
two channels, matrices are ``(1, 4, 4)`` row-major):

* ``Landmarks2TransformMatrix`` (v2): ``theta = atan2(yR - yL, xR - xL)`` from the left/right
  rotation landmarks, ``r = target_rotation_radians - theta``. The ``subset_idxs`` landmarks are
  rotated by ``R(r)``; their axis-aligned box gives size ``(w, h)`` and centre ``m``, and the crop
  centre is ``c = R(-r) m``. With ``k = (scale_x * w / output_width, scale_y * h / output_height)``
  the output is ``[[A, 0, t], [0 0 1 0], [0 0 0 1]]`` where ``A = R(-r) diag(k)`` and
  ``t = c - A (output_width / 2, output_height / 2)``. It maps crop coordinates to input
  coordinates (continuous coordinates: pixel ``i`` covers ``[i, i + 1)``).
* ``TransformTensorBilinear`` (v2): output pixel ``(ox, oy)`` samples the input at pixel index
  ``(u, v) = A (ox + 0.5, oy + 0.5) + t - 0.5`` with bilinear interpolation. A sample with
  ``u`` outside ``[0, W - 1]`` or ``v`` outside ``[0, H - 1]`` is exactly zero (no partial edge
  blending, unlike GridSample's zero padding). Only ``m00, m01, m03, m10, m11, m13`` are used.
* ``TransformLandmarks`` (v2, no options): ``x' = m00 x + m01 y + m03``,
  ``y' = m10 x + m11 y + m13``; a third channel (z) is copied unchanged. The landmark channel
  count (2 or 3) comes from the tensor shape.

The numpy references agree with the kernels in the mediapipe 0.10.14 wheel to float rounding
(checked by running single-op TFLite models through MediaPipe's InferenceCalculator).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

LANDMARKS_TO_TRANSFORM_MATRIX = "Landmarks2TransformMatrix"
TRANSFORM_TENSOR_BILINEAR = "TransformTensorBilinear"
TRANSFORM_LANDMARKS = "TransformLandmarks"
CUSTOM_OPS = frozenset({LANDMARKS_TO_TRANSFORM_MATRIX, TRANSFORM_TENSOR_BILINEAR, TRANSFORM_LANDMARKS})

# GridSample renamed its interpolation mode from "bilinear" to "linear" in opset 20.
_GRID_SAMPLE_LINEAR_RENAMED_OPSET = 20
_ASSUMED_OPSET = 17


class MediapipeOpError(ValueError):
    """A MediaPipe custom op has options or tensor shapes this module cannot express."""


class GraphBuilder(Protocol):
    """What the emitters need from the converter's graph under construction."""

    def node(
        self, op_type: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any
    ) -> list[str]: ...

    def const(self, array: np.ndarray, name_hint: str) -> str: ...


Emitter = Callable[[GraphBuilder, list[str], list[str], dict | None, list[tuple], list[bool]], list[str]]


def decode_custom_options(raw: bytes | bytearray | np.ndarray | None) -> dict:
    """Decode a TFLite operator's flexbuffer custom options into a dict ({} when absent)."""
    if raw is None or isinstance(raw, int) or len(raw) == 0:
        return {}
    from flatbuffers import flexbuffers

    decoded = flexbuffers.Loads(bytes(raw))
    if not isinstance(decoded, dict):
        raise MediapipeOpError(f"custom options decode to {type(decoded).__name__}, expected a map")
    return decoded


# ---------------------------------------------------------------------------------------------
# Option parsing shared by references and emitters
# ---------------------------------------------------------------------------------------------


def _require(options: dict, key: str) -> Any:
    if key not in options:
        raise MediapipeOpError(f"custom options lack '{key}' (got keys {sorted(options)})")
    return options[key]


def _matrix_options(options: dict) -> tuple[int, int, list[int], float, int, int, float, float]:
    """Validated Landmarks2TransformMatrix v2 options."""
    left = int(_require(options, "left_rotation_idx"))
    right = int(_require(options, "right_rotation_idx"))
    subset = [int(i) for i in _require(options, "subset_idxs")]
    target = float(options.get("target_rotation_radians", 0.0))
    out_w = int(_require(options, "output_width"))
    out_h = int(_require(options, "output_height"))
    scale_x = float(_require(options, "scale_x"))
    scale_y = float(_require(options, "scale_y"))
    if not subset:
        raise MediapipeOpError("Landmarks2TransformMatrix needs a non-empty subset_idxs")
    if min([left, right, *subset]) < 0:
        raise MediapipeOpError("Landmarks2TransformMatrix landmark indices must be >= 0")
    if out_w <= 0 or out_h <= 0 or scale_x <= 0 or scale_y <= 0:
        raise MediapipeOpError(
            f"Landmarks2TransformMatrix needs positive output size and scale, got "
            f"{out_w}x{out_h}, scale ({scale_x}, {scale_y})"
        )
    return left, right, subset, target, out_w, out_h, scale_x, scale_y


def _output_hw(options: dict) -> tuple[int, int]:
    out_h = int(_require(options, "output_height"))
    out_w = int(_require(options, "output_width"))
    if out_h <= 0 or out_w <= 0:
        raise MediapipeOpError(f"TransformTensorBilinear output size must be positive, got {out_h}x{out_w}")
    return out_h, out_w


def _check_landmarks_shape(shape: Sequence[int], op: str, channels: tuple[int, ...]) -> None:
    if len(shape) != 3 or shape[0] != 1 or shape[2] not in channels:
        raise MediapipeOpError(
            f"{op} expects landmarks shaped (1, N, C) with C in {channels}, got {tuple(shape)}"
        )


def _check_matrix_shape(shape: Sequence[int], op: str) -> None:
    if tuple(shape) != (1, 4, 4):
        raise MediapipeOpError(f"{op} expects a (1, 4, 4) matrix, got {tuple(shape)}")


# ---------------------------------------------------------------------------------------------
# numpy references (TFLite NHWC semantics)
# ---------------------------------------------------------------------------------------------


def landmarks_to_transform_matrix_np(landmarks: np.ndarray, options: dict) -> np.ndarray:
    """Crop matrix (1, 4, 4) mapping crop coordinates to landmark coordinates, like the TFLite op."""
    lm = np.asarray(landmarks, dtype=np.float64)
    _check_landmarks_shape(lm.shape, LANDMARKS_TO_TRANSFORM_MATRIX, (3,))
    left, right, subset, target, out_w, out_h, scale_x, scale_y = _matrix_options(options)
    xy = lm[0, :, :2]
    dx, dy = xy[right] - xy[left]
    r = target - np.arctan2(dy, dx)
    c, s = np.cos(r), np.sin(r)
    rot_neg = np.array([[c, s], [-s, c]])  # R(-r); rotating row vectors by R(r) is p @ R(-r)
    rotated = xy[subset] @ rot_neg
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    centre = rot_neg @ ((lo + hi) / 2.0)
    k = (hi - lo) * np.array([scale_x / out_w, scale_y / out_h])
    linear = rot_neg * k[None, :]
    shift = centre - linear @ np.array([out_w / 2.0, out_h / 2.0])
    out = np.eye(4)
    out[:2, :2] = linear
    out[:2, 3] = shift
    return out[None].astype(np.float32)


def transform_tensor_bilinear_np(features: np.ndarray, matrix: np.ndarray, options: dict) -> np.ndarray:
    """Resample an NHWC (1, H, W, C) tensor through the crop matrix; zeros outside the input."""
    feat = np.asarray(features, dtype=np.float32)
    if feat.ndim != 4 or feat.shape[0] != 1:
        raise MediapipeOpError(f"{TRANSFORM_TENSOR_BILINEAR} expects features (1, H, W, C), got {feat.shape}")
    _check_matrix_shape(np.shape(matrix), TRANSFORM_TENSOR_BILINEAR)
    out_h, out_w = _output_hw(options)
    _, height, width, _ = feat.shape
    m = np.asarray(matrix, dtype=np.float32).reshape(16)
    # The kernel folds the half-pixel shift into the translation in double, then stores float.
    row_x = m[0:4].copy()
    row_y = m[4:8].copy()
    row_x[3] = np.float32(float(row_x[3]) + float(row_x[0]) * 0.5 + float(row_x[1]) * 0.5 - 0.5)
    row_y[3] = np.float32(float(row_y[3]) + float(row_y[0]) * 0.5 + float(row_y[1]) * 0.5 - 0.5)
    oy, ox = np.meshgrid(
        np.arange(out_h, dtype=np.float32), np.arange(out_w, dtype=np.float32), indexing="ij"
    )
    u = row_x[0] * ox + row_x[1] * oy + row_x[3]
    v = row_y[0] * ox + row_y[1] * oy + row_y[3]
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    x0 = np.floor(u).astype(np.int64)
    y0 = np.floor(v).astype(np.int64)
    fx = (u - x0)[..., None]
    fy = (v - y0)[..., None]

    def read(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        valid = (yi >= 0) & (xi >= 0) & (yi < height) & (xi < width)
        vals = feat[0, np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
        return np.where(valid[..., None], vals, np.float32(0))

    upper = (1 - fx) * read(y0, x0) + fx * read(y0, x0 + 1)
    lower = (1 - fx) * read(y0 + 1, x0) + fx * read(y0 + 1, x0 + 1)
    out = fy * lower + (1 - fy) * upper
    out = np.where(inside[..., None], out, np.float32(0))
    return out[None].astype(np.float32)


def transform_landmarks_np(
    landmarks: np.ndarray, matrix: np.ndarray, options: dict | None = None
) -> np.ndarray:
    """Apply the matrix's 2-D affine part to (1, N, 2|3) landmarks; z passes through."""
    lm = np.asarray(landmarks, dtype=np.float32)
    _check_landmarks_shape(lm.shape, TRANSFORM_LANDMARKS, (2, 3))
    _check_matrix_shape(np.shape(matrix), TRANSFORM_LANDMARKS)
    m = np.asarray(matrix, dtype=np.float32)[0]
    out = lm.copy()
    x, y = lm[..., 0], lm[..., 1]
    out[..., 0] = m[0, 0] * x + m[0, 1] * y + m[0, 3]
    out[..., 1] = m[1, 0] * x + m[1, 1] * y + m[1, 3]
    return out


# ---------------------------------------------------------------------------------------------
# ONNX emitters
# ---------------------------------------------------------------------------------------------


class _Emit:
    """Terse single-output node helpers over a GraphBuilder, so emitters read like the maths."""

    def __init__(self, g: GraphBuilder, prefix: str) -> None:
        self.g = g
        self.prefix = prefix

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        return self.g.node(op_type, list(inputs), [output] if output is not None else None, **attrs)[0]

    def f32(self, value: Any, hint: str) -> str:
        return self.g.const(np.asarray(value, dtype=np.float32), f"{self.prefix}_{hint}")

    def i64(self, value: Any, hint: str) -> str:
        return self.g.const(np.asarray(value, dtype=np.int64), f"{self.prefix}_{hint}")

    def reshape(self, x: str, shape: Sequence[int], output: str | None = None) -> str:
        return self.op("Reshape", x, self.i64(list(shape), "shape"), output=output)

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op(
            "Slice", x, self.i64([start], "start"), self.i64([end], "end"), self.i64([axis], "axis")
        )

    def gather(self, x: str, indices: Any, axis: int = 0) -> str:
        return self.op("Gather", x, self.i64(indices, "idx"), axis=axis)


def _check_io(
    op: str, inputs: list[str], outputs: list[str], n_inputs: int, input_shapes: list[tuple]
) -> None:
    if len(inputs) != n_inputs or len(input_shapes) != n_inputs or len(outputs) != 1:
        raise MediapipeOpError(
            f"{op} takes {n_inputs} inputs and 1 output, got {len(inputs)} inputs, "
            f"{len(input_shapes)} shapes, {len(outputs)} outputs"
        )


def _grid_sample_mode(g: GraphBuilder) -> str:
    opset = getattr(g, "opset", None)
    if opset is None:
        logger.debug("graph builder has no 'opset'; assuming %d for GridSample", _ASSUMED_OPSET)
        opset = _ASSUMED_OPSET
    return "linear" if int(opset) >= _GRID_SAMPLE_LINEAR_RENAMED_OPSET else "bilinear"


def emit_landmarks_to_transform_matrix(
    g: GraphBuilder,
    inputs: list[str],
    outputs: list[str],
    options: dict | None,
    input_shapes: list[tuple],
    layout_nchw: list[bool],
) -> list[str]:
    """Landmarks (1, N, 3) -> crop matrix (1, 4, 4), without atan2 (ONNX has none).

    cos/sin of ``r = target - atan2(dy, dx)`` come from the unit vector ``(dx, dy) / |d|`` and the
    angle-difference identities; a zero-length ``d`` gives ``theta = 0`` like atan2(0, 0).
    """
    op = LANDMARKS_TO_TRANSFORM_MATRIX
    _check_io(op, inputs, outputs, 1, input_shapes)
    _check_landmarks_shape(input_shapes[0], op, (3,))
    left, right, subset, target, out_w, out_h, scale_x, scale_y = _matrix_options(options or {})
    n_landmarks = input_shapes[0][1]
    if max([left, right, *subset]) >= n_landmarks:
        raise MediapipeOpError(f"{op} indexes landmark {max([left, right, *subset])} of only {n_landmarks}")
    e = _Emit(g, "l2tm")

    xy = e.slice(e.reshape(inputs[0], [n_landmarks, 3]), 0, 2, axis=1)  # (N, 2)
    d = e.op("Sub", e.gather(xy, right), e.gather(xy, left))  # (2,)
    norm = e.op("Sqrt", e.op("MatMul", d, d))
    degenerate = e.op("Equal", norm, e.f32(0.0, "zero"))
    unit = e.op("Div", d, e.op("Where", degenerate, e.f32(1.0, "one"), norm))
    unit = e.op("Where", degenerate, e.f32([1.0, 0.0], "unit_x"), unit)  # (cos th, sin th)
    # [cos r, sin r] = [cos t cos th + sin t sin th, sin t cos th - cos t sin th] with t = target.
    ct, st = np.cos(target), np.sin(target)
    cos_sin = e.op("MatMul", unit, e.f32([[ct, st], [st, -ct]], "target"))
    # rot_neg = R(-r) = [[c, s], [-s, c]] and rot_pos = R(r) = [[c, -s], [s, c]], laid out from [c, s].
    rot_neg = e.reshape(e.op("MatMul", cos_sin, e.f32([[1, 0, 0, 1], [0, 1, -1, 0]], "rneg")), [2, 2])
    rot_pos = e.reshape(e.op("MatMul", cos_sin, e.f32([[1, 0, 0, 1], [0, -1, 1, 0]], "rpos")), [2, 2])

    rotated = e.op("MatMul", e.gather(xy, subset), rot_neg)  # (K, 2): row vectors rotated by R(r)
    # Per-coordinate max and min over the K points: GlobalMaxPool on (1, 2, K) avoids the
    # opset-dependent axes of ReduceMax.
    by_coord = e.op("Unsqueeze", e.op("Transpose", rotated, perm=[1, 0]), e.i64([0], "axis0"))
    hi = e.reshape(e.op("GlobalMaxPool", by_coord), [2])
    lo = e.op("Neg", e.reshape(e.op("GlobalMaxPool", e.op("Neg", by_coord)), [2]))
    middle = e.op("Mul", e.op("Add", hi, lo), e.f32(0.5, "half"))
    centre = e.op("MatMul", middle, rot_pos)  # row form of R(-r) @ middle
    k = e.op("Mul", e.op("Sub", hi, lo), e.f32([scale_x / out_w, scale_y / out_h], "scale"))
    linear = e.op("Mul", rot_neg, k)  # R(-r) @ diag(k): scales the columns
    shift = e.op("Sub", centre, e.op("MatMul", linear, e.f32([out_w / 2.0, out_h / 2.0], "half_out")))

    top = e.op("Concat", linear, e.f32([[0.0], [0.0]], "zero_col"), e.reshape(shift, [2, 1]), axis=1)
    full = e.op("Concat", top, e.f32([[0, 0, 1, 0], [0, 0, 0, 1]], "bottom"), axis=0)
    return [e.reshape(full, [1, 4, 4], output=outputs[0])]


def emit_landmarks_to_transform_matrix_batch(
    g: GraphBuilder,
    inputs: list[str],
    outputs: list[str],
    options: list[dict],
    landmark_count: int,
) -> str:
    """Several crop matrices at once: K landmark tensors (1, N, 3) with K option sets -> (K, 4, 4).

    The same maths as ``emit_landmarks_to_transform_matrix``, with every per-crop choice (rotation
    landmarks, subset, target angle, size, scale) turned into a constant with a leading crop axis.
    Subsets of different lengths are padded by repeating their first index, which leaves the box's
    extremes unchanged. The attention mesh makes three matrices from one mesh: one subgraph of ~40
    nodes instead of three of ~40, which onnxruntime runs in about half the time. ``outputs`` gets
    the K matrices as (1, 4, 4); the (K, 4, 4) stack is returned as well.
    """
    op = LANDMARKS_TO_TRANSFORM_MATRIX
    if len(inputs) != len(options) or len(outputs) != len(options) or not inputs:
        raise MediapipeOpError(f"{op} batch needs one input, one output and one option set per crop")
    parsed = [_matrix_options(o or {}) for o in options]
    n = landmark_count
    for left, right, subset, *_ in parsed:
        if max([left, right, *subset]) >= n:
            raise MediapipeOpError(f"{op} indexes landmark {max([left, right, *subset])} of only {n}")
    crops = len(inputs)
    e = _Emit(g, "l2tm")
    base = np.arange(crops)[:, None] * n                                 # row of crop k in the flat table
    longest = max(len(p[2]) for p in parsed)
    subsets = np.array([p[2] + [p[2][0]] * (longest - len(p[2])) for p in parsed]) + base
    lefts = np.array([[p[0]] for p in parsed]) + base
    rights = np.array([[p[1]] for p in parsed]) + base
    targets = np.array([p[3] for p in parsed])
    ct, st = np.cos(targets), np.sin(targets)

    stacked = e.op("Concat", *inputs, axis=0)                                             # (K, N, 3)
    xy = e.reshape(e.slice(stacked, 0, 2, axis=2), [crops * n, 2])
    d = e.op("Sub", e.reshape(e.gather(xy, rights), [crops, 2]), e.reshape(e.gather(xy, lefts), [crops, 2]))
    norm = e.op("Sqrt", e.op("ReduceSum", e.op("Mul", d, d), e.i64([1], "ax1"), keepdims=1))   # (K, 1)
    degenerate = e.op("Equal", norm, e.f32(0.0, "zero"))
    unit = e.op("Div", d, e.op("Where", degenerate, e.f32(1.0, "one"), norm))
    unit = e.op("Where", degenerate, e.f32([1.0, 0.0], "unit_x"), unit)                   # (cos th, sin th)
    target = np.stack([np.stack([ct, st], -1), np.stack([st, -ct], -1)], 1)               # (K, 2, 2)
    cos_sin = e.op("MatMul", e.op("Unsqueeze", unit, e.i64([1], "ax1")), e.f32(target, "target"))  # (K, 1, 2)
    rot_neg = e.reshape(e.op("MatMul", cos_sin, e.f32([[1, 0, 0, 1], [0, 1, -1, 0]], "rneg")), [crops, 2, 2])
    rot_pos = e.reshape(e.op("MatMul", cos_sin, e.f32([[1, 0, 0, 1], [0, -1, 1, 0]], "rpos")), [crops, 2, 2])

    rotated = e.op("MatMul", e.gather(xy, subsets), rot_neg)                              # (K, S, 2)
    by_coord = e.op("Transpose", rotated, perm=[0, 2, 1])                                 # (K, 2, S)
    hi = e.reshape(e.op("GlobalMaxPool", by_coord), [crops, 1, 2])
    lo = e.op("Neg", e.reshape(e.op("GlobalMaxPool", e.op("Neg", by_coord)), [crops, 1, 2]))
    middle = e.op("Mul", e.op("Add", hi, lo), e.f32(0.5, "half"))
    centre = e.op("MatMul", middle, rot_pos)                                              # (K, 1, 2)
    scale = [[[p[6] / p[4], p[7] / p[5]]] for p in parsed]
    k = e.op("Mul", e.op("Sub", hi, lo), e.f32(scale, "scale"))
    linear = e.op("Mul", rot_neg, k)                                                      # scales the columns
    half_out = [[[p[4] / 2.0], [p[5] / 2.0]] for p in parsed]
    shift = e.op("Sub", e.op("Transpose", centre, perm=[0, 2, 1]), e.op("MatMul", linear, e.f32(half_out, "half_out")))

    top = e.op("Concat", linear, e.f32(np.zeros((crops, 2, 1)), "zero_col"), shift, axis=2)   # (K, 2, 4)
    bottom = np.broadcast_to(np.array([[0, 0, 1, 0], [0, 0, 0, 1]], np.float32), (crops, 2, 4))
    full = e.op("Concat", top, e.f32(bottom, "bottom"), axis=1)                           # (K, 4, 4)
    g.node("Split", [full, e.i64([1] * crops, "ones")], list(outputs), axis=0)
    return full


def emit_transform_tensor_bilinear(
    g: GraphBuilder,
    inputs: list[str],
    outputs: list[str],
    options: dict | None,
    input_shapes: list[tuple],
    layout_nchw: list[bool],
) -> list[str]:
    """Features (TFLite (1, H, W, C)) x matrix (1, 4, 4) -> NCHW (1, C, OH, OW) via GridSample.

    GridSample with align_corners=1 reads pixel index ``u`` at normalised ``2 u / (W - 1) - 1``.
    Its zero padding blends edge pixels with zeros, whereas the TFLite kernel zeroes a sample only
    when it falls outside ``[0, W-1] x [0, H-1]``; inside that range both read the same taps, so
    the GridSample output is multiplied by an explicit inside-mask.
    """
    op = TRANSFORM_TENSOR_BILINEAR
    _check_io(op, inputs, outputs, 2, input_shapes)
    feat_shape = tuple(input_shapes[0])
    if len(feat_shape) != 4 or feat_shape[0] != 1:
        raise MediapipeOpError(f"{op} expects features shaped (1, H, W, C) in TFLite, got {feat_shape}")
    _check_matrix_shape(input_shapes[1], op)
    out_h, out_w = _output_hw(options or {})
    _, height, width, _ = feat_shape
    e = _Emit(g, "ttb")

    features = inputs[0]
    if not (layout_nchw and layout_nchw[0]):
        features = e.op("Transpose", features, perm=[0, 3, 1, 2])

    affine = e.gather(e.reshape(inputs[1], [16]), [[0, 1, 3], [4, 5, 7]])  # rows (m00 m01 m03), (m10 m11 m13)
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    centres = np.stack([ox.ravel() + 0.5, oy.ravel() + 0.5, np.ones(out_h * out_w)])  # (3, OH*OW)
    uv = e.op("MatMul", affine, e.f32(centres, "centres"))
    uv = e.op("Sub", uv, e.f32(0.5, "half"))  # input pixel indices (u; v), (2, OH*OW)

    in_range = e.op(
        "And",
        e.op("GreaterOrEqual", uv, e.f32(0.0, "zero")),
        e.op("LessOrEqual", uv, e.f32([[width - 1], [height - 1]], "limits")),
    )
    inside = e.op("And", e.gather(in_range, 0), e.gather(in_range, 1))
    mask = e.reshape(e.op("Cast", inside, to=1), [1, 1, out_h, out_w])  # to=1: FLOAT

    # A size-1 axis has only index 0 valid; scale 0 sends it to -1, which GridSample reads as 0.
    norm_scale = [[2.0 / (width - 1) if width > 1 else 0.0], [2.0 / (height - 1) if height > 1 else 0.0]]
    grid = e.op("Sub", e.op("Mul", uv, e.f32(norm_scale, "norm")), e.f32(1.0, "one"))
    grid = e.reshape(e.op("Transpose", grid, perm=[1, 0]), [1, out_h, out_w, 2])
    sampled = e.op(
        "GridSample", features, grid, mode=_grid_sample_mode(g), padding_mode="zeros", align_corners=1
    )
    return [e.op("Mul", sampled, mask, output=outputs[0])]


def emit_transform_tensor_bilinear_batch(
    g: GraphBuilder,
    features: str,
    matrices: list[str],
    feature_shape: tuple[int, int, int, int],
    options: dict | None,
) -> str:
    """Several crops of one NCHW feature map at once -> (1, K * C, OH, OW), crop after crop.

    The same sampling as ``emit_transform_tensor_bilinear`` (bilinear taps inside the input,
    exact zeros outside), written as one Gather of the four taps of every output pixel of every
    crop and a weighted sum. onnxruntime's GridSample is slow on these small maps (about 0.15 ms
    per crop); this costs about the same as one of them for all crops together, and its output is
    already the channel-stacked tensor the merged attention heads read (see branch_fusion.py).
    """
    op = TRANSFORM_TENSOR_BILINEAR
    if len(feature_shape) != 4 or feature_shape[0] != 1:
        raise MediapipeOpError(f"{op} expects features shaped (1, H, W, C) in TFLite, got {feature_shape}")
    out_h, out_w = _output_hw(options or {})
    _, height, width, channels = feature_shape
    crops = len(matrices)
    e = _Emit(g, "ttb")

    stacked = e.reshape(e.op("Concat", *matrices, axis=0), [crops, 16])
    affine = e.gather(stacked, [[0, 1, 3], [4, 5, 7]], axis=1)  # (K, 2, 3): rows (m00 m01 m03), (m10 m11 m13)
    oy, ox = np.meshgrid(np.arange(out_h), np.arange(out_w), indexing="ij")
    centres = np.stack([ox.ravel() + 0.5, oy.ravel() + 0.5, np.ones(out_h * out_w)])  # (3, P)
    uv = e.op("Sub", e.op("MatMul", affine, e.f32(centres, "centres")), e.f32(0.5, "half"))  # (K, 2, P)

    limits = e.f32([[width - 1], [height - 1]], "limits")
    in_range = e.op("And", e.op("GreaterOrEqual", uv, e.f32(0.0, "zero")), e.op("LessOrEqual", uv, limits))
    inside = e.op("ReduceMin", e.op("Cast", in_range, to=1), axes=[1], keepdims=1)  # (K, 1, P), to=1: FLOAT

    base = e.op("Floor", uv)
    frac = e.op("Sub", uv, base)
    first = e.op("Min", e.op("Max", base, e.f32(0.0, "zero")), limits)  # clamped taps; weight 0 where clamped
    second = e.op("Min", e.op("Add", first, e.f32(1.0, "one")), limits)
    # taps[k, axis (u, v), tap (first, second), p] and their weights (1 - frac, frac)
    taps = e.op("Concat", e.op("Unsqueeze", first, e.i64([2], "ax2")), e.op("Unsqueeze", second, e.i64([2], "ax2")),
                axis=2)
    weights = e.op("Concat", e.op("Unsqueeze", e.op("Sub", e.f32(1.0, "one"), frac), e.i64([2], "ax2")),
                   e.op("Unsqueeze", frac, e.i64([2], "ax2")), axis=2)
    scaled_taps = e.op("Mul", taps, e.f32([[[1.0]], [[float(width)]]], "row_stride"))
    # flat index = v * W + u and weight = w_v * w_u for the 2 x 2 taps: (K, 2 (v tap), 2 (u tap), P)
    index = e.op("Add", e.op("Unsqueeze", e.gather(scaled_taps, 1, axis=1), e.i64([2], "ax2")),
                 e.op("Unsqueeze", e.gather(scaled_taps, 0, axis=1), e.i64([1], "ax1")))
    weight = e.op("Mul", e.op("Unsqueeze", e.gather(weights, 1, axis=1), e.i64([2], "ax2")),
                  e.op("Unsqueeze", e.gather(weights, 0, axis=1), e.i64([1], "ax1")))
    index = e.op("Cast", e.reshape(index, [crops, 4, out_h * out_w]), to=7)  # to=7: INT64
    weight = e.op("Mul", e.reshape(weight, [crops, 4, out_h * out_w]), inside)

    # Gathering whole pixels (rows of C values) is several times faster than gathering along
    # the pixel axis of a (C, H*W) map, so the map is read pixel-major.
    # (Transposing the NCHW map to NHWC first lets onnxruntime write it pixel-major straight out of its
    # blocked layout, with no separate transpose.)
    pixels = e.reshape(e.op("Transpose", features, perm=[0, 2, 3, 1]), [height * width, channels])  # (H*W, C)
    read = e.op("Gather", pixels, index, axis=0)  # (K, 4, P, C)
    weight = e.op("Unsqueeze", weight, e.i64([3], "ax3"))
    summed = e.op("ReduceSum", e.op("Mul", read, weight), e.i64([1], "ax1"), keepdims=0)  # (K, P, C)
    crop_major = e.op("Transpose", summed, perm=[0, 2, 1])  # (K, C, P)
    return e.reshape(crop_major, [1, crops * channels, out_h, out_w])


def emit_transform_landmarks(
    g: GraphBuilder,
    inputs: list[str],
    outputs: list[str],
    options: dict | None,
    input_shapes: list[tuple],
    layout_nchw: list[bool],
) -> list[str]:
    """Landmarks (1, N, 2|3) x matrix (1, 4, 4) -> landmarks (1, N, 2|3); z copied."""
    op = TRANSFORM_LANDMARKS
    _check_io(op, inputs, outputs, 2, input_shapes)
    _check_landmarks_shape(input_shapes[0], op, (2, 3))
    _check_matrix_shape(input_shapes[1], op)
    has_z = input_shapes[0][2] == 3
    e = _Emit(g, "tl")

    flat = e.reshape(inputs[1], [16])
    linear_t = e.gather(flat, [[0, 4], [1, 5]])  # transposed 2x2 part, for row vectors
    shift = e.gather(flat, [3, 7])
    xy = e.slice(inputs[0], 0, 2, axis=2) if has_z else inputs[0]
    moved = e.op("Add", e.op("MatMul", xy, linear_t), shift, output=None if has_z else outputs[0])
    if not has_z:
        return [moved]
    z = e.slice(inputs[0], 2, 3, axis=2)
    return [e.op("Concat", moved, z, axis=2, output=outputs[0])]


def custom_op_emitter(custom_code: str) -> Emitter:
    """The emitter for a MediaPipe custom op name, as found in the TFLite operator codes."""
    emitters: dict[str, Emitter] = {
        LANDMARKS_TO_TRANSFORM_MATRIX: emit_landmarks_to_transform_matrix,
        TRANSFORM_TENSOR_BILINEAR: emit_transform_tensor_bilinear,
        TRANSFORM_LANDMARKS: emit_transform_landmarks,
    }
    try:
        return emitters[custom_code]
    except KeyError:
        raise MediapipeOpError(
            f"no ONNX emitter for custom op '{custom_code}'; supported: {sorted(emitters)}"
        ) from None
