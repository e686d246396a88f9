#!/usr/bin/env bash
# Install cranewatch into .venv and run the demo on the bundled STS-07 data (no root needed).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/cranewatch demo "$@"
