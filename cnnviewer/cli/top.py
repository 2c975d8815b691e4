"""`cnnviewer top FOLDER --layer NAME --channel C` (see cli/dataset.py)."""

from cnnviewer.cli.dataset import run_top as run  # noqa: F401
from cnnviewer.cli.dataset import top_parser as parser  # noqa: F401
