#!/usr/bin/env bash
# Rebuild the bundled example crane image (a tiny CMS-PC root tree with planted artefacts).
# Reproducible: the same code gives the same bytes. Usage: scripts/make-demo-image.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m cranewatch.forensics.demo_image "${1:-src/cranewatch/data/images/sts07-cms.tar.gz}"
