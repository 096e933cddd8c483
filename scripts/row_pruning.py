"""Compute only the rows of a 2-D network that its output reads.

The blendshape model (an MLP-Mixer over 97 tokens) reads only its class token, row 0, after the last
block: TFLite computes the last block's channel MLP and the second half of its token mixing for all 97
rows and then slices one out. Moving that row slice up towards the inputs, through the row-wise
operators (Add, Relu, Sigmoid, LayerNormalization over the last axis, ``x @ W``) and into the
constant of a left multiplication (``W @ h`` keeps only W's rows), leaves those operators one row
each: about a sixth of the model's multiply-adds. The numbers are the same up to float rounding.

It works on the 2-D graph ``convert_models.py`` writes for ``channels_first=False``; a slice moves up
only while it is the sole reader of what it slices, so nothing is computed twice.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

ROW_WISE = {"Relu", "Sigmoid"}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        inferred = shape_inference.infer_shapes(model)
        self.model = model
        self.nodes = list(model.graph.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(d.dim_value for d in dims)
        for name, value in self.consts.items():
            self.shapes[name] = value.shape
        self.outputs = {o.name for o in model.graph.output}
        self.counter = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_rows{self.counter}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.consts[name] = np.ascontiguousarray(value)
        self.shapes[name] = value.shape
        return name

    def producer(self) -> dict[str, onnx.NodeProto]:
        return {o: n for n in self.nodes for o in n.output}

    def readers(self) -> dict[str, list[onnx.NodeProto]]:
        found: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                found.setdefault(i, []).append(n)
        return found

    def row_slice(self, node: onnx.NodeProto) -> tuple[int, int] | None:
        """(start, end) when ``node`` is a Slice of whole rows of a 2-D tensor (every column kept)."""
        if node.op_type != "Slice" or len(node.input) < 4 or any(i not in self.consts for i in node.input[1:]):
            return None
        shape = self.shapes.get(node.input[0])
        if shape is None or len(shape) != 2:
            return None
        starts, ends, axes = (self.consts[i].tolist() for i in node.input[1:4])
        steps = self.consts[node.input[4]].tolist() if len(node.input) > 4 else [1] * len(axes)
        rows = (0, shape[0])
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis %= 2
            start, end = max(start if start >= 0 else start + shape[axis], 0), min(end, shape[axis])
            if step != 1:
                return None
            if axis == 0:
                rows = (start, end)
            elif (start, end) != (0, shape[1]):
                return None
        return rows if rows != (0, shape[0]) else None

    def sliced(self, name: str, rows: tuple[int, int], new_nodes: list[onnx.NodeProto]) -> str:
        """``name`` restricted to ``rows``: constants sliced here, runtime tensors by a new Slice node;
        inputs with a single row or a single axis broadcast and stay as they are."""
        shape = self.shapes.get(name)
        if shape is None or len(shape) < 2 or shape[-2] == 1:
            return name
        if name in self.consts:
            return self.const(self.consts[name][rows[0]:rows[1]], name)
        out = self.fresh(name)
        new_nodes.append(helper.make_node(
            "Slice", [name, self.const(np.array([rows[0]], np.int64), "start"),
                      self.const(np.array([rows[1]], np.int64), "end"), self.const(np.array([0], np.int64), "axis")],
            [out], name=self.fresh("slice")))
        self.shapes[out] = (rows[1] - rows[0],) + tuple(shape[1:])
        return out

    def push(self, node: onnx.NodeProto, rows: tuple[int, int]) -> list[onnx.NodeProto] | None:
        """Nodes computing the Slice ``node``'s output from sliced inputs of its source, or None."""
        source = self.producer().get(node.input[0])
        if source is None or len(self.readers().get(node.input[0], [])) != 1 or node.input[0] in self.outputs:
            return None
        kind, out = source.op_type, node.output[0]
        new: list[onnx.NodeProto] = []
        inner = self.row_slice(source)
        if inner is not None:                  # a slice of a slice: one slice of the original
            start = inner[0] + rows[0]
            return [helper.make_node("Slice", [source.input[0], self.const(np.array([start], np.int64), "start"),
                                               self.const(np.array([start + rows[1] - rows[0]], np.int64), "end"),
                                               self.const(np.array([0], np.int64), "axis")],
                                     [out], name=self.fresh("slice"))]
        if kind in ROW_WISE or (kind == "LayerNormalization" and _attrs(source).get("axis", -1) in (-1, 1)):
            inputs = [self.sliced(source.input[0], rows, new)] + list(source.input[1:])
        elif kind == "Add":
            inputs = [self.sliced(i, rows, new) for i in source.input]
        elif kind == "MatMul" and source.input[1] in self.consts and source.input[0] not in self.consts:
            inputs = [self.sliced(source.input[0], rows, new), source.input[1]]        # x @ W
        elif kind == "MatMul" and source.input[0] in self.consts:
            inputs = [self.sliced(source.input[0], rows, new), source.input[1]]        # W @ h: W's rows
        else:
            return None
        new.append(helper.make_node(kind, inputs, [out], name=self.fresh(source.name), **_attrs(source)))
        return new

    def merge_equal_slices(self) -> bool:
        """Make readers of identical row slices of one tensor read the first of them; True if any did."""
        first: dict[tuple[str, tuple[int, int]], str] = {}
        rename: dict[str, str] = {}
        for node in self.nodes:
            rows = self.row_slice(node)
            if rows is not None and node.output[0] not in self.outputs:
                key = (node.input[0], rows)
                if key in first:
                    rename[node.output[0]] = first[key]
                else:
                    first[key] = node.output[0]
        for node in self.nodes:
            for k, name in enumerate(node.input):
                if name in rename:
                    node.input[k] = rename[name]
        return bool(rename)

    def prune(self) -> onnx.ModelProto:
        changed = True
        while changed:
            changed = False
            if self.merge_equal_slices():
                self._drop_dead()
            for node in list(self.nodes):
                rows = self.row_slice(node)
                if rows is None:
                    continue
                replacement = self.push(node, rows)
                if replacement is None:
                    continue
                at = self.nodes.index(node)
                self.nodes[at:at + 1] = replacement
                self._drop_dead()
                changed = True
                break
        self._drop_dead()
        used = {i for n in self.nodes for i in n.input}
        graph = self.model.graph
        initializers = [numpy_helper.from_array(v, k) for k, v in self.consts.items() if k in used]
        new_graph = helper.make_graph(_in_order(self.nodes, graph), graph.name, list(graph.input),
                                      list(graph.output), initializer=initializers)
        model = helper.make_model(new_graph, opset_imports=list(self.model.opset_import),
                                  producer_name=self.model.producer_name, producer_version=self.model.producer_version)
        model.ir_version = self.model.ir_version
        return model

    def _drop_dead(self) -> None:
        live = set(self.outputs)
        kept = []
        for node in reversed(self.nodes):
            if any(o in live for o in node.output):
                kept.append(node)
                live.update(node.input)
        self.nodes = kept[::-1]


def _in_order(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes sorted so each comes after the producers of its inputs (a stable topological order)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    produced = {o for n in nodes for o in n.output}
    ready |= {i for n in nodes for i in n.input if i not in produced}
    ordered, pending = [], list(nodes)
    while pending:
        for k, node in enumerate(pending):
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
                del pending[k]
                break
        else:
            raise ValueError("row_pruning: the graph has a cycle")
    return ordered


def prune_rows(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model computing only the rows of its 2-D tensors that reach the outputs."""
    return _Graph(model).prune()
