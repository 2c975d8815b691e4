"""`cnnviewer neighbours FOLDER IMAGE` (see cli/dataset.py)."""

from cnnviewer.cli.dataset import neighbours_parser as parser  # noqa: F401
from cnnviewer.cli.dataset import run_neighbours as run  # noqa: F401
