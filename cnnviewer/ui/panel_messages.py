"""View > Messages keeps what the panels say too, not only the status bar's messages.

Panels write their results into their own labels (indexing finished, synthesis saved, a capture's
folder, compare verdicts, "Loading … as B"); each of those was on screen for a moment and then
gone. One hook here, instead of an edit in every panel: the window wraps the `setText` of the
labels below (and Live detection's `note`), and every change except progress ticks goes to the log.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QLabel

# (panel attribute of the window, its label attribute, the name the log gives it)
WATCHED_LABELS = (("architecture", "status", "Architecture"), ("synthesis", "status", "Synthesis"),
                  ("compare", "names", "Compare"), ("compare", "verdict", "Compare"),
                  ("dataset", "folder_label", "Dataset"))
WATCHED_NOTES = (("live_detection", "note", "Live detection"),)
PROGRESS = re.compile(r"^Step \d+/\d+|: indexing for |^Starting ")   # ticks, not messages


def plain(text: str) -> str:
    """A label's rich text as one plain line."""
    text = re.sub(r"<br\s*/?>|</p>", " ", text.replace("&nbsp;", " "), flags=re.IGNORECASE)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


def log_panel_messages(name: str, panel: Any, log: Callable[[str], None]) -> None:
    """Send the watched labels' and notes' new texts of panel `name` (the window's attribute for
    it) to `log`, prefixed with the panel's title. Called as each panel is built."""
    for panel_name, attribute, title in WATCHED_LABELS:
        label = getattr(panel, attribute, None) if panel_name == name else None
        if isinstance(label, QLabel):
            label.setText = _forwarding(label.setText, title, log)
    for panel_name, attribute, title in WATCHED_NOTES:
        if panel_name == name and callable(getattr(panel, attribute, None)):
            setattr(panel, attribute, _forwarding(getattr(panel, attribute), title, log))


def _forwarding(original: Callable[[str], None], title: str, log: Callable[[str], None]) -> Callable[[str], None]:
    def set_text(text: str) -> None:
        original(text)
        line = plain(text)
        if line and not PROGRESS.search(line):
            log(f"{title}: {line}")
    return set_text
