#!/usr/bin/env bash
# Load graft's LeRobotDataset v3 exports with the REAL LeRobot loader (PyPI `lerobot-dataset`,
# module `ledataset`) and compare what it reads with what graft wrote.
#
#   bench/lerobot_compat.sh FOLDER [FOLDER ...]
#
# lerobot-dataset 0.4.4 pins datasets<4.2 and huggingface-hub<0.36, so it cannot share graft's venv:
# it gets its own (GRAFT_LEROBOT_VENV, default /tmp/graft-lerobot-venv), built on first use and
# reused after. It imports torch and torchvision without declaring them, so both are installed too
# (a matching pair: the CPU torch wheel in /opt/wheels has no CPU torchvision beside it, and a CUDA
# torchvision on a CPU torch fails at import with "operator torchvision::nms does not exist"). Each FOLDER may hold graft_expected.npz and
# graft_expected.json (written by the test) with the frames graft exported; the check compares them.
# Loading is fully offline (HF_HUB_OFFLINE=1).
#
# Exit status: 0 every folder loads and matches; 1 a mismatch or a loader error; 75 the venv could
# not be built because the package index is unreachable (nothing was checked).
set -euo pipefail

VENV="${GRAFT_LEROBOT_VENV:-/tmp/graft-lerobot-venv}"
BASE_PYTHON="${GRAFT_LEROBOT_PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ "$#" -ge 1 ] || { echo "usage: $0 FOLDER [FOLDER ...]" >&2; exit 2; }

index_reachable() {  # the index pip asks for lerobot-dataset (PIP_INDEX_URL, pip's config, else PyPI) answers
  local index="${PIP_INDEX_URL:-$("$BASE_PYTHON" -m pip config get global.index-url 2>/dev/null || true)}"
  INDEX="${index:-https://pypi.org/simple}" "$BASE_PYTHON" - <<'PY'
import os, sys, urllib.request
url = os.environ["INDEX"].rstrip("/") + "/lerobot-dataset/"
try:
    urllib.request.urlopen(url, timeout=15)
except Exception as exc:  # DNS failure, refused, timeout, proxy error
    print(f"package index unreachable ({url}): {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

if ! "$VENV/bin/python" -c "import ledataset.datasets.lerobot_dataset" >/dev/null 2>&1; then
  echo "building $VENV (lerobot-dataset==0.4.4 + torch + torchvision; pip log: $VENV.pip.log) ..." >&2
  started=$(date +%s)
  rm -rf "$VENV"
  "$BASE_PYTHON" -m venv "$VENV"
  log="$VENV.pip.log"
  if ! "$VENV/bin/pip" install --disable-pip-version-check "lerobot-dataset==0.4.4" torch torchvision >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -rf "$VENV"
    if ! index_reachable; then exit 75; fi
    echo "pip could not install lerobot-dataset==0.4.4 although the index answers" >&2
    exit 1
  fi
  echo "venv built in $(( $(date +%s) - started )) s" >&2
fi

HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$VENV/bin/python" "$HERE/lerobot_compat_check.py" "$@"
