"""ONNX files as models: MobileNetV2 exported by torch.onnx (legacy and dynamo) against the torch model it
came from, the layer names given back, the graph repairs against onnx's reference evaluator, and hostile
files refused in one line."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from cnnviewer.engine.attribution import gradients
from cnnviewer.engine.attribution.target import Target
from cnnviewer.engine.errors import WeightsError
from cnnviewer.engine.experiments.blocks import residual_blocks
from cnnviewer.engine.media.images import sample_image
from cnnviewer.engine.models.loading import load_model, load_weights
from cnnviewer.engine.models.onnx_files import same_on_a_batch
from cnnviewer.engine.models.onnx_names import layer_names
from cnnviewer.engine.runtime.hooks import has_hooks
from cnnviewer.engine.runtime.inference import prepare_input, run_forward

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def torch_model():
    return load_model("mobilenet_v2")


@pytest.fixture(scope="module")
def exported(torch_model, tmp_path_factory):
    """MobileNetV2 with its real weights, exported both ways torch 2.14 offers."""
    folder = tmp_path_factory.mktemp("onnx")
    example = (torch.zeros(1, 3, 224, 224),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch_model.module, example, str(folder / "legacy.onnx"), dynamo=False)
        torch.onnx.export(torch_model.module, example, str(folder / "dynamo.onnx"), dynamo=True, verbose=False)
    return folder


@pytest.fixture(scope="module")
def cat():
    return sample_image("chelsea")


def leaves(model) -> list[str]:
    return [name for name, module in model.module.named_modules() if name and next(module.children(), None) is None]


def test_legacy_export_gives_the_same_top5_feature_maps_and_layer_names(torch_model, exported, cat):
    model = load_model(str(exported / "legacy.onnx"))
    assert (model.name, model.weights_label, model.trained) == ("legacy.onnx", "ONNX: legacy.onnx", True)
    assert model.preprocess == torch_model.preprocess and model.categories == torch_model.categories
    ours, theirs = run_forward(model, cat), run_forward(torch_model, cat)
    assert list(np.argsort(-ours.probabilities)[:5]) == list(np.argsort(-theirs.probabilities)[:5])
    assert np.argmax(ours.probabilities) in (281, 282, 285)     # a cat
    torch_types = dict(zip(torch_model.layer_names, torch_model.layer_types))
    onnx_leaves = leaves(model)
    # Every converted layer sits at the torch model's name, but for the graph's own glue: the residual
    # sums (beside their block's layers) and the pooling/flatten the torch forward() does itself.
    unnamed = [name for name in onnx_leaves if name not in torch_types]
    assert all(name.endswith(".Add") for name in unnamed if "." in name), unnamed
    assert [name for name in unnamed if "." not in name] == ["GlobalAveragePool", "Flatten"]
    # The exporter folds each BatchNorm into the Conv before it: compare every other layer by name, and
    # every block (they run as modules of their own, so their outputs are recorded as the torch model's).
    compared = [name for name in onnx_leaves if torch_types.get(name) in ("ReLU6", "Linear")]
    blocks = [name for name in model.layer_names if name not in onnx_leaves and name in torch_types]
    assert len(compared) == 36 and len(blocks) == 72 and "features.3" in blocks
    assert dict(zip(model.layer_names, model.layer_types))["features"] == "Sequential"
    for name in compared + blocks:
        torch.testing.assert_close(ours.activations[name], theirs.activations[name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.activations["features.0.0"], theirs.activations["features.0.1"],
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.activations["features.3.Add"], theirs.activations["features.3"],
                               rtol=1e-4, atol=1e-4)


def test_dynamo_export_names_folded_convs_after_their_batchnorm_and_runs_batches(torch_model, exported, cat):
    model = load_model(str(exported / "dynamo.onnx"))
    ours, theirs = run_forward(model, cat), run_forward(torch_model, cat)
    assert list(np.argsort(-ours.probabilities)[:5]) == list(np.argsort(-theirs.probabilities)[:5])
    compared = [name for name in model.layer_names if name in theirs.activations]
    assert len(compared) == 160 and "features.0.1" in compared     # Convs, ReLU6s, the Linear, every block
    for name in compared:
        torch.testing.assert_close(ours.activations[name], theirs.activations[name], rtol=1e-4, atol=1e-4)
    # The exporter spelled the batch of 1 out in a Reshape; the repair lets several images through.
    batch = torch.rand(3, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(model.module(batch), torch_model.module(batch), rtol=1e-4, atol=1e-4)
    assert "one image at a time" not in model.weights_label


def test_gradients_agree_and_the_model_is_left_as_found(torch_model, exported, cat):
    model = load_weights(exported / "legacy.onnx", torch_model)     # File > Load weights / a drop
    assert model.name == "legacy.onnx"
    x = prepare_input(cat, model.preprocess, model.device).tensor
    target = Target(class_index=285)
    for method in (gradients.saliency, gradients.guided_backprop):
        torch.testing.assert_close(method(model.module, x, target), method(torch_model.module, x, target),
                                   rtol=1e-4, atol=1e-4)
    cam = gradients.grad_cam(model.module, x, target, "features.18.2")
    torch.testing.assert_close(cam, gradients.grad_cam(torch_model.module, x, target, "features.18.2"),
                               rtol=1e-4, atol=1e-4)
    assert cam.abs().sum() > 0
    assert not has_hooks(model.module) and not model.module.training
    assert not any(p.requires_grad for p in model.module.parameters())


def test_blocks_run_as_modules_so_the_lesion_study_finds_the_residual_ones(torch_model, exported):
    model = load_model(str(exported / "legacy.onnx"))
    ours = {block.name: block.skip for block in residual_blocks(model.module) if block.deletable}
    theirs = {block.name: block.skip for block in residual_blocks(torch_model.module) if block.deletable}
    assert ours == theirs and len(ours) == 10
    assert isinstance(model.module.features, torch.nn.Sequential)


# ------------------------------------------------------------------ tiny graphs built with onnx.helper
def save(folder, name: str, nodes, initializers=(), inputs=None, outputs=None, opset: int = 18,
         out_shape=(1, 4, 6, 6)) -> str:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])] if inputs is None else inputs
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = os.path.join(folder, name)
    onnx.save(model, path)
    return path


def conv_weight(name: str = "w", channels: int = 4) -> TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal((channels, 3, 3, 3)).astype(np.float32),
                                   name)


def classifier(folder, name: str, classes: int, size: int = 8, spelled_batch: bool = False) -> str:
    """Conv -> ReLU -> global pool -> Flatten -> Gemm: a classifier of `classes` outputs. With `spelled_batch`
    a Reshape to a shape computed in the graph ([1, -1], a Concat) stands for the Flatten: one image only."""
    rng = np.random.default_rng(1)
    flatten = [helper.make_node("Flatten", ["p"], ["f"])]
    initializers = []
    if spelled_batch:
        flatten = [helper.make_node("Concat", ["one", "rest"], ["shape"], axis=0),
                   helper.make_node("Reshape", ["p", "shape"], ["f"])]
        initializers = [numpy_helper.from_array(np.array([1], np.int64), "one"),
                        numpy_helper.from_array(np.array([-1], np.int64), "rest")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), *flatten,
             helper.make_node("Gemm", ["f", "g", "b"], ["y"], transB=1)]
    weights = [conv_weight(), numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "g"),
               numpy_helper.from_array(np.zeros(classes, np.float32), "b"), *initializers]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])]
    return save(folder, name, nodes, weights, inputs, outputs)


def test_preprocess_from_the_input_size_and_class_names_beside_or_numbered(tmp_path):
    model = load_model(classifier(tmp_path, "small.onnx", classes=5, size=64))
    assert (model.preprocess.crop_size, model.preprocess.resize_size) == (64, 73)
    assert model.categories == tuple(f"class {i}" for i in range(5))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    assert load_model(str(tmp_path / "small.onnx")).categories == ("a", "b", "c", "d", "e")
    imagenet = load_model(classifier(tmp_path / "..", "wide.onnx", classes=1000))
    assert imagenet.categories[285] == "Egyptian cat"


def test_a_graph_that_spells_its_batch_out_is_labelled_one_image_at_a_time(tmp_path):
    spelled = load_model(classifier(tmp_path, "spelled.onnx", classes=3, spelled_batch=True))
    with torch.inference_mode():
        assert spelled.module(torch.rand(1, 3, 8, 8)).shape == (1, 3)        # one image runs
    assert "one image at a time" in spelled.weights_label
    assert not same_on_a_batch(spelled.module, 3, 8)
    plain = load_model(classifier(tmp_path, "plain.onnx", classes=3))
    assert same_on_a_batch(plain.module, 3, 8) and "one image" not in plain.weights_label


def test_batchnorm_and_dropout_are_loaded_in_eval_mode_so_the_batch_probe_changes_nothing(tmp_path):
    """onnx2torch leaves the module in training mode: the probe's random batch would overwrite BatchNorm's
    running statistics, and Dropout would make it report 'one image at a time'."""
    stats = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("s", [1.5, 1, 1, 2]), ("o", [0, 1, 0, -1]), ("m", [0.5] * 4), ("v", [2.0] * 4))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"]),
             helper.make_node("Dropout", ["n", "ratio"], ["d"]), helper.make_node("Reshape", ["d", "shape"], ["y"])]
    extra = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
             numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    path = save(tmp_path, "bn.onnx", nodes, [conv_weight(), *stats, *extra], out_shape=(1, 144), opset=15)
    model = load_model(path)
    norm = next(m for m in model.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert norm.running_mean.tolist() == [0.5] * 4 and norm.running_var.tolist() == [2.0] * 4
    assert not model.module.training and "one image at a time" not in model.weights_label
    images = np.random.default_rng(2).random((2, 3, 8, 8), dtype=np.float32)
    reference = ReferenceEvaluator(onnx.load(path))
    expected = np.concatenate([reference.run(None, {"x": images[i:i + 1]})[0] for i in range(2)])
    with torch.no_grad():
        np.testing.assert_allclose(model.module(torch.from_numpy(images)).numpy(), expected, atol=1e-5)


def test_repairs_for_torch_exporters_match_onnx_reference_evaluator(tmp_path):
    """Constant nodes, an Identity of an initializer (opset 20: no converter), Reshape(allowzero=1)."""
    nodes = [helper.make_node("Identity", ["w"], ["w2"]),
             helper.make_node("Constant", [], ["bias"], value=numpy_helper.from_array(np.arange(4, dtype=np.float32))),
             helper.make_node("Conv", ["x", "w2", "bias"], ["c"]),
             helper.make_node("Constant", [], ["low"], value_float=0.0),
             helper.make_node("Constant", [], ["high"], value_float=6.0),
             helper.make_node("Clip", ["c", "low", "high"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"], allowzero=1)]
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    path = save(tmp_path, "repairs.onnx", nodes, [conv_weight(), shape], opset=20, out_shape=(1, 144))
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ReferenceEvaluator(onnx.load(path)).run(None, {"x": x})[0]
    model = load_model(path)
    with torch.inference_mode():
        np.testing.assert_allclose(model.module(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_an_opset_newer_than_the_converters_is_converted_down(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Identity", ["c"], ["y"])]
    path = save(tmp_path, "new.onnx", nodes, [conv_weight()], opset=21)   # Identity 21: no converter
    x = np.ones((1, 3, 8, 8), np.float32)
    expected = ReferenceEvaluator(onnx.load(path)).run(None, {"x": x})[0]
    with torch.inference_mode():
        np.testing.assert_allclose(load_model(path).module(torch.from_numpy(x)).numpy(), expected, rtol=1e-5,
                                   atol=1e-5)


def test_a_container_whose_layers_interleave_with_anothers_stays_a_container(tmp_path):
    """'a' and 'b' alternate in the graph, so neither can run as one module; 'c' can."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["a0"], name="/a/a.0/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x"], ["b0"], name="/b/b.0/Relu"),
             helper.make_node("Relu", ["a0"], ["a1"], name="/a/a.1/Relu"),
             helper.make_node("Conv", ["b0", "w"], ["b1"], name="/b/b.1/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a1", "b1"], ["s"], name="/Add"),
             helper.make_node("Relu", ["s"], ["c0"], name="/c/c.0/Relu"),
             helper.make_node("Neg", ["c0"], ["y"], name="/c/c.1/Neg")]
    path = save(tmp_path, "mixed.onnx", nodes, [conv_weight()], out_shape=(1, 4, 8, 8))
    model = load_model(path)
    types = dict(zip(model.layer_names, model.layer_types))
    assert (types["a"], types["b"], types["c"]) == ("Module", "Module", "Sequential")
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(model.module(torch.from_numpy(x)).numpy(),
                                   ReferenceEvaluator(onnx.load(path)).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def node(name: str, op: str = "Conv", scopes: list[str] | None = None) -> onnx.NodeProto:
    made = helper.make_node(op, [], [], name=name)
    if scopes is not None:
        made.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
    return made


def test_layer_names_follow_the_exporters_scopes_and_fall_back_where_they_would_clash():
    graph = helper.make_graph([
        node("/features/features.3/conv/conv.0/conv.0.0/Conv"),           # legacy: relative scopes
        node("/features/features.3/conv/conv.0/conv.0.2/Clip", "Clip"),
        node("/features/features.3/Add", "Add"),                           # its scope is also a parent
        node("/head/Mul", "Mul"), node("/head/Mul_1", "Mul"),              # two nodes in one scope
        node("/GlobalAveragePool", "GlobalAveragePool"),                   # the root's own op
        node("node_Conv_7", scopes=["", "layer1", "layer1.0", "layer1.0.bn1", "batch_norm"]),   # dynamo
        node("weird name", "Relu"),                                        # no scope at all
        node("/block/train/Relu", "Relu"),                                 # would shadow Module.train
        node("features", "Relu"),                                          # onnx2torch's name, a container here
    ], "g", [], [])
    model = helper.make_model(graph)
    assert list(layer_names(model).values()) == [
        "features.3.conv.0.0", "features.3.conv.0.2", "features.3.Add", "head.Mul", "head.Mul_1",
        "GlobalAveragePool", "layer1.0.bn1", "weird name", "block/train/Relu", "features_"]


# ------------------------------------------------------------------ hostile files
def one_line_refusal(path, current=None) -> str:
    with pytest.raises(WeightsError) as caught:
        load_weights(path, current) if current is not None else load_model(str(path))
    message = str(caught.value)
    assert "\n" not in message and os.path.basename(str(path)) in message
    return message


def external(location: str) -> TensorProto:
    tensor = conv_weight()
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def test_truncated_random_and_empty_files_are_refused_in_one_line(torch_model, exported, tmp_path):
    data = (exported / "legacy.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert "truncated" in one_line_refusal(tmp_path / "cut.onnx", torch_model)
    assert "not an ONNX model" in one_line_refusal(tmp_path / "noise.onnx")
    assert "empty" in one_line_refusal(tmp_path / "empty.onnx")
    assert "no such file" in one_line_refusal(tmp_path / "gone.onnx")


def test_external_data_is_read_only_from_files_beside_the_model(tmp_path):
    weights = conv_weight()
    (tmp_path / "w.bin").write_bytes(numpy_helper.to_array(weights).tobytes())
    conv = [helper.make_node("Conv", ["x", "w"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])]
    beside = load_model(save(tmp_path, "beside.onnx", conv, [external("w.bin")], outputs=outputs))
    torch.testing.assert_close(next(beside.module.parameters()), torch.tensor(numpy_helper.to_array(weights)))
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "w.bin").write_bytes(b"\0" * 432)
    os.symlink(secret / "w.bin", tmp_path / "link.bin")
    for location in ("secret/w.bin", "../w.bin", str(secret / "w.bin"), "link.bin", "w\0.bin"):
        path = save(tmp_path, "out.onnx", conv, [external(location)], outputs=outputs)
        assert "outside the model's folder" in one_line_refusal(path)


def test_bad_graphs_are_refused_in_one_line(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mish", ["c"], ["m"]),
             helper.make_node("Hardmax", ["m"], ["y"])]
    message = one_line_refusal(save(tmp_path, "ops.onnx", nodes, [conv_weight()]))
    assert message == "ops.onnx: cannot convert 2 operators to PyTorch: Mish (opset 18), Hardmax (opset 18)"
    constant = [helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(np.ones(3, np.float32)))]
    assert "no input" in one_line_refusal(save(tmp_path, "noinput.onnx", constant, inputs=[], out_shape=(3,)))
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[100_000, 100_000, 3, 3])
    assert "GiB" in one_line_refusal(save(tmp_path, "huge.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
                                          [huge]))
    assert "not a valid ONNX model" in one_line_refusal(
        save(tmp_path, "dangling.onnx", [helper.make_node("Relu", ["nowhere"], ["y"])]))


