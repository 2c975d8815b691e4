"""The Synthesis panel (panel.SynthesisPanel): its per-method settings and style transfer's pictures."""
