"""Synthesis: images made by gradient ascent (pixel space with natural-image priors, Fourier space), DeepDream."""
