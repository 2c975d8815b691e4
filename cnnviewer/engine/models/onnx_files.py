"""Open an ONNX file as a PyTorch module (a torch.fx graph by onnx2torch), so every panel works on it.

The file is untrusted data, not code: it is read once into memory (never with
its external data followed blindly), its external tensors come only from plain
files in its own folder, what it may make us read or allocate is capped (the
tensors it declares here, those its shape inference says it computes in
onnx_limits), and ``onnx.checker`` vets it before conversion. The converted
module is put in eval mode before anything runs it. Every refusal is one line
(``WeightsError``), so the caller's current model stays.

The converted modules then take the exporting framework's layer names
(onnx_names) and its blocks run as modules (onnx_blocks), so the layer tree
reads, and records, like the PyTorch model's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto
from torch import fx, nn

from cnnviewer.engine.errors import WeightsError, describe, first_line
from cnnviewer.engine.models import onnx_blocks, onnx_limits, onnx_names, onnx_repairs
from cnnviewer.engine.types import ONNX_SUFFIX

MAX_FILE_BYTES = 2 * 1024 ** 3        # protobuf's own limit for one message
MAX_TENSOR_BYTES = 2 * 1024 ** 3      # all tensors together, inline or external: onnx.checker checks
#                                       the model in memory, where protobuf's 2 GiB limit holds too
_ITEM_BYTES = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
               TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
               TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
               TensorProto.BOOL: 1}
_SHAPING = frozenset({"Reshape", "Expand", "Tile", "ConstantOfShape", "Range", "Shape", "Split", "Slice"})


@dataclass(frozen=True)
class OnnxModel:
    """A converted ONNX graph and what the app needs to feed it."""

    module: fx.GraphModule
    input_size: int | None        # the input's fixed, square H (= W), else None
    num_outputs: int | None       # the output's fixed class dimension, else None
    opset: int
    shapes_in_graph: bool         # it computes or spells shapes (Reshape & co.), where a batch of 1 can hide


def is_onnx(spec: str | os.PathLike) -> bool:
    """Whether a model spec or path names an ONNX file (by its suffix)."""
    return str(spec).lower().endswith(ONNX_SUFFIX)


def load_onnx(path: str | Path) -> OnnxModel:
    """Read, vet, repair and convert an ONNX file.

    Raises:
        WeightsError: one line: unreadable, unsafe, invalid, or operators without a PyTorch conversion.
    """
    path = Path(path)
    model = read_onnx(path)
    inputs = onnx_repairs.graph_inputs(model)
    if not inputs:
        raise WeightsError(f"{path.name}: the graph has no input, so there is nothing to feed an image to")
    if len(inputs) > 1:
        raise WeightsError(f"{path.name}: the graph takes {len(inputs)} inputs "
                           f"({', '.join(v.name for v in inputs[:4])}); cnnviewer feeds it one image")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise WeightsError(f"{path.name}: the input has {len(dims)} dimensions; cnnviewer feeds images "
                           "as (batch, channels, height, width)")
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    size = fixed[2] if fixed[2] and fixed[2] == fixed[3] else None
    outputs = model.graph.output
    out_dims = outputs[0].type.tensor_type.shape.dim if outputs else []
    num_outputs = out_dims[1].dim_value if len(out_dims) >= 2 and out_dims[1].HasField("dim_value") else None
    onnx_limits.check_allocations(model, path.name, size)   # before anything runs the graph
    onnx_repairs.fold_constants(model)
    onnx_repairs.drop_identities(model)
    onnx_repairs.relax_allowzero(model)
    onnx_repairs.free_batch(model)
    model = _convertible_version(model, path.name)
    shaping = any(node.op_type in _SHAPING or node.op_type == "Flatten"
                  and any(a.name == "axis" and a.i != 1 for a in node.attribute) for node in model.graph.node)
    return OnnxModel(_named(model, path.name), size, num_outputs, _opset(model), shaping)


def _named(model: onnx.ModelProto, name: str) -> fx.GraphModule:
    """The converted module in eval mode, with the exporter's names and blocks; onnx2torch's own flat
    names when that fails (an odd or hostile file's names), since naming is a nicety, not a reason to refuse.

    eval() comes first: onnx2torch leaves the module in training mode, where a forward pass (the batch
    probe's) would overwrite BatchNorm's running statistics and Dropout would drop.
    """
    try:
        return onnx_blocks.nest_blocks(onnx_names.renamed(_convert(model, name).eval(), model)).eval()
    except WeightsError:
        raise
    except Exception:   # renaming or nesting mutates the graph in place: start again from a fresh conversion
        return _convert(model, name).eval()


def read_onnx(path: Path) -> onnx.ModelProto:
    """The file's graph with its external tensors read in, after every safety check.

    Raises:
        WeightsError: missing, too large, not ONNX, truncated, unsafe external data, or invalid.
    """
    if not path.is_file():
        raise WeightsError(f"{path.name}: no such file" if not path.exists() else f"{path.name} is not a file")
    try:
        before = path.stat()
        if before.st_size > MAX_FILE_BYTES:
            raise WeightsError(f"{path.name} is {before.st_size / 1024 ** 3:.1f} GiB; an ONNX file holds at "
                               "most 2 GiB (larger weights go in external data files)")
        data = path.read_bytes()
        after = path.stat()
    except OSError as exc:
        raise WeightsError(f"{path.name} cannot be read: {exc.strerror or exc}") from exc
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise WeightsError(f"{path.name} changed while it was being read; try again once it is written")
    if not data:
        raise WeightsError(f"{path.name} is empty (0 bytes)")
    try:
        model = onnx.load_model_from_string(data)   # never follows external data by itself
    except Exception as exc:   # protobuf's DecodeError and friends
        raise WeightsError(f"{path.name} is not an ONNX model, or is truncated ({first_line(exc)})") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise WeightsError(f"{path.name} is not an ONNX model, or is truncated (no graph in it)")
    _check_tensor_sizes(model, path.name)
    _read_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:   # ValidationError, and C++ errors on malformed fields
        raise WeightsError(f"{path.name} is not a valid ONNX model ({first_line(exc)})") from exc
    return model


def _tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Every tensor the graph holds: initializers and Constant nodes' values (main graph only)."""
    found = list(model.graph.initializer)
    for node in model.graph.node:
        found.extend(a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    return found


def _declared_bytes(tensor: TensorProto) -> int:
    return int(np.prod([max(d, 0) for d in tensor.dims], dtype=np.float64)) * _ITEM_BYTES.get(tensor.data_type, 8)


def _check_tensor_sizes(model: onnx.ModelProto, name: str) -> None:
    """Refuse a graph declaring more tensor data than MAX_TENSOR_BYTES, before anything is allocated."""
    total = 0
    for tensor in _tensors(model):
        if any(d < 0 for d in tensor.dims):
            raise WeightsError(f"{name}: tensor {tensor.name!r} has a negative dimension")
        total += _declared_bytes(tensor)
        if total > MAX_TENSOR_BYTES:
            raise WeightsError(f"{name} declares more than {MAX_TENSOR_BYTES // 1024 ** 3} GiB of tensors "
                               f"(at {tensor.name!r}, {list(tensor.dims)}); not read")


def _read_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read tensors stored beside the model, only from plain file names in its own folder."""
    folder = path.parent.resolve()
    for tensor in _tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        try:
            parts = Path(location).parts
            target = (folder / location).resolve()
        except (OSError, ValueError, RuntimeError):   # a NUL byte, a symlink loop: no plain file beside it
            target = None
        if not location or target is None or Path(location).is_absolute() or ".." in parts \
                or target.parent != folder:
            raise WeightsError(f"{path.name}: tensor {tensor.name!r} points outside the model's folder "
                               f"({location!r}); only files beside the model are read")
        if not target.is_file():
            raise WeightsError(f"{path.name}: external data file {location} is missing")
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            expected = _declared_bytes(tensor)
            size = int(length) if length is not None else expected
            if offset < 0 or size != expected or offset + size > target.stat().st_size:
                raise WeightsError(f"{path.name}: tensor {tensor.name!r} does not fit in {location} "
                                   f"({size} bytes at {offset}, {expected} declared)")
            with target.open("rb") as f:
                f.seek(offset)
                tensor.raw_data = f.read(size)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{path.name}: cannot read external data {location} ({describe(exc)})") from exc
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def unconvertible(model: onnx.ModelProto) -> list[str]:
    """'Op (opset N)' for every kind of node onnx2torch has no converter for, in graph order."""
    from onnx2torch.node_converters import get_converter

    opsets = {_domain(o.domain): o.version for o in model.opset_import}
    missing: dict[str, None] = {}
    for node in model.graph.node:
        domain = _domain(node.domain)
        version = opsets.get(domain, 0)
        try:
            get_converter(domain=domain, operation_type=node.op_type, version=version)
        except NotImplementedError:
            where = f"{domain} opset {version}" if domain else f"opset {version}"
            missing[f"{node.op_type} ({where})"] = None
    return list(missing)


def _domain(name: str) -> str:
    """'' for the standard operators, however the file spells their domain."""
    return "" if name in ("", "ai.onnx") else name


def _convertible_version(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The model itself when onnx2torch converts all its operators, else the newest older opset where it
    does (onnx's version converter), else a one-line refusal naming the operators."""
    missing = unconvertible(model)
    if not missing:
        return model
    for target in (18, 17, 16, 13):
        if target >= _opset(model):
            continue
        try:
            older = onnx.version_converter.convert_version(model, target)
        except Exception:   # no adapter for some operator at that step: try the next, then give up
            continue
        if not unconvertible(older):
            _keep_scopes(model, older)
            return older
    count = f"{len(missing)} operator{'s' * (len(missing) != 1)}"
    raise WeightsError(f"{name}: cannot convert {count} to PyTorch: {', '.join(missing)}")


def _keep_scopes(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """Give the converted nodes back the metadata the version converter drops (the dynamo exporter's
    scopes), where the node lists still line up one to one."""
    before, after = original.graph.node, converted.graph.node
    if len(before) != len(after) or any(a.op_type != b.op_type for a, b in zip(before, after)):
        return
    for old, new in zip(before, after):
        if not new.metadata_props:
            new.metadata_props.extend(old.metadata_props)


def _convert(model: onnx.ModelProto, name: str) -> fx.GraphModule:
    """onnx2torch's conversion; a converter that refuses a node's attributes is named in one line."""
    from onnx2torch import convert

    try:
        return convert(model)
    except Exception as exc:   # a converter's NotImplementedError / KeyError on what it does not support
        raise WeightsError(f"{name}: cannot convert to PyTorch ({_failing_node(model) or describe(exc)})") from exc


def _failing_node(model: onnx.ModelProto) -> str | None:
    """'Op node NAME: reason' for the first node whose converter raises, found by converting each alone."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    graph = OnnxGraph(model.graph)
    opsets = {_domain(o.domain): o.version for o in model.opset_import}
    for node in graph.nodes.values():
        version = opsets.get(_domain(node.domain), 0)
        try:
            get_converter(domain=node.domain, operation_type=node.operation_type, version=version)(node, graph)
        except Exception as exc:   # this converter is the one that fails
            return f"{node.operation_type} (opset {version}) node {node.name or node.unique_name!r}: " \
                   f"{first_line(exc)}"
    return None


def same_on_a_batch(module: nn.Module, channels: int, size: int) -> bool:
    """Whether the module gives each image of a batch of 2 what it gives it alone (a graph that
    spells its batch of 1 out somewhere would mix or refuse them)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, channels, size, size, generator=generator)
    try:
        with torch.inference_mode():
            together = module(images)
            alone = torch.cat([module(images[:1]), module(images[1:])])
    except Exception:   # a shape error: the graph runs one image at a time only
        return False
    return isinstance(together, torch.Tensor) and together.shape == alone.shape \
        and bool(torch.allclose(together, alone, rtol=1e-4, atol=1e-4))
