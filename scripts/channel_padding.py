"""Pad a convolutional network's channel counts to whole blocks of onnxruntime's blocked layout.

onnxruntime runs convolutions, and the Relu, Add and MaxPool between them, in a blocked (NCHWc)
layout of 16 channels per block on AVX-512 machines. BlazeFace widens its feature maps a few
channels at a time (24, 28, 32, 36, 42, ...), and a tensor whose channel count is not a whole
number of blocks drops out of that layout: onnxruntime converts it back and forth and runs its
MaxPool and Add in the slow plain layout. Giving such tensors extra channels that are always zero
(zero filters with zero bias in the convolutions that make them, zero weights in the ones that
read them) keeps the whole network blocked and computes the same numbers.

A tensor is padded only when everything around it lets it be: its readers are convolutions or
channelwise ops (Relu, MaxPool, Add, spatial Pad) whose own outputs are padded as well; graph
inputs and outputs, and tensors read by anything else (Transpose, Reshape, DepthToSpace), keep
their sizes. Zero channels stay zero through Relu, MaxPool, Add and zero padding.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK = 16
CHANNELWISE = {"Relu", "MaxPool", "Add"}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _is_spatial_pad(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    """A constant-zero Pad of the spatial axes only (NCHW: axes 2 and 3)."""
    if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in consts:
        return False
    pads = consts[node.input[1]]
    mode = _attrs(node).get("mode", b"constant")
    value_ok = len(node.input) < 3 or not node.input[2] or not np.any(consts.get(node.input[2], 1))
    return len(pads) == 8 and not pads[[0, 1, 4, 5]].any() and mode in (b"constant", "constant") and value_ok


def _is_depthwise(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    weights = consts.get(node.input[1]) if len(node.input) > 1 else None
    group = _attrs(node).get("group", 1)
    return weights is not None and group > 1 and weights.shape[1] == 1 and weights.shape[0] == group


def pad_channels(model: onnx.ModelProto, block: int = BLOCK) -> onnx.ModelProto:
    """The same network with inner channel counts rounded up to multiples of ``block``."""
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    # Real channel counts, from the convolutions that make each tensor and the channelwise ops after them.
    channels: dict[str, int] = {}
    for node in nodes:
        if node.op_type == "Conv" and node.input[1] in consts:
            channels[node.output[0]] = int(consts[node.input[1]].shape[0])
        elif (node.op_type in CHANNELWISE or _is_spatial_pad(node, consts)) and node.input[0] in channels:
            channels[node.output[0]] = channels[node.input[0]]

    def passes_through(node: onnx.NodeProto) -> bool:
        """Channelwise: its output is padded exactly when its input is."""
        return node.op_type in CHANNELWISE or _is_spatial_pad(node, consts) or (
            node.op_type == "Conv" and _is_depthwise(node, consts))

    def dense_conv(node: onnx.NodeProto) -> bool:
        return node.op_type == "Conv" and _attrs(node).get("group", 1) == 1 and node.input[1] in consts

    makers = {o for n in nodes if passes_through(n) or dense_conv(n) for o in n.output}
    padded = {t for t, c in channels.items() if c % block and t in makers} - {o.name for o in graph.output}
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if passes_through(node):
                tied = {node.input[0], node.output[0]} | ({node.input[1]} if node.op_type == "Add" else set())
                if tied & padded and not tied <= padded:
                    padded -= tied           # all of them or none
                    changed = True
            elif not dense_conv(node) and padded & set(node.input):
                padded -= set(node.input)    # read by something that needs the real channel count
                changed = True
    if not padded:
        return model

    def width(t: str) -> int:
        c = channels[t]
        return -(-c // block) * block if t in padded else c

    new_consts: dict[str, np.ndarray] = {}
    new_nodes = []
    for node in nodes:
        if node.op_type != "Conv" or not (node.output[0] in padded or node.input[0] in padded):
            new_nodes.append(node)
            continue
        weights = consts[node.input[1]]
        bias = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(weights.shape[0], np.float32)
        attrs = _attrs(node)
        out_width = width(node.output[0])
        if _is_depthwise(node, consts):
            grown = np.zeros((out_width,) + weights.shape[1:], weights.dtype)
            attrs["group"] = out_width
        else:
            in_width = width(node.input[0]) if node.input[0] in channels else weights.shape[1]
            grown = np.zeros((out_width, in_width) + weights.shape[2:], weights.dtype)
        grown[:weights.shape[0], :weights.shape[1]] = weights
        grown_bias = np.zeros(out_width, bias.dtype)
        grown_bias[:len(bias)] = bias
        w_name, b_name = f"{node.name}_padded_w", f"{node.name}_padded_b"
        new_consts[w_name], new_consts[b_name] = grown, grown_bias
        new_nodes.append(helper.make_node("Conv", [node.input[0], w_name, b_name], list(node.output),
                                          name=node.name, **attrs))

    used = {t for n in new_nodes for t in n.input}
    initializers = [t for t in graph.initializer if t.name in used]
    initializers += [numpy_helper.from_array(v, k) for k, v in new_consts.items()]
    out = helper.make_graph(new_nodes, graph.name, list(graph.input), list(graph.output), initializer=initializers)
    result = helper.make_model(out, opset_imports=list(model.opset_import), producer_name=model.producer_name,
                               producer_version=model.producer_version)
    result.ir_version = model.ir_version
    return result
