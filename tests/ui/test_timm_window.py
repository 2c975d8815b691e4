"""A timm CNN in the real window: every panel renders it (EfficientNet-Lite0, real offline weights)."""

from __future__ import annotations


def test_every_panel_renders_efficientnet_lite0(window, qtbot):
    window.controller.load_model("timm:tf_efficientnet_lite0")
    qtbot.waitUntil(lambda: window.session.model.name == "timm:tf_efficientnet_lite0"
                    and bool(window.predictions.predictions), timeout=60000)
    assert window.predictions.predictions[0].label in ("tiger cat", "Egyptian cat")   # the sample cat
    assert "offline weights pack" in window.model_label.toolTip()
    qtbot.waitUntil(lambda: window.feature_maps.view is not None
                    and window.feature_maps.view.layer.startswith("blocks"), timeout=30000)
    assert window.filters.view is not None and window.filters.view.layer == "conv_stem"   # a Conv2dSame
    for key, ready in (("model_summary", lambda: window.model_summary.summary is not None
                        and window.model_summary.summary.model.startswith("timm:")),
                       ("architecture", lambda: window.architecture.graph is not None
                        and window.architecture.graph.method == "torch.fx"),
                       ("receptive_field", lambda: window.receptive_field.result is not None),
                       ("gradients", lambda: bool(window.gradients.results))):
        window.docks[key].raise_()
        qtbot.waitUntil(ready, timeout=60000)
    summary = window.model_summary.summary
    total = sum(row.params + row.bias_params for row in summary.rows)
    assert total == sum(p.numel() for p in window.session.model.module.parameters())
    field = window.receptive_field.result
    top, left, bottom, right = field.box
    assert field.effective_extent == (max(top, 0), max(left, 0), bottom, right)        # TF 'same' padding
