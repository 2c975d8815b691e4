"""`cnnviewer.show()` in a real Jupyter kernel (ipykernel, driven by jupyter_client as a notebook is).

The call must come back (its execute reply arrives) while the window lives, and the window must
keep working between cells, when only the kernel's own Qt event loop runs.
"""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

import jupyter_client   # test-only dependency (pyproject's test extra), as ipykernel
import pytest

ROOT = Path(__file__).resolve().parents[1]
WAKE_S = 20.0   # see Kernel.run
SETUP = """
import torch, torchvision, cnnviewer
torch.set_num_threads(1)
from cnnviewer.engine.models.loading import load_model
net = torchvision.models.mobilenet_v2()
net.load_state_dict(load_model("mobilenet_v2").module.state_dict())
net.train()
"""


class Kernel:
    """One ipykernel with the test's environment; `run(code)` returns (reply status, stdout, stderr)."""

    def __init__(self, tmp_path: Path) -> None:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CNNVIEWER_OFFLINE="1", XDG_CONFIG_HOME=str(tmp_path),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.manager = jupyter_client.KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(tmp_path))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.nudges: list[str] = []

    def run(self, code: str, timeout: float = 120) -> tuple[str, str, str]:
        """Execute a cell as a notebook does; (reply status, stdout, stderr incl. any traceback).

        ipykernel's Qt loop can miss the wake-up of a request that lands while the GUI thread is
        busy (its zmq FD is edge-triggered; seen here 2 times in ~14 kernels, the main thread
        idle in `loop_qt`, the job thread waiting for work: no deadlock). After WAKE_S without an
        answer, one kernel_info request is sent as a frontend's next message would; a kernel that
        is really stuck still fails the cell's timeout.
        """
        streams = {"stdout": "", "stderr": ""}
        msg_id = self.client.execute(code)
        deadline, nudged = time.monotonic() + timeout, False
        while True:
            try:
                message = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                message = None
            if message is not None and message["parent_header"].get("msg_id") == msg_id:
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    streams[content["name"]] += content["text"]
                elif kind == "error":
                    streams["stderr"] += "\n".join(content["traceback"])
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"no answer to {code!r} within {timeout} s")
            if not nudged and now > deadline - timeout + WAKE_S:
                nudged = True
                self.nudges.append(code)
                self.client.kernel_info()
        while True:
            reply = self.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]["status"], streams["stdout"], streams["stderr"]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture
def kernel(tmp_path):
    kernel = Kernel(tmp_path)
    yield kernel
    kernel.close()


def check_window_lives_between_cells(kernel: Kernel) -> None:
    status, out, err = kernel.run("print(v.window.isVisible(), v.window.windowTitle())")
    assert (status, out.strip()) == ("ok", "True cnnviewer — MobileNetV2 (from Python)"), err
    # Between cells only the kernel's Qt loop runs: a timer set now fires before the next cell.
    assert kernel.run("from PySide6.QtCore import QTimer\nfired = []\nQTimer.singleShot(0, lambda: fired.append(1))")[0] == "ok"
    time.sleep(0.5)
    status, out, err = kernel.run("print(fired)")
    assert out.strip() == "[1]", err
    status, out, err = kernel.run("v.wait_until_ready(120)\nprint(v.predictions[0][0])\n"
                                  "print(net.training, all(p.requires_grad for p in net.parameters()))")
    assert status == "ok" and out.split("\n")[:2] == ["Egyptian cat", "True True"], err
    assert kernel.run("v.select(layer='features.4')\nprint(v.window.session.selection.layer)")[1].strip() == "features.4"
    # The wake-up for ipykernel's edge-triggered Qt loop (python_api/kernel_wake.py) runs while the window lives.
    assert kernel.run("print(get_ipython().kernel._cnnviewer_wake.isActive())")[1].strip() == "True"


def test_show_returns_at_once_with_gui_qt_and_the_window_lives(kernel):
    assert kernel.run("%gui qt")[0] == "ok"
    assert kernel.run(SETUP)[0] == "ok"
    started = time.monotonic()
    status, out, err = kernel.run("v = cnnviewer.show(net)\nprint('returned')", timeout=120)
    assert (status, out.strip()) == ("ok", "returned"), err   # the reply came back: the call returned
    assert time.monotonic() - started < 60
    assert "enabled IPython's Qt event loop" not in err
    check_window_lives_between_cells(kernel)


def test_without_gui_qt_show_enables_it_and_says_so_once(kernel):
    assert kernel.run(SETUP)[0] == "ok"
    status, out, err = kernel.run("v = cnnviewer.show(net)\nprint('returned')", timeout=120)
    assert (status, out.strip()) == ("ok", "returned"), err
    assert err.count("enabled IPython's Qt event loop (%gui qt)") == 1
    check_window_lives_between_cells(kernel)
    status, _, err = kernel.run("v2 = cnnviewer.show(net, title='again')\nv2.close()")
    assert status == "ok" and "enabled" not in err
