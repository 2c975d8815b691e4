"""Small, exact rewrites of an ONNX graph that let onnx2torch convert what PyTorch's exporters write.

Each repair keeps the graph's meaning and is needed by a real exporter's output
(torch 2.14, checked with MobileNetV2):

- the legacy exporter (``dynamo=False``) writes ``Constant`` nodes and turns
  equal initializers into ``Identity`` nodes; onnx2torch's Conv and Clip want
  their weights, bias and bounds as initializers, and it has no ``Identity``
  converter from opset 19 on: constants become initializers, identities go;
- the dynamo exporter writes ``Reshape(allowzero=1)``, which onnx2torch
  refuses; allowzero only matters when the target shape holds a 0;
- both fix the batch dimension at 1 (the example input's); the converted
  module only cares where a ``Reshape`` target spells that 1 out, and there
  it becomes 0 ("copy the input's dimension") when the input's first
  dimension is the batch, so the app can run several images at once.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

BATCH = "batch"   # the symbolic name given to a batch dimension the exporter fixed at 1


def fold_constants(model: onnx.ModelProto) -> int:
    """Turn ``Constant`` nodes holding a tensor or numbers into initializers.

    Returns:
        How many nodes were folded.
    """
    graph = model.graph
    kept, folded = [], 0
    for node in graph.node:
        tensor = _constant_tensor(node) if node.op_type == "Constant" and not node.domain else None
        if tensor is None:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        folded += 1
    _replace_nodes(graph, kept)
    return folded


def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    """The value of a Constant node, or None for kinds left to onnx2torch (sparse, strings)."""
    if len(node.attribute) != 1:
        return None
    attribute = node.attribute[0]
    if attribute.name == "value":
        tensor = TensorProto()
        tensor.CopyFrom(attribute.t)
        return tensor
    numbers = {"value_float": (attribute.f, np.float32), "value_floats": (list(attribute.floats), np.float32),
               "value_int": (attribute.i, np.int64), "value_ints": (list(attribute.ints), np.int64)}
    if attribute.name not in numbers:
        return None
    value, dtype = numbers[attribute.name]
    return numpy_helper.from_array(np.asarray(value, dtype=dtype))


def drop_identities(model: onnx.ModelProto) -> int:
    """Remove ``Identity`` nodes, reading their input wherever their output was read.

    An Identity whose output is a graph output stays (its name is the output's).

    Returns:
        How many nodes were removed.
    """
    graph = model.graph
    outputs = {value.name for value in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and not node.domain and node.output[0] not in outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
            continue
        kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    _replace_nodes(graph, kept)
    return len(alias)


def relax_allowzero(model: onnx.ModelProto) -> int:
    """Set ``allowzero`` to 0 on Reshapes whose target shape is an initializer without zeros.

    With no 0 in the shape, allowzero=1 and allowzero=0 mean the same reshape.

    Returns:
        How many Reshapes were changed.
    """
    shapes = _initializers(model)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.domain or len(node.input) < 2 or node.input[1] not in shapes:
            continue
        for attribute in node.attribute:
            if attribute.name == "allowzero" and attribute.i == 1 \
                    and not (numpy_helper.to_array(shapes[node.input[1]]) == 0).any():
                attribute.i = 0
                changed += 1
    return changed


def free_batch(model: onnx.ModelProto) -> int:
    """Make a batch dimension fixed at 1 symbolic, and let Reshapes copy it instead of spelling out 1.

    Only for one 4-D image input whose first dimension is exactly 1. A Reshape
    is changed when its data's first dimension is that batch (by ONNX shape
    inference) and its target shape, an initializer, starts with 1.

    Returns:
        How many Reshape targets were changed (-1 when the input's batch was not fixed at 1).
    """
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        return -1
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[0].HasField("dim_value") or dims[0].dim_value != 1:
        return -1
    dims[0].Clear()
    dims[0].dim_param = BATCH
    del model.graph.value_info[:]     # the exporter's shapes would pin the batch at 1 again
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # shape inference fails on some graphs; then no Reshape is touched
        return 0
    batched = {value.name for value in inferred.graph.value_info
               if value.type.tensor_type.shape.dim[:1]
               and value.type.tensor_type.shape.dim[0].dim_param == BATCH}
    batched.add(inputs[0].name)
    shapes = _initializers(model)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.domain or len(node.input) < 2 or node.input[0] not in batched \
                or node.input[1] not in shapes:
            continue
        target = numpy_helper.to_array(shapes[node.input[1]])
        if target.ndim != 1 or not len(target) or target[0] != 1:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue   # there a 0 would mean an empty dimension
        copied = target.copy()
        copied[0] = 0
        name = f"{node.input[1]}__batch"
        if name not in shapes:
            tensor = numpy_helper.from_array(copied, name)
            model.graph.initializer.append(tensor)
            shapes[name] = tensor
        node.input[1] = name
        changed += 1
    return changed


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph's real inputs: old exporters also list every initializer as an input."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {tensor.name: tensor for tensor in model.graph.initializer}


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    kept = [_copy(node) for node in nodes]   # copies: deleting from the repeated field invalidates them
    del graph.node[:]
    graph.node.extend(kept)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copied = onnx.NodeProto()
    copied.CopyFrom(node)
    return copied
