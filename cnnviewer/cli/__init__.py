"""Command line: open the window, or predict / export / summarise / detect / list models without one
(and add the window to the desktop's application menu).

One module per subcommand, imported only when that subcommand runs, so
`cnnviewer --help` and argument errors answer at once and a subcommand loads
only what it uses (torch and Qt load inside the commands that need them).
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence

# argv prefix -> module under cnnviewer.cli; longest prefix first.
SUBCOMMANDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("export", "gradients"), "gradients"),
    (("export", "dataset-map"), "export_map"),
    (("export", "top-patches"), "export_patches"),
    (("export",), "export"),
    (("predict",), "predict"),
    (("summary",), "summary"),
    (("detect",), "detect"),
    (("models",), "models"),
    (("compare",), "compare"),
    (("index",), "index"),
    (("top",), "top"),
    (("neighbours",), "neighbours"),
    (("synthesize",), "synthesize"),
    (("install-desktop",), "install_desktop"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnnviewer` command."""
    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    from cnnviewer.cli.common import UsageError, one_line_warnings, stderr_progress
    from cnnviewer.engine.errors import CnnViewerError

    one_line_warnings()
    try:
        for prefix, name in SUBCOMMANDS:
            if tuple(argv[:len(prefix)]) == prefix:
                command = importlib.import_module(f"cnnviewer.cli.{name}")
                return command.run(command.parser().parse_args(argv[len(prefix):]))
        from cnnviewer.cli import gui
        args = gui.parser().parse_args(argv)
        gui.check(args)
    except (UsageError, CnnViewerError) as error:
        stderr_progress.done()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl+C: outputs are written atomically, so nothing half-written is left
        stderr_progress.done()
        print("cnnviewer: interrupted", file=sys.stderr)
        return 130
    return gui.run(args, started)


if __name__ == "__main__":
    sys.exit(main())
