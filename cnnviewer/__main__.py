"""`python -m cnnviewer` is the `cnnviewer` command."""

import sys

from cnnviewer.cli import main

sys.exit(main())
