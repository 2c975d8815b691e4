"""Run the real window offscreen, start indexing, synthesis and live video, then quit (File > Quit).

Run as a subprocess by test_quit.py: argv = image folder, video, settings file. Prints what ran.
"""

from __future__ import annotations

import argparse
import sys
import time

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from cnnviewer.ui.app import set_identity, start_window


def main() -> int:
    folder, video, settings_file = sys.argv[1:4]
    app = QApplication(sys.argv[:1])
    set_identity(app)
    args = argparse.Namespace(model="mobilenet_v2", weights=None, trust=False, labels=None, image=None,
                              device="cpu", precision="fp32")
    window = start_window(args, QSettings(settings_file, QSettings.Format.IniFormat), time.perf_counter())
    state = {"step": 0, "since": time.monotonic(), "frames": 0}
    window.live_detection.playback.loop.setChecked(True)   # the video keeps playing until quit

    def tick() -> None:
        panel, step = window.live_detection, state["step"]
        if step == 0 and window.predictions.predictions != ():
            window.open_folder(folder, index=True)
            window.session.select(layer="features.14", channel=3)
            window.synthesis.restart()
            panel.open_file(video)
            state["step"] = 1
        elif step == 1:
            build = getattr(window.dataset, "_build", None)
            indexing = build is not None and build.done > 0
            if indexing and window.synthesis.running and panel.frame is not None:
                print(f"running: indexing {build.done}/{build.total}, synthesis, video frame {panel.frame.name}",
                      flush=True)
                state["step"] = 2
                window.close()       # what File > Quit does
        if time.monotonic() - state["since"] > (float(sys.argv[4]) if len(sys.argv) > 4 else 240):
            build = getattr(window.dataset, "_build", None)
            print(f"timed out at step {step}: build {build and (build.done, build.total)}, synthesis "
                  f"{window.synthesis.running}, frame {panel.frame}, predictions {window.predictions.predictions}, "
                  f"{window.model_label.text()} {window.messages_text() if hasattr(window, 'messages_text') else list(window.messages.entries) if hasattr(window.messages, 'entries') else ''}",
                  flush=True)
            app.exit(3)

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(100)
    code = app.exec()
    import multiprocessing
    import threading

    def still_running() -> list[str]:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()
                 and t.name != "tqdm_monitor"]   # tqdm's own sleeping monitor (pure Python, torch hub downloads)
        return names + [f"process {p.pid}" for p in multiprocessing.active_children()]

    # A closed multiprocessing queue's feeder thread (the index workers' queues) ends on its own
    # shortly after close(): under load that took longer than this check once. Stopped means gone
    # within 5 s, not necessarily at this very instant.
    deadline = time.monotonic() + 5
    while still_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = still_running()
    if left:   # the app must stop these itself; the interpreter's exit must not find them running
        print(f"left running after the window closed: {left}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
