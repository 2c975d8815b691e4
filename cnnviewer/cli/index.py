"""`cnnviewer index FOLDER` (see cli/dataset.py)."""

from cnnviewer.cli.dataset import index_parser as parser  # noqa: F401
from cnnviewer.cli.dataset import run_index as run  # noqa: F401
