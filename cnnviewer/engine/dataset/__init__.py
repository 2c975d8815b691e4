"""The dataset explorer engine: a folder of images indexed per unit, and its queries."""
