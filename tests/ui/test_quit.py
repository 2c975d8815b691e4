"""Quitting while indexing, synthesis and live video run: every thread stops, exit 0, stderr empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cnnviewer.engine.jobs import JobRunner

DRIVER = Path(__file__).with_name("quit_driver.py")
OFFSCREEN_NOISE = "This plugin does not support propagateSizeHints()"   # Qt's offscreen platform, per window


def test_quit_while_indexing_synthesis_and_video_run(tmp_path, astronaut_clip):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": str(Path(__file__).parents[2]),
           "QT_LOGGING_RULES": "qt.multimedia*=false"}   # the multimedia backend's library probing
    done = subprocess.run([sys.executable, str(DRIVER), str(folder), str(astronaut_clip.video),
                           str(tmp_path / "settings.ini")], env=env, capture_output=True, text=True, timeout=300)
    assert "running: indexing" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if line != OFFSCREEN_NOISE]
    assert errors == [], done.stderr


def test_job_runner_close_runs_the_last_work_on_its_thread_and_joins_abandoned_loads():
    import threading
    runner = JobRunner(torch_threads=None)
    release, seen = threading.Event(), {}
    runner.submit("model", lambda _c: release.wait(0.5), detach_on_cancel=True)
    runner.wait_idle(0.1)
    runner.cancel("model")                      # the load is abandoned; its thread still runs
    stopped = runner.close(last=lambda: seen.setdefault("thread", threading.current_thread().name))
    assert stopped and seen == {"thread": "cnnviewer-jobs"}
    assert not [t for t in threading.enumerate() if t.name.startswith("cnnviewer-model")]
