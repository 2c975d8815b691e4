"""Running models: device choice, memory, train/eval modes, hooks, the fx recorder, inference."""