def test_node_names_like_the_constants_buffers_and_failed_naming_keep_onnx2torchs_names(tmp_path, monkeypatch):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Reshape", ["c", "shape"], ["r"], name="onnx_initializer_0"),
             helper.make_node("Relu", ["r"], ["y"], name="onnx_initializer_1")]
    path = save(tmp_path, "odd.onnx", nodes, [conv_weight(), numpy_helper.from_array(np.array([1, -1], np.int64),
                                                                                      "shape")], out_shape=(1, 144))
    image = np.random.default_rng(3).random((1, 3, 8, 8), dtype=np.float32)
    expected = ReferenceEvaluator(onnx.load(path)).run(None, {"x": image})[0]
    named = load_model(path)
    assert "onnx_initializer_0" in dict(named.module.named_buffers())
    from cnnviewer.engine.models import onnx_names

    def broken(module, model):
        raise KeyError("attribute 'x' already exists")
    monkeypatch.setattr(onnx_names, "renamed", broken)
    flat = load_model(path)
    assert {"conv", "onnx_initializer_0"} <= {name for name, _ in flat.module.named_modules()}
    for model in (named, flat):
        with torch.no_grad():
            np.testing.assert_allclose(model.module(torch.from_numpy(image)).numpy(), expected, atol=1e-5)


