"""Docks whose panels are built when first shown, not before the window appears.

Building all eleven panels imported pyqtgraph and made some forty plot views before the window
could show (0.9 s of a 1.6 s launch), and most of them sit behind tabs a user may never open. A
dock starts with an empty placeholder; its panel is built the first time the dock is shown, or when
code asks for it. A panel built late catches up with the session: the slots it connected to the
session's state signals are called once with the current model, image, selection and forward pass,
as if the panel had been there when they changed, so no panel needs its own "late start" code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psygnal import SignalInstance
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QMainWindow, QWidget

# The session's state signals with the attribute each one announces, in the order a session fills them.
STATE_SIGNALS = (("model_changed", "model"), ("image_changed", "image"),
                 ("selection_changed", "selection"), ("forward_changed", "forward"))


class _RecordingSignal:
    """Stands in for one session signal while a panel is built: connects through, keeps the slot."""

    def __init__(self, signal: SignalInstance, slots: list[Callable[..., Any]]) -> None:
        self._signal, self._slots = signal, slots

    def connect(self, slot: Callable[..., Any] | None = None, **options: Any) -> Any:
        if slot is not None:
            self._slots.append(slot)
        return self._signal.connect(slot, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._signal, name)


@contextmanager
def recorded_slots(session: Any) -> Iterator[dict[str, list[Callable[..., Any]]]]:
    """The slots connected to the session's state signals inside the block, by signal name."""
    slots: dict[str, list[Callable[..., Any]]] = {name: [] for name, _ in STATE_SIGNALS}
    real = {name: getattr(session, name) for name in slots}
    for name, signal in real.items():
        setattr(session, name, _RecordingSignal(signal, slots[name]))
    try:
        yield slots
    finally:
        for name, signal in real.items():   # the same instances back: their connections stay
            setattr(session, name, signal)


def catch_up(session: Any, slots: dict[str, list[Callable[..., Any]]]) -> None:
    """Call the recorded slots with the session's current state (psygnal's own calling rules:
    a slot taking no argument is called without one)."""
    for name, attribute in STATE_SIGNALS:
        value = getattr(session, attribute)
        if value is None or not slots[name]:
            continue
        relay = SignalInstance(getattr(session, name).signature)
        for slot in slots[name]:
            relay.connect(slot)
        relay.emit(value)
        relay.disconnect()


class PanelDocks:
    """The window's docks and their panels, each panel built on first need."""

    def __init__(self, window: QMainWindow, session: Any, build: Callable[[str], QWidget],
                 on_built: Callable[[str, QWidget], None]) -> None:
        self._window, self._session, self._build, self._on_built = window, session, build, on_built
        self.docks: dict[str, QDockWidget] = {}
        self._panels: dict[str, QWidget] = {}
        # Each dock's latest visibilityChanged: a dock behind another tab still says isVisible().
        self._on_screen: dict[str, bool] = {}

    def add(self, key: str, title: str, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self._window)
        dock.setObjectName(f"dock_{key}")
        dock.setWidget(QWidget())          # until the panel is built
        dock.setAcceptDrops(True)
        dock.visibilityChanged.connect(lambda visible, key=key: self._on_visibility(key, visible))
        self._window.addDockWidget(area, dock)
        self.docks[key] = dock
        return dock

    def panel(self, key: str) -> QWidget:
        """The panel of dock `key`, built now if it was not yet."""
        panel = self._panels.get(key)
        if panel is None:
            with recorded_slots(self._session) as slots:
                panel = self._build(key)
            self._panels[key] = panel
            placeholder = self.docks[key].widget()
            self.docks[key].setWidget(panel)
            placeholder.deleteLater()
            self._on_built(key, panel)
            catch_up(self._session, slots)
        return panel

    def built(self, key: str) -> QWidget | None:
        """The panel of dock `key` if it exists (closing the window must not build one to stop it)."""
        return self._panels.get(key)

    def build_shown(self) -> None:
        """Build the panels of the docks on screen now (those in front of their tab groups)."""
        for key in self.docks:
            if self._on_screen.get(key):
                self.panel(key)

    def _on_visibility(self, key: str, visible: bool) -> None:
        self._on_screen[key] = visible
        if not visible:
            return
        panel = self._panels.get(key)
        if panel is None:   # after the event that showed the dock: a tab click is answered at once
            QTimer.singleShot(0, lambda: self._on_screen.get(key) and self._shown_first(key))
            return
        refresh = getattr(panel, "refresh", None)
        if refresh is not None:   # panels compute only while on screen; catch up when their tab is raised
            refresh()

    def _shown_first(self, key: str) -> None:
        if key in self._panels:
            return
        panel = self.panel(key)
        refresh = getattr(panel, "refresh", None)
        if refresh is not None:
            QTimer.singleShot(0, refresh)   # once the panel itself is on screen
