"""Inputs: image files, sample photos, and frame sources (video files, folders)."""