def bomb(folder, name: str, shape: list[int], adds: int = 1) -> str:
    """A few hundred bytes asking for a tensor of `shape` (ConstantOfShape), added to a one-channel image's
    mean `adds` times (each sum a tensor of that size)."""
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["big0"]),
             helper.make_node("ConstantOfShape", ["shape"], ["big"], value=fill)]
    nodes += [helper.make_node("Add", [f"big{i}", "big"], [f"big{i + 1}" if i + 1 < adds else "y"])
              for i in range(adds)]
    return save(folder, name, nodes, [numpy_helper.from_array(np.array(shape, np.int64), "shape")], opset=17,
                inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d"])])


def test_a_graph_that_would_allocate_too_much_is_refused_before_it_runs(tmp_path):
    assert "would hold 1e+10 values" in one_line_refusal(bomb(tmp_path, "bomb.onnx", [1, 1, 100_000, 100_000]))
    assert "more than 8 GiB" in one_line_refusal(bomb(tmp_path, "many.onnx", [1, 1, 2 ** 14, 2 ** 14], adds=9))
    computed = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Concat", ["s", "k"], ["shape"], axis=0),
                helper.make_node("ConstantOfShape", ["shape"], ["y"])]
    path = save(tmp_path, "computed.onnx", computed, [numpy_helper.from_array(np.array([10 ** 6], np.int64), "k")],
                outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c", "d", "e"])],
                inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])])
    assert "would hold" in one_line_refusal(path)   # the shape comes from the input: 1 x 3 x 224 x 224 x 1e6


def test_real_cnns_stay_far_below_the_allocation_caps_and_free_sizes_are_not_refused(tmp_path):
    import torchvision

    from cnnviewer.engine.models.onnx_limits import MAX_TENSOR_ELEMENTS, MAX_TOTAL_BYTES, check_allocations
    for net in (torchvision.models.resnet152(), torchvision.models.efficientnet_b0()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), (torch.zeros(1, 3, 224, 224),), str(tmp_path / "net.onnx"), dynamo=False)
        largest, total = check_allocations(onnx.load(str(tmp_path / "net.onnx")), "net.onnx", 224)
        assert largest < MAX_TENSOR_ELEMENTS / 100 and total < MAX_TOTAL_BYTES / 20
    path = classifier(tmp_path, "free.onnx", 5)
    model = onnx.load(path)
    for dim, label in zip(model.graph.input[0].type.tensor_type.shape.dim, ("n", None, "h", "w")):
        if label:
            dim.dim_param = label
    onnx.save(model, path)
    assert load_model(path).preprocess.crop_size == 224
