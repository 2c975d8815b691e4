"""The one observable state every panel shares: model, image and selection.

Qt-free (psygnal signals), so the engine and its tests need no event loop.
Panels subscribe and keep no copies; they change it only through its methods,
which emit only on a real change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from cnnviewer.engine.types import LayerId

if TYPE_CHECKING:  # keeps this module torch-free for the UI thread
    from cnnviewer.engine.experiments.ablate_spec import InterventionEffect
    from cnnviewer.engine.media.images import InputImage
    from cnnviewer.engine.models.handle import LoadedModel
    from cnnviewer.engine.workbench import ForwardSummary


@dataclass(frozen=True)
class Selection:
    """What the user is looking at, the same in every panel."""

    layer: LayerId | None = None          # e.g. 'features.3.conv.1'
    channel: int | None = None
    neuron: tuple[int, int] | None = None  # (y, x) in that layer's output
    class_index: int | None = None         # an output chosen as the target (None: the top-1)
    # For a model whose output is a class map: the part of it explained, as fractions (y0, x0, y1, x1)
    # of the model's input crop (the picture every panel shows); None = the whole map.
    region: tuple[float, float, float, float] | None = None


class Session:
    """Shared state: the current model, input image and selection."""

    model_changed = Signal(object)        # LoadedModel
    image_changed = Signal(object)        # InputImage
    selection_changed = Signal(Selection)
    forward_changed = Signal(object)      # ForwardSummary: the model ran on the image
    forward_failed = Signal(str)          # the model could not run on the image; why

    def __init__(self) -> None:
        self.model: LoadedModel | None = None
        self.image: InputImage | None = None
        self.selection = Selection()
        # The recorded pass of the current model on the current image; None until it ran.
        self.forward: ForwardSummary | None = None
        # For a model with knock-outs: the intact model's probabilities beside `forward`'s top-5.
        self.effect: InterventionEffect | None = None

    def set_forward(self, summary: ForwardSummary, effect: InterventionEffect | None = None) -> None:
        """The current model ran on the current image: every panel may draw from it."""
        self.forward, self.effect = summary, effect
        self.forward_changed.emit(summary)

    def fail_forward(self, message: str) -> None:
        """The current model cannot run on the current image: panels show nothing stale."""
        self.forward, self.effect = None, None
        self.forward_failed.emit(message)

    def set_model(self, model: LoadedModel, keep_selection: bool = False) -> None:
        """Switch every panel to `model`; keep the layer when the new model has it.

        `keep_selection`: the same network with other knock-outs (experiments.knockout): the layer,
        channel, neuron and chosen class all stay, so every panel recomputes what it showed.
        """
        self.model, self.forward, self.effect = model, None, None
        layers = set(model.layer_names)
        keep = self.selection.layer if self.selection.layer in layers else None
        self.model_changed.emit(model)
        if keep_selection:
            return
        self.select(layer=keep, channel=None if keep is None else self.selection.channel,
                    neuron=None, class_index=None, region=None)

    @property
    def interventions(self) -> tuple:
        """The current model's knock-outs (experiments.ablate_spec.Knockout), in order; () when intact."""
        return tuple(self.model.interventions) if self.model is not None else ()

    def set_image(self, image: InputImage) -> None:
        """Switch every panel to `image`."""
        if image is not self.image:
            self.image, self.forward, self.effect = image, None, None
            self.image_changed.emit(image)
            if self.selection.region is not None:   # a part of the old picture means nothing on the new one
                self.select(region=None)

    def select(self, **changes: Any) -> None:
        """Change layer/channel/neuron; a new layer resets channel and neuron unless given."""
        if "layer" in changes and changes["layer"] != self.selection.layer:
            changes.setdefault("channel", None)
            changes.setdefault("neuron", None)
        new = replace(self.selection, **changes)
        if new != self.selection:
            self.selection = new
            self.selection_changed.emit(new)
