"""How the model chooser names and describes torchvision's segmentation networks; no torch, so the
GUI thread's dialog can read it."""

from __future__ import annotations

FAMILY = "Segmentation (torchvision)"

FAMILY_NOTE = "21 Pascal VOC classes; the output is a class map at the input's size"

# Per catalogue family, one line the model chooser shows beside it.
FAMILY_NOTES = {FAMILY: FAMILY_NOTE}
