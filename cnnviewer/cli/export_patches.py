"""`cnnviewer export top-patches FOLDER --layer L --channel C -o OUT.png` (see cli/dataset_export.py)."""

from cnnviewer.cli.dataset_export import patches_parser as parser  # noqa: F401
from cnnviewer.cli.dataset_export import run_patches as run  # noqa: F401
