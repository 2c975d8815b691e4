"""Refuse an ONNX graph whose intermediate tensors would be huge, before anything runs it.

The load-time caps (file size, declared tensors) say nothing about what a graph
allocates when it runs: a 226-byte ``ConstantOfShape([1, 1, 1e5, 1e5])`` asks
for 40 GB. onnx's shape inference (with data propagation, so shapes computed
from constants are known) gives every intermediate tensor's shape at the input
size the app feeds, batch 1; a tensor over MAX_TENSOR_ELEMENTS, or all of them
together over MAX_TOTAL_BYTES, is refused in one line. Real CNNs stay far below
(measured at 224 px, batch 1: ResNet-152's largest tensor holds 0.80 M values and all
together take 0.21 GiB; EfficientNet-B0's, 1.2 M and 0.08 GiB). A
dimension inference cannot tell (symbolic, data-dependent) is not counted, so a
normal model is never refused for what is unknown; such a graph's allocations
stay unchecked here, as do the bodies of If/Loop subgraphs (main graph only).
The check costs ~8 ms of MobileNetV2's 0.3 s open, ~80 ms of ResNet-152's 7 s.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from cnnviewer.engine.errors import WeightsError, first_line

MAX_TENSOR_ELEMENTS = 2 ** 28          # 1 GiB of float32 in one tensor
MAX_TOTAL_BYTES = 8 * 1024 ** 3        # every inferred tensor together, at batch 1
DEFAULT_SIZE = 224                     # what the app feeds a graph whose input size is not fixed


def check_allocations(model: onnx.ModelProto, name: str, size: int | None) -> tuple[int, int]:
    """Refuse (WeightsError, one line) a graph whose inferred tensors exceed the caps at batch 1, `size` px.

    Returns:
        (the largest tensor's values, all tensors' bytes) as inferred: how far below the caps it is.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    _fix_input(probe, size or DEFAULT_SIZE)
    _weights_as_inputs(probe)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=True, data_prop=True)
    except Exception:   # an operator inference cannot handle strictly: what it can tell is still checked
        try:
            inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
        except Exception as exc:   # a malformed graph the checker let through
            raise WeightsError(f"{name}: its tensor shapes cannot be inferred ({first_line(exc)})") from exc
    total = largest = 0
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        elements = _elements(value)
        if elements is None:
            continue
        if elements > MAX_TENSOR_ELEMENTS:
            raise WeightsError(f"{name}: tensor {value.name!r} would hold {elements:.3g} values "
                               f"({_shape(value)} at batch 1); at most {MAX_TENSOR_ELEMENTS:.3g} are allowed")
        largest = max(largest, elements)
        total += elements * _item_bytes(value)
        if total > MAX_TOTAL_BYTES:
            raise WeightsError(f"{name}: its tensors would need more than {MAX_TOTAL_BYTES // 1024 ** 3} GiB "
                               f"for one image (at {value.name!r}, {_shape(value)})")
    return largest, total


def _fix_input(model: onnx.ModelProto, size: int) -> None:
    """Give the image input the shape the app feeds: batch 1, `size` x `size`; channels as declared, else 3."""
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            continue
        channels = dims[1].dim_value if dims[1].HasField("dim_value") and dims[1].dim_value > 0 else 3
        for dim, fixed in zip(dims, (1, channels, size, size)):
            dim.Clear()
            dim.dim_value = fixed


def _weights_as_inputs(model: onnx.ModelProto) -> None:
    """Declare large non-integer initializers as typed inputs: inference needs their shapes, not their
    values (integer and small ones, like Reshape targets, feed data propagation, so they stay), and a
    ResNet-152's 240 MB of weights would otherwise be serialized for it (3.4 s instead of 0.08 s here)."""
    kept = []
    for tensor in model.graph.initializer:
        if tensor.data_type in _INTEGERS or np.prod(tensor.dims, dtype=np.float64) <= _SMALL:
            kept.append(tensor)
            continue
        model.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


_SMALL = 4096   # values: an initializer this small may be a shape that data propagation reads
_INTEGERS = frozenset({TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8,
                       TensorProto.UINT64, TensorProto.UINT32, TensorProto.UINT16, TensorProto.UINT8})


def _elements(value: onnx.ValueInfoProto) -> int | None:
    """How many values a tensor holds, or None when a dimension is unknown (or it is no tensor)."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims = value.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
        return None
    return int(np.prod([d.dim_value for d in dims], dtype=np.float64))


def _shape(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


_ITEM_BYTES = {TensorProto.DOUBLE: 8, TensorProto.INT64: 8, TensorProto.UINT64: 8, TensorProto.COMPLEX64: 8,
               TensorProto.COMPLEX128: 16, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2, TensorProto.INT16: 2,
               TensorProto.UINT16: 2, TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.BOOL: 1}


def _item_bytes(value: onnx.ValueInfoProto) -> int:
    return _ITEM_BYTES.get(value.type.tensor_type.elem_type, 4)
