"""Names the index and the app share, torch-free (the GUI thread imports them)."""

LOGITS = "logits"   # the model's output, indexed like a layer
THUMB_SIDE = 64     # the square thumbnail of what the model saw (its centre crop), kept for maps and grids
MANIFEST = "manifest.json"
