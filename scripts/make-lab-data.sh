#!/bin/sh
# Regenerate the bundled lab captures under src/cranewatch/data/lab/<scenario>/ (needs root).
# Each scenario runs for SECONDS (default 30) with its own seed; the parts' logs are dropped.
#   sudo scripts/make-lab-data.sh            # every scenario
#   sudo scripts/make-lab-data.sh recon beacon
set -eu
cd "$(dirname "$0")/.."
CRANEWATCH="${CRANEWATCH:-.venv/bin/cranewatch}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-30}"
DATA="${LAB_DATA:-src/cranewatch/data/lab}"  # LAB_DATA=DIR writes elsewhere
if [ "$#" -eq 0 ]; then
    set -- $("$CRANEWATCH" lab list | cut -d' ' -f1)
fi
"$CRANEWATCH" lab clean >/dev/null
for scenario in "$@"; do
    rm -rf "$DATA/$scenario"
    "$CRANEWATCH" lab run "$scenario" --out "$DATA/$scenario" --seconds "$SECONDS_PER_RUN" --no-logs
done
# Check every capture against its labels with tshark before anyone commits it.
PYTHON="$(dirname "$CRANEWATCH")/python"
for scenario in "$@"; do set -- "$@" "$DATA/$scenario"; shift; done  # names -> directories
"$PYTHON" -m cranewatch.lab.verify "$@"
du -sh "$DATA"
