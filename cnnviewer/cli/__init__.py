"""Command line: open the window, or predict / export / summarise / detect / list models without one
(and add the window to the desktop's application menu).

One module per subcommand, imported only when that subcommand runs, so
`cnnviewer --help` and argument errors answer at once and a subcommand loads
only what it uses (torch and Qt load inside the commands that need them).
"""

from __future__ import annotations

import difflib
import importlib
import os
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
    (("evaluate",), "evaluate"),
    (("lesion",), "lesion"),
    (("probe",), "probe"),
    (("ablate-rank",), "ablate_rank"),
    (("segment",), "segment"),
    (("synthesize",), "synthesize"),
    (("install-desktop",), "install_desktop"),
)


def check_command_word(argv: Sequence[str]) -> None:
    """A first word that is no subcommand and no file is a mistyped command, not an image to open:
    `cnnviewer evalute` used to start the window."""
    from cnnviewer.cli.common import UsageError

    word = argv[0] if argv else ""
    if not word or word.startswith("-") or os.path.exists(word) or any(c in word for c in "./\\"):
        return   # an option, a file, or a path (a missing image is reported as a missing file)
    names = sorted({prefix[0] for prefix, _ in SUBCOMMANDS})
    nearest = difflib.get_close_matches(word, names, n=1, cutoff=0.5)
    hint = f"did you mean '{nearest[0]}'?" if nearest else f"commands: {', '.join(names)}"
    raise UsageError(f"unknown command '{word}'; {hint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnnviewer` command."""
    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    from cnnviewer.cli.common import UsageError, one_line_warnings, pending_warnings, stderr_progress
    from cnnviewer.engine.errors import CnnViewerError

    one_line_warnings()
    pending_warnings.clear()
    try:
        for prefix, name in SUBCOMMANDS:
            if tuple(argv[:len(prefix)]) == prefix:
                command = importlib.import_module(f"cnnviewer.cli.{name}")
                status = command.run(command.parser().parse_args(argv[len(prefix):]))
                for line in pending_warnings:       # about outputs made: a failed command says one line only
                    print(line, file=sys.stderr)
                return status
        check_command_word(argv)
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
