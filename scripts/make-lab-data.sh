#!/bin/sh
# Regenerate the bundled lab captures under src/cranewatch/data/lab/<scenario>/ (needs root).
# Each scenario runs for SECONDS_PER_RUN (default 30) with its own seed; the clean captures run
# longer so that a baseline learned from `normal` sees several moves with varied loads
# (NORMAL_SECONDS, default 180) and `normal-2` tests it on other moves (NORMAL_2_SECONDS, 120);
# wind-freeze runs WIND_FREEZE_SECONDS (40).
# The parts' logs are dropped.
#   sudo scripts/make-lab-data.sh            # every scenario
#   sudo scripts/make-lab-data.sh recon beacon
set -eu
cd "$(dirname "$0")/.."
CRANEWATCH="${CRANEWATCH:-.venv/bin/cranewatch}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-30}"
NORMAL_SECONDS="${NORMAL_SECONDS:-180}"
NORMAL_2_SECONDS="${NORMAL_2_SECONDS:-120}"
DATA="${LAB_DATA:-src/cranewatch/data/lab}"  # LAB_DATA=DIR writes elsewhere
if [ "$#" -eq 0 ]; then
    set -- $("$CRANEWATCH" lab list | cut -d' ' -f1)
fi
"$CRANEWATCH" lab clean >/dev/null
for scenario in "$@"; do
    rm -rf "$DATA/$scenario"
    case "$scenario" in
        normal) seconds="$NORMAL_SECONDS" ;;
        normal-2) seconds="$NORMAL_2_SECONDS" ;;
        # the frozen-anemometer check needs 10 s of a stuck sensor: 40 s puts its finding well
        # before the end of the capture, also for the monitor's checks every 10 s
        wind-freeze) seconds="${WIND_FREEZE_SECONDS:-40}" ;;
        *) seconds="$SECONDS_PER_RUN" ;;
    esac
    "$CRANEWATCH" lab run "$scenario" --out "$DATA/$scenario" --seconds "$seconds" --no-logs
done
# Check every capture against its labels with tshark before anyone commits it.
PYTHON="$(dirname "$CRANEWATCH")/python"
for scenario in "$@"; do set -- "$@" "$DATA/$scenario"; shift; done  # names -> directories
"$PYTHON" -m cranewatch.lab.verify "$@"
du -sh "$DATA"
