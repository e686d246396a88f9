#!/usr/bin/env python3
"""Run the detectors on the labelled public data of ../shared/data and print docs/evaluation.md's tables.

Example: .venv/bin/python scripts/eval_public.py ../shared/data > /tmp/evaluation-tables.md

Labels: a public capture is labelled by what its authors named it (``s7/snap7_s300_stop`` is a
CPU stop); ``ATTACKS`` lists the ones that show an operation an attacker uses, with the finding
category expected. ``BENIGN`` lists captures of ordinary operation (HMI reads, polling, clean
exchanges): every finding of medium severity or above there is a false alarm. Zeek's own logs
of the same traces are judged against the capture's findings. Every run is the generic one a
new user gets first: no profile, no baseline (nothing to tune on: the rules' thresholds are the
ones fixed from the lab, never set on these files). BATADAL is scored by
``cranewatch.process.batadal`` (thresholds from its training sets only).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from cranewatch.detect.engine import build_sink
from cranewatch.model import Finding, Severity
from cranewatch.pipeline import analyze

ICS = "pcaps/ICS-Security-Tools/pcaps/"
ZEEK_TRACES = "pcaps/zeek/testing/btest/Traces/"


@dataclass(frozen=True)
class Labelled:
    path: str  # under the data folder
    category: str  # the finding category expected
    what: str  # the labelled operation, from the file's name


ATTACKS = (
    Labelled(ICS + "s7/snap7_s300_stop.pcapng", "plc-control", "S7 CPU stop (snap7)"),
    Labelled(ICS + "s7/step7_s300_stop.pcapng", "plc-control", "S7 CPU stop (STEP 7)"),
    Labelled(ICS + "s7/step7_s300_download.pcapng", "plc-control", "S7 program download (STEP 7)"),
    Labelled(ICS + "s7/tia_s300_downloadOb1.pcapng", "plc-control", "S7 OB1 download (TIA)"),
    Labelled(ICS + "s7/tia_s300_downloadHwConfig.pcapng", "plc-control", "S7 hardware config download"),
    Labelled(ICS + "s7/s7comm_downloading_block_db1.pcap", "plc-control", "S7 DB1 download"),
    Labelled(ICS + "s7/step7_s300_copyRamToRom.pcapng", "plc-control", "S7 copy RAM to ROM"),
    Labelled(ICS + "s7/snap7_s300_everything.pcapng", "plc-control", "S7 stop, upload, start, compress"),
    Labelled(ICS + "s7/S7-1200-Uploading-OB1-TIAV12.pcap", "plc-control", "S7-1200 OB1 upload (S7comm-plus)"),
    Labelled(ICS + "s7/s7comm_reading_setting_plc_time.pcap", "plc-control", "S7 set the PLC clock"),
    Labelled(ICS + "EthernetIP/cip_stop_plc.pcap", "plc-control", "CIP stop"),
    Labelled(ICS + "EthernetIP/cip_start_plc.pcap", "plc-control", "CIP start"),
    Labelled(ICS + "EthernetIP/cip_unlock_cpu.pcap", "plc-control", "CIP unlock CPU"),
    Labelled(ICS + "openics/EIP-RebootorRestart.pcap", "plc-control", "CIP reboot/restart"),
    Labelled(ICS + "openics/EIP-SoftwareUpload.pcap", "plc-control", "CIP program upload"),
    Labelled(ICS + "openics/EIP-FirmwareChange.pcap", "plc-control", "CIP firmware change"),
    Labelled(ICS + "openics/EIP-LockPLCAttempt.pcap", "plc-control", "CIP lock PLC"),
    Labelled(ICS + "openics/EIP-RemoteModeChangeAttempt.pcap", "plc-control", "CIP remote mode change"),
    Labelled(ICS + "openics/EIP-ChangeTimeAttempt.pcap", "plc-control", "CIP set clock (time)"),
    Labelled(ICS + "openics/EIP-ChangeDateAttempt.pcap", "plc-control", "CIP set clock (date)"),
    Labelled(ICS + "openics/EIP-IPAddressChangeAttempt.pcap", "plc-control", "CIP IP address change"),
    Labelled(ICS + "openics/EIP-ChangePortConfigurationAttempt.pcap", "plc-control", "CIP port configuration"),
    Labelled(ICS + "openics/EIP-ControlProtocolChangeAttempt.pcap", "plc-control", "CIP control protocol change"),
    Labelled(ICS + "ModbusTCP/modbus_test_data_part1.pcap", "plc-control", "Modbus FC 8 restart / listen-only (Quickdraw tests)"),
    Labelled(ICS + "ModbusTCP/modbus_test_data_part2.pcap", "recon", "Modbus illegal/malformed requests (Quickdraw tests)"),
    Labelled(ZEEK_TRACES + "modbus/fuzz-72.pcap", "recon", "Modbus fuzzing"),
    Labelled(ZEEK_TRACES + "modbus/fuzz-1011.pcap", "recon", "Modbus fuzzing"),
    Labelled(ICS + "dnp3/cold_restart_and_response.pcap", "plc-control", "DNP3 cold restart"),
    Labelled(ICS + "dnp3/warm_restart_and_response.pcap", "plc-control", "DNP3 warm restart"),
    Labelled(ICS + "dnp3/file_delete.pcap", "plc-control", "DNP3 file delete"),
    Labelled(ICS + "dnp3/directoperate_and_response.pcap", "plc-control", "DNP3 direct operate"),
    Labelled(ICS + "IEC61850/MMS - Specific Commands/mms-stopRequest.pcap", "plc-control", "MMS stop"),
    Labelled(ICS + "IEC61850/MMS - Specific Commands/mms-initiateDownloadSequence.pcap", "plc-control", "MMS download"),
    Labelled(ICS + "IEC61850/MMS - Specific Commands/mms-deleteProgramInvocation.pcap", "plc-control", "MMS delete program"),
)

BENIGN = (
    ICS + "s7/S7Comm/s7comm_clean.pcap", ICS + "s7/s7-1200-hmi.pcap", ICS + "s7/S7-1511_db2_var1_HMI.pcap",
    ICS + "s7/wincc_s400_production.pcapng", ICS + "s7/wincc_s300_setup-alarm-read.pcapng",
    ICS + "s7/step7_s300_readVarTab.pcapng", ICS + "s7/step7_s300_readDiagData.pcapng",
    ICS + "s7/s7comm_varservice_libnodavedemo_bench.pcap", ICS + "s7/s7comm_reading_plc_status.pcap",
    ICS + "s7/tia_s300_goOnline.pcapng", ICS + "CIP/cip_only.pcap", ICS + "EthernetIP/EthernetIP-CIP.pcap",
    ICS + "openics/EIP-ViewDeviceStatus.pcap", ICS + "ModbusTCP/Modbus/modbus_test.pcap",
    ICS + "ModbusTCP/Modbus/modbus_test_2.pcap", ICS + "ModbusTCP/ModbusTCP.pcap", ICS + "modicon/modicon_test.pcap",
    ZEEK_TRACES + "modbus/modbusSmall.pcap", ZEEK_TRACES + "modbus/modbusBig.pcap",
    "pcaps/icsnpp-opcua-binary/pcaps/open62541_client-server_mainloop.pcap",
    "pcaps/icsnpp-opcua-binary/pcaps/open62541_read_service_test_data.pcap",
    "pcaps/icsnpp-opcua-binary/pcaps/python_opcua-client-server_minimal.pcap",
)

ZEEK_LABELS = {"ssh/": "remote-access", "modbus/fuzz": "recon"}


def findings_of(paths: list[Path]) -> list[Finding]:
    return list(analyze([str(p) for p in paths], sinks=[build_sink(None, None)]).findings)


def summary(findings: list[Finding]) -> str:
    seen: dict[tuple[str, str, str], int] = {}
    for f in findings:
        key = (f.category, str(f.severity), f.title.split(" by ")[0].split(" (")[0][:60])
        seen[key] = seen.get(key, 0) + 1
    return "; ".join(f"{c} {s}: {t}" + (f" ×{n}" if n > 1 else "") for (c, s, t), n in sorted(seen.items())) or "—"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def attacks_table(data: Path) -> tuple[list[str], int, int]:
    lines = ["| capture | labelled operation | expected | result | findings |", "|---|---|---|---|---|"]
    found = total = 0
    done: dict[str, str] = {}
    for item in ATTACKS:
        path = data / item.path
        if not path.exists():
            continue
        digest = sha(path)
        if digest in done:  # the same bytes under another name: counted once
            continue
        done[digest] = item.path
        hits = [f for f in findings_of([path]) if f.category == item.category]
        total += 1
        found += bool(hits)
        result = "**found**" if hits else "missed"
        shown = item.path.removeprefix(ICS).removeprefix("pcaps/")
        lines.append(f"| `{shown}` | {item.what} | {item.category} | {result} | {summary(findings_of([path]))} |")
    return lines, found, total


def benign_table(data: Path) -> tuple[list[str], int, int]:
    lines = ["| capture | findings ≥ medium (false alarms) | all findings |", "|---|---|---|"]
    alarms = files = 0
    for rel in BENIGN:
        path = data / rel
        if not path.exists():
            continue
        findings = findings_of([path])
        loud = [f for f in findings if f.severity >= Severity.MEDIUM]
        files += 1
        alarms += len(loud)
        shown = rel.removeprefix(ICS).removeprefix("pcaps/")
        lines.append(f"| `{shown}` | {len(loud)}: {summary(loud)} | {summary(findings)} |")
    return lines, alarms, files


def zeek_table(data: Path) -> list[str]:
    lines = ["| trace | Zeek logs | expected | from the capture | from Zeek's logs |", "|---|---|---|---|---|"]
    index = data / "zeek-logs" / "INDEX.tsv"
    with index.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        trace = row["trace_in_shared_pcaps"]
        label = next((c for key, c in ZEEK_LABELS.items() if key in trace), None)
        if label is None:
            continue
        pcap = data / "pcaps" / trace
        logs = data / "zeek-logs" / row["baseline"]
        from_pcap = [f for f in findings_of([pcap]) if f.category == label]
        from_logs = [f for f in findings_of([logs]) if f.category == label]
        lines.append(f"| `{trace.removeprefix('zeek/testing/btest/Traces/')}` | {row['logs']} | {label} | "
                     f"{'found' if from_pcap else 'missed'} ({summary(from_pcap)}) | "
                     f"{'found' if from_logs else 'missed'} ({summary(from_logs)}) |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?",
                        default=Path(__file__).resolve().parents[2] / "shared/data")
    args = parser.parse_args()
    if not (args.data / "pcaps" / "MANIFEST.tsv").exists():
        print(f"eval_public: no public data at {args.data}", file=sys.stderr)
        return 3
    attacks, found, total = attacks_table(args.data)
    benign, alarms, files = benign_table(args.data)
    print(f"## Labelled attack captures: {found}/{total} found\n")
    print("\n".join(attacks))
    print(f"\n## Benign captures: {alarms} false alarms (≥ medium) in {files} captures\n")
    print("\n".join(benign))
    print("\n## Zeek logs beside their captures\n")
    print("\n".join(zeek_table(args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
