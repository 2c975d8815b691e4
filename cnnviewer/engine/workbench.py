"""Everything the panels ask of the engine, as plain calls for the job thread.

The UI submits these through JobRunner and receives only numpy arrays and
frozen dataclasses. The workbench keeps the activation cache, so changing the
layer, channel or display options never runs the model again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from cnnviewer.engine.attribution.target import CAM_METHODS, IG_BASELINES, SLOW_METHODS, GradientResult, Target
from cnnviewer.engine.errors import ViewError
from cnnviewer.engine.media.images import InputImage
from cnnviewer.engine.models.handle import LoadedModel
from cnnviewer.engine.runtime.inference import ActivationCache, top_k
from cnnviewer.engine.structure.architecture import ArchitectureGraph
from cnnviewer.engine.structure.layers import conv_weights, first_conv, layer_conv
from cnnviewer.engine.structure.receptive_field import GradientProbe, NeuronField
from cnnviewer.engine.structure.summary import Summary
from cnnviewer.engine.structure.summary_graph import summarize
from cnnviewer.engine.types import LayerId, LayerInfo, Prediction
from cnnviewer.engine.views.colormaps import colormap_table
from cnnviewer.engine.views.features import (
    FeatureMapOptions,
    FeatureMapView,
    as_channels,
    feature_map_view,
    normalise,
)
from cnnviewer.engine.views.filters import FilterView, filter_view, first_layer_view


@dataclass(frozen=True, eq=False)
class ForwardSummary:
    """What a forward pass tells every panel: predictions, layers, timing."""

    model_token: int
    image: InputImage
    display: np.ndarray                  # (S, S, 3) uint8: the crop the model saw
    predictions: tuple[Prediction, ...]  # top-5, best first
    layers: tuple[LayerInfo, ...]
    forward_ms: float


class Workbench:
    """Engine calls for the job thread; owns the activation cache."""

    def __init__(self) -> None:
        self.cache = ActivationCache()
        self.probe = GradientProbe()
        self._summaries: dict[int, Summary] = {}   # by model token; the last few models
        self._graphs: dict[int, ArchitectureGraph] = {}
        self._class_map = None  # (model token, image id) and the last ClassMapView: the panels share it
        self._scorer = None     # the faithfulness Scorer of the model scored last (holds copies of it)

    def architecture(self, model: LoadedModel) -> ArchitectureGraph:
        """The model's graph annotated from its summary (built once per model)."""
        found = self._graphs.get(model.token)     # a knocked model's own graph: it shows the knock-out
        if found is None:
            from cnnviewer.engine.structure.architecture_graph import build_graph
            found = build_graph(model.module, self.summary(model))
            self._graphs = {model.token: found}
        return found

    def scorer(self, model: LoadedModel, trace: bool = False):
        """The faithfulness scores' prepared copies of `model` (attribution.scorer.Scorer), kept while
        the same model is scored: one at a time, the previous model's dropped.

        `trace`: also allow the traced copy (~1.5x faster scoring). Off unless asked for, by the CLI:
        preparing it holds the GIL in torch's C++ passes for ~0.1-0.7 s, a stall of the window's
        thread (bench_stalls measured 105 ms); once asked for, it stays allowed for this model.
        """
        from cnnviewer.engine.attribution.scorer import Scorer

        if self._scorer is None or not self._scorer.matches(model.module, model.token):
            self._scorer = None     # free the old copies before making new ones
            self._scorer = Scorer(model.module, token=model.token, trace=trace)
        elif trace:
            self._scorer.allow_trace()
        return self._scorer

    def summary(self, model: LoadedModel) -> Summary:
        """The per-layer table of `model` at its input size (computed once per model)."""
        model = _structural(model)
        found = self._summaries.get(model.token)
        if found is None:
            size = model.preprocess.crop_size
            found = summarize(model.module, (size, size), name=model.name, channels=model.input_channels)
            self._summaries = {token: s for token, s in list(self._summaries.items())[-3:]}
            self._summaries[model.token] = found
        return found

    def forward(self, model: LoadedModel, image: InputImage) -> ForwardSummary:
        """Run (or reuse) the recorded forward pass and summarise it."""
        recorded = self.cache.get(model, image)
        return ForwardSummary(model.token, image, recorded.display,
                              tuple(top_k(model, recorded.probabilities, 5)),
                              recorded.layers, recorded.forward_ms)

    def feature_maps(self, model: LoadedModel, image: InputImage, layer: LayerId,
                     options: FeatureMapOptions = FeatureMapOptions()) -> FeatureMapView:
        """The mosaic of one layer's channels for this model and image."""
        recorded = self.cache.get(model, image)
        activation = recorded.activations.get(layer)
        if activation is None:
            raise ViewError(f"layer {layer!r} produced no tensor output")
        return feature_map_view(layer, activation.numpy(), normalisation=options.normalisation,
                                colormap=options.colormap, sort=options.sort, aspect=options.aspect)

    def display(self, model: LoadedModel, image: InputImage) -> np.ndarray:
        """The preprocessed crop the activations are aligned with."""
        return self.cache.get(model, image).display

    def filters(self, model: LoadedModel, layer: LayerId | None, output_channel: int | None,
                aspects: tuple[float, float] = (1.0, 1.0)) -> tuple[FilterView | None, FilterView | None]:
        """(first-layer filters, kernels of the conv behind `layer`) — either None when absent.

        The first layer's filters are always shown, as colour images when it
        reads RGB; the selected layer's conv, when it is a different one, shows
        the chosen output channel's kernel for each of its input channels.
        """
        first = first_conv(model.module)
        if first is None:
            return None, None
        first_view = first_layer_view(first[0], conv_weights(first[1]), aspects[0])
        selected = layer_conv(model.module, layer, self._channels(model, layer)) if layer else None
        if selected is None or selected[0] == first[0]:
            return first_view, None
        name, conv = selected
        matches = conv.out_channels == self._channels(model, layer)
        view = filter_view(name, conv_weights(conv), output_channel if matches else 0, aspects[1])
        return first_view, dataclasses.replace(view, matches_layer=matches)

    def _channels(self, model: LoadedModel, layer: LayerId | None) -> int | None:
        """The layer's channel count from the latest recorded pass of this model, if any."""
        shape = self.cache.shape_of(model, layer) if layer else None
        return shape[0] if shape else None

    def neuron_field(self, model: LoadedModel, image: InputImage, layer: LayerId,
                     neuron: tuple[int, int] | None, channel: int | None) -> tuple[NeuronField, np.ndarray]:
        """The receptive field of one neuron (default: the layer's centre) and the layer's map.

        Returns:
            (the NeuronField, an (h, w, 3) uint8 picture of the layer to click neurons on:
            the chosen channel, or the mean over channels).
        """
        fields = self.summary(model).fields
        if layer not in fields:
            raise ViewError(f"{layer}: no receptive field (not part of the traced graph)")
        activation = self.cache.get(model, image).activations[layer]
        if activation.dim() == 2:
            raise ViewError(f"{layer} is a transformer layer ({activation.shape[0]} tokens × {activation.shape[1]}): "
                            "self-attention lets every token see the whole image, so it has no receptive-field "
                            "box; choose a convolutional layer (e.g. the patch embedding)")
        values = as_channels(activation.numpy())
        if values.shape[1:] == (1, 1):
            raise ViewError(f"{layer} has no spatial map; choose a convolutional layer")
        if neuron is None:
            neuron = (values.shape[1] // 2, values.shape[2] // 2)
        picked = values[channel] if channel is not None and channel < values.shape[0] else values.mean(axis=0)
        picture = colormap_table("viridis")[normalise(picked[None], "channel")[0]]
        result = self.probe.field(model, image, layer, neuron,
                                  channel if channel is not None and channel < values.shape[0] else None,
                                  fields[layer])
        return result, np.ascontiguousarray(picture)

    def output_pixel_field(self, model: LoadedModel, image: InputImage,
                           region: tuple[float, float, float, float]) -> tuple[NeuronField, np.ndarray]:
        """The clicked class-map pixel's theoretical field and its effective field, drawn as a neuron's.

        `region`: Selection.region (fractions of the crop) covering one position of the model's
        (K, h, w) output. Returns (a NeuronField whose layer is '' (the output), neuron the map
        position, channel the class that wins there, effective |∂ that class's score there / ∂x|,
        box the field in crop pixels (segmentation.pixel_field: through the upsampling, inside the
        crop), field.size the box's size and jump / start the map's grid on the crop, for clicks;
        the class map's labels in palette colours, (h, w, 3) uint8).
        """
        from cnnviewer.engine.attribution.gradients import input_gradient
        from cnnviewer.engine.attribution.target import box_positions
        from cnnviewer.engine.runtime.inference import prepare_input
        from cnnviewer.engine.segmentation.pixel_field import output_pixel_field
        from cnnviewer.engine.structure.summary import Field

        recorded = self.cache.get(model, image)
        output = recorded.activations.get("")
        if output is None or output.dim() != 3:
            raise ViewError(f"{model.name}'s output is not a class map: a pixel of it has no field of its own")
        classes, height, width = output.shape
        y0, x0, y1, x1 = box_positions(region, height, width)
        if (y1 - y0, x1 - x0) != (1, 1):
            raise ViewError("the region covers several output pixels: click one pixel to see its field")
        start = time.perf_counter()
        side = recorded.display.shape[:2]
        try:
            found = output_pixel_field(model.module, self.summary(model), (y0, x0), (height, width), side)
        except ValueError as error:
            raise ViewError(str(error)) from None
        labels = output.float().argmax(dim=0).numpy()
        winner = int(labels[y0, x0])
        prepared = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
        gradient = input_gradient(model.module, prepared.tensor, Target(class_index=winner, region=(y0, x0, y1, x1)))
        effective = gradient[0].abs().amax(dim=0).float().cpu().numpy()
        if effective.max() > 0:
            effective = effective / effective.max()
        top, left, bottom, right = found.box
        jump = (side[0] / height, side[1] / width)
        field = Field(size=(float(bottom - top), float(right - left)), jump=jump,
                      start=(jump[0] / 2, jump[1] / 2), whole=False, context=found.context)
        result = NeuronField("", (y0, x0), winner, recorded.display, np.ascontiguousarray(effective, np.float32),
                             (float(top), float(left), float(bottom), float(right)), field,
                             (classes, height, width), (time.perf_counter() - start) * 1000.0)
        # the Input panel's colours (by area rank), so one class has one colour in every panel
        return result, np.ascontiguousarray(self.class_map(model, image).colours[labels])

    def gradient(self, model: LoadedModel, image: InputImage, method: str, target: Target,
                 context=None, **options) -> GradientResult:
        """One gradient view of the current input as a (C, H, W) float32 attribution."""
        from cnnviewer.engine.attribution import methods

        prepared, options, shown = self.attribution_options(model, image, method, target, context, **options)
        start = time.perf_counter()
        attribution = methods.attribute(method, model.module, prepared.tensor, target, **options)
        values = attribution.detach()[0].float().cpu().numpy()
        return GradientResult(method, target, np.ascontiguousarray(values), prepared.display, shown,
                              (time.perf_counter() - start) * 1000.0)

    def attribution_options(self, model: LoadedModel, image: InputImage, method: str, target: Target,
                            context=None, **options):
        """(the prepared input, every option `methods.attribute` needs, the options worth showing).

        One place resolves the automatic choices (Grad-CAM's layer, occlusion's patch, the IG
        baseline as a tensor, Cancel and progress), so a view, a faithfulness score and a sanity
        check of the same method compute the same map.
        """
        from cnnviewer.engine.attribution import gradients
        from cnnviewer.engine.runtime.inference import prepare_input

        prepared = prepare_input(image, model.preprocess, model.device, model.dtype, model.input_channels)
        summary = self.summary(model)
        if method in CAM_METHODS:
            options.setdefault("layer", gradients.gradcam_layer(summary, target.layer))
            options.setdefault("channels_last", options["layer"] in summary.channels_last)
        if method == "occlusion":
            size = prepared.display.shape[0]
            field = summary.fields.get(target.layer) if target.layer and target.neuron else None
            patch = int(min(field.size[0], size // 2)) if field is not None and not field.whole else max(8, size // 7)
            options.setdefault("patch", patch)
            options.setdefault("stride", max(1, options["patch"] // 2))
            options.setdefault("mean", model.preprocess.mean)
            options.setdefault("std", model.preprocess.std)
        baseline_name = options.get("baseline", "mean colour")
        if method == "integrated-gradients" or (method == "smoothgrad" and options.get("base") ==
                                                 "integrated-gradients"):
            options["baseline"] = _baseline(options.pop("baseline", "mean colour"), prepared.tensor, model)
        if method in SLOW_METHODS and context is not None:
            options.setdefault("cancel", context.cancel)
            options.setdefault("progress", lambda f: context.progress(f, f"{method}: {f:.0%}"))
        shown = {k: v for k, v in options.items()
                 if k in ("layer", "patch", "stride", "fill", "steps", "base", "noise", "samples")}
        if "baseline" in options:
            shown["baseline"] = baseline_name
        return prepared, options, shown

    def class_map(self, model: LoadedModel, image: InputImage):
        """The class map of a model whose output is one (segmentation, fully convolutional), read from
        the recorded pass's output (no second forward): a segmentation.class_map_view.ClassMapView.

        Raises:
            ViewError: the model's output is not a class map.
        """
        from cnnviewer.engine.segmentation.class_map_build import class_map_view
        key = (model.token, id(image))
        if self._class_map is None or self._class_map[0] != key or self._class_map[1].image is not image:
            self._class_map = (key, class_map_view(model, self.cache.get(model, image)))
        return self._class_map[1]


def _structural(model: LoadedModel) -> LoadedModel:
    """The model whose structure `model` has: a knocked-out model has its intact model's layers,
    shapes and fields, so both share one summary. Tracing it again took
    ~0.2 s of Python per knock-out on the job thread, enough to make the window late by ~60 ms."""
    return model.intact if getattr(model, "intact", None) is not None else model


def _baseline(name: str, inputs, model: LoadedModel):
    """Integrated gradients' starting image: the dataset's mean colour (zeros after normalising),
    black pixels, or the input blurred (keeps colours, removes edges; Sturmfels et al. 2020)."""
    import torch

    if name == "mean colour":
        return torch.zeros_like(inputs)
    if name == "black":
        mean = torch.tensor(model.preprocess.mean, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)
        std = torch.tensor(model.preprocess.std, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)
        return ((0 - mean) / std).expand_as(inputs).clone() if mean.shape[1] == inputs.shape[1] \
            else torch.zeros_like(inputs)
    if name == "blurred":
        from torchvision.transforms.functional import gaussian_blur
        side = inputs.shape[-1]
        kernel = max(3, (side // 7) | 1)
        return gaussian_blur(inputs, [kernel, kernel], [kernel / 3.0, kernel / 3.0])
    raise ValueError(f"unknown baseline {name!r}; choose {', '.join(IG_BASELINES)}")
