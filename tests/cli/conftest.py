"""What the in-process CLI tests share: one torch thread per module, and running `cli.main` expecting
success (its stdout) or a one-line refusal (exit 2, its line)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small inputs on a shared 2-core machine: one torch thread is faster than two; restored after the module.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """stdout of `cnnviewer ARGV`, which must succeed (stderr shown if not)."""
    from cnnviewer.cli import main

    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line on stderr of `cnnviewer ARGV`, which must exit 2 with no output and no traceback."""
    from cnnviewer.cli import main

    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out and "Traceback" not in captured.err
    return lines[0]
