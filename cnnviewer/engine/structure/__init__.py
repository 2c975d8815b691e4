"""What a model is made of: per-layer summary, data-flow graph, architecture layout, receptive fields."""
