"""`cnnviewer export dataset-map FOLDER -o OUT.png` (see cli/dataset_export.py)."""

from cnnviewer.cli.dataset_export import map_parser as parser  # noqa: F401
from cnnviewer.cli.dataset_export import run_map as run  # noqa: F401
