"""Numpy-only rendering (mosaics, colormaps, filter grids, heat maps, overlays): safe on the GUI thread."""
