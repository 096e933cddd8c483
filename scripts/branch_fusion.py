"""Merge parallel, identically shaped branches of an ONNX graph into one wide branch.

The attention mesh crops three regions (lips, left eye, right eye) out of one feature map and runs
a small network on each; the eye networks later split into eye and iris heads, so five copies of
the same layers run side by side on tensors as small as 2x2 pixels, some 500 small nodes, each with
its own dispatch and layout bookkeeping in onnxruntime. Concatenating the branches along the
channel axis turns each row of siblings into one node (about 100 in all):

- k depthwise convolutions become one depthwise convolution over all channels,
- k ordinary convolutions become one grouped convolution (group k): each branch still sees only
  its own channels,
- channelwise ops (BatchNormalization, Relu, Add, MaxPool) run once on the wide tensor.

Where siblings read the same branch twice (the eye/iris split), a Gather copies the channels into
place. Whatever still needs a branch on its own (the heads' reshapes, the graph outputs) gets
it back with one Split. The result computes the same numbers up to float rounding.

Siblings are found structurally: two nodes are siblings when they have the same operator, the same
attributes, the same constant shapes and sibling inputs, counted from the given seed tensors.
"""
from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

FUSABLE = {"Conv", "BatchNormalization", "Relu", "Add", "MaxPool"}


@dataclass(frozen=True)
class Group:
    """Tensors (NCHW, same batch and size) held side by side in ``fused`` along channels."""
    members: tuple[str, ...]
    channels: tuple[int, ...]
    fused: str

    def offsets(self) -> list[int]:
        return [int(v) for v in np.cumsum((0,) + self.channels[:-1])]


