#!/usr/bin/env bash
# Install cranewatch into .venv and run the demo on the bundled STS-07 data (no root needed).
# Extra arguments go to `cranewatch demo` (e.g. --workspace DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Install once, and again only when pyproject.toml changed since the last install.
if [ ! -x .venv/bin/cranewatch ] || [ pyproject.toml -nt .venv/.cranewatch-installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
  touch .venv/.cranewatch-installed
fi
exec .venv/bin/cranewatch demo "$@"