class _Fuser:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.new_consts: dict[str, np.ndarray] = {}
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.output}
        self.groups: dict[tuple[str, ...], Group] = {}
        self.member_group: dict[str, Group] = {}       # tensor -> the group whose fused node made it
        self.removed: set[int] = set()
        self.added: list[tuple[float, onnx.NodeProto]] = []   # (position, node)
        self.counter = 0

    # -- naming --------------------------------------------------------------------------------
    def name(self, hint: str) -> str:
        self.counter += 1
        return f"fused{self.counter}_{hint}"

    def const(self, array: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.new_consts[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def emit(self, position: float, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        node = helper.make_node(op_type, inputs, outputs, name=self.name(op_type), **attrs)
        self.added.append((position, node))

    # -- structure -----------------------------------------------------------------------------
    def keys(self, seeds: dict[str, str]) -> dict[int, str]:
        """A structural key for every node downstream of the seeds (equal keys = sibling nodes)."""
        key_of_tensor = dict(seeds)
        keys: dict[int, str] = {}
        for i, node in enumerate(self.nodes):
            parts, downstream = [node.op_type], False
            for attr in sorted(node.attribute, key=lambda a: a.name):
                parts.append(attr.SerializeToString().hex())
            for t in node.input:
                if t in key_of_tensor:
                    parts.append("t" + key_of_tensor[t])
                    downstream = True
                elif t in self.consts:
                    parts.append(f"c{list(self.consts[t].shape)}")
                else:
                    parts.append("x" + t)
            if not downstream:
                continue
            key = hashlib.sha1("|".join(parts).encode()).hexdigest()
            keys[i] = key
            for k, out in enumerate(node.output):
                key_of_tensor[out] = f"{key}:{k}"
        return keys

    def selection(self, tensors: tuple[str, ...]) -> tuple[Group, list[int]] | None:
        """The group holding all of ``tensors``, and where each sits in it (None if there is none)."""
        sources = {self.member_group.get(t) for t in tensors}
        if None in sources or len(sources) != 1:
            return None
        (source,) = sources
        return source, [source.members.index(t) for t in tensors]

    def group_for(self, tensors: tuple[str, ...], position: float) -> Group:
        """The fused tensor holding ``tensors`` in this order, copying channels into place if needed."""
        if tensors in self.groups:
            return self.groups[tensors]
        source, picks = self.selection(tensors)
        offsets = source.offsets()
        index = np.concatenate([np.arange(offsets[i], offsets[i] + source.channels[i]) for i in picks])
        fused = self.name("select")
        self.emit(position, "Gather", [source.fused, self.const_i64(index)], [fused], axis=1)
        fused = self.blocked(fused, len(index), position)
        group = Group(tensors, tuple(source.channels[i] for i in picks), fused)
        self.groups[tensors] = group
        return group

    def blocked(self, tensor: str, channels: int, position: float) -> str:
        """``tensor`` through an identity depthwise 1x1 convolution.

        onnxruntime keeps convolution results in its blocked (NCHWc) layout and runs the elementwise
        ops that read them there too, but an Add or BatchNormalization that reads a plain tensor
        (a Gather's, a Reshape's) stays in plain layout, with conversions around it. Passing the plain
        tensor through this no-op convolution converts it once for all its readers.
        """
        out = self.name("blocked")
        weights = self.const(np.ones((channels, 1, 1, 1), np.float32), "identity_w")
        self.emit(position + 0.1, "Conv", [tensor, weights], [out], kernel_shape=[1, 1], group=channels)
        return out

    # -- fusing one row of siblings --------------------------------------------------------------
    def fuse(self, indices: list[int]) -> bool:
        nodes = [self.nodes[i] for i in indices]
        op = nodes[0].op_type
        position = max(indices)
        inputs_by_slot = [tuple(n.input[slot] for n in nodes) for slot in range(len(nodes[0].input))]
        runtime = [t for t in inputs_by_slot if not all(name in self.consts for name in t)]
        if not runtime or any(t not in self.groups and self.selection(t) is None for t in runtime):
            return False
        if any(t not in self.groups and len(t) < len(self.selection(t)[0].members) for t in runtime):
            return False    # a few of many branches (the eye pair among five heads): the copy would cost more
        slots: list[str | list[np.ndarray]] = [
            self.group_for(t, position - 0.5).fused if t in runtime else [self.consts[n] for n in t]
            for t in inputs_by_slot]
        channels = self.groups[runtime[0]].channels
        attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
        out_channels = channels
        if op == "Conv":
            # Siblings share every weight shape (part of their key): k convolutions side by side are
            # one grouped convolution, and k depthwise ones one depthwise over all channels.
            weights = slots[1]
            biases = slots[2] if len(slots) > 2 else [np.zeros(w.shape[0], np.float32) for w in weights]
            out_channels = tuple(w.shape[0] for w in weights)
            attrs["group"] = attrs.get("group", 1) * len(nodes)
            inputs = [slots[0], self.const(np.concatenate(weights), "conv_w"), self.const(np.concatenate(biases), "conv_b")]
        elif op == "BatchNormalization":
            inputs = [slots[0]] + [self.const(np.concatenate(s), "bn") for s in slots[1:]]
        else:
            if any(not isinstance(s, str) for s in slots):
                return False
            inputs = list(slots)
        fused = self.name(op.lower())
        self.emit(position, op, inputs, [fused], **attrs)
        group = Group(tuple(n.output[0] for n in nodes), tuple(out_channels), fused)
        self.groups[group.members] = group
        for t in group.members:
            self.member_group[t] = group
        self.removed.update(indices)
        return True

    def run(self, seed_groups: list[Group]) -> onnx.ModelProto:
        seeds: dict[str, str] = {}
        for g, group in enumerate(seed_groups):
            position = max(self.producer[m] for m in group.members) + 0.5
            group = Group(group.members, group.channels, self.blocked(group.fused, sum(group.channels), position))
            self.groups[group.members] = group
            for name in group.members:
                seeds[name] = f"seed{g}"
                self.member_group[name] = group
        rows: dict[str, list[int]] = {}
        for i, key in self.keys(seeds).items():
            if self.nodes[i].op_type in FUSABLE and len(self.nodes[i].output) == 1:
                rows.setdefault(key, []).append(i)
        for indices in sorted((r for r in rows.values() if len(r) > 1), key=max):
            self.fuse(indices)
        self.split_back()
        return self.rebuild()

    def split_back(self) -> None:
        """Give every fused member that something else still reads its own tensor again."""
        needed = {t for i, n in enumerate(self.nodes) if i not in self.removed for t in n.input}
        needed |= {o.name for o in self.model.graph.output}
        needed |= {t for _, n in self.added for t in n.input}
        done: set[Group] = set()
        for t, group in self.member_group.items():
            if group in done or t not in needed or all(self.producer.get(m) not in self.removed for m in group.members):
                continue
            done.add(group)
            position = max(self.producer[m] for m in group.members)
            outputs = [m if m in needed else self.name("unused") for m in group.members]
            self.emit(position + 0.25, "Split", [group.fused, self.const_i64(group.channels)], outputs, axis=1)

    def const_i64(self, values) -> str:
        name = self.name("split")
        self.new_consts[name] = np.asarray(values, np.int64)
        return name

    def rebuild(self) -> onnx.ModelProto:
        kept = [(float(i), n) for i, n in enumerate(self.nodes) if i not in self.removed] + self.added
        kept = _without_dead_nodes(kept, {o.name for o in self.model.graph.output})
        ordered = _topological([n for _, n in sorted(kept, key=lambda pn: pn[0])],
                               {i.name for i in self.model.graph.input} | set(self.consts) | set(self.new_consts))
        used = {t for n in ordered for t in n.input}
        initializers = [t for t in self.model.graph.initializer if t.name in used]
        initializers += [numpy_helper.from_array(v, k) for k, v in self.new_consts.items() if k in used]
        graph = helper.make_graph(ordered, self.model.graph.name, list(self.model.graph.input),
                                  list(self.model.graph.output), initializer=initializers)
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import),
                                  producer_name=self.model.producer_name, producer_version=self.model.producer_version)
        model.ir_version = self.model.ir_version
        return model


def _without_dead_nodes(nodes: list, outputs: set[str]) -> list:
    """Drop (position, node) pairs whose results nothing reads (e.g. a Split made redundant)."""
    while True:
        read = outputs | {t for _, n in nodes for t in n.input}
        alive = [(p, n) for p, n in nodes if any(o in read for o in n.output)]
        if len(alive) == len(nodes):
            return alive
        nodes = alive


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so that each comes after its inputs' producers, keeping the given order where free."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    waiting = [sum(1 for t in set(n.input) if t and t not in available and t in producer) for n in nodes]
    readers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in set(n.input):
            if t and t not in available and t in producer:
                readers.setdefault(producer[t], []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in readers.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ValueError("branch fusion left a cycle in the graph")
    return order


def fuse_parallel_branches(model: onnx.ModelProto, seed_groups: list[Group]) -> onnx.ModelProto:
    """Merge the sibling branches that start at the members of each seed group."""
    return _Fuser(model).run(seed_groups)
