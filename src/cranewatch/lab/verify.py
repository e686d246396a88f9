"""Check a lab capture against its labels with tshark, an independent dissector.

Used by the tests (bundled data and live runs) and usable by hand. Each check returns a list
of problems (empty when the capture is what the labels say): the expected hosts talk, the
masters poll at the documented rates with plausible values, the OCR events carry valid
container numbers, every attack's evidence lies inside its labelled window and nowhere
else, and tshark finds no malformed packet.
"""

from __future__ import annotations

import itertools
import json
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cranewatch.errors import EnvironmentProblem
from cranewatch.lab import iso6346
from cranewatch.lab.physics import ProcessImage

CMS, OCR, PLC, ROGUE = "10.20.7.30", "10.20.7.20", "10.20.7.10", "10.20.7.66"

__all__ = [
    "EVIDENCE",
    "Capture",
    "check_all",
    "check_attacks",
    "check_capture",
    "check_hosts",
    "check_mqtt",
    "check_polling",
    "check_values",
    "load",
]

FIELDS = (
    "frame.number", "frame.time_epoch", "_ws.col.Protocol", "_ws.col.Info", "_ws.malformed",
    "_ws.expert.severity", "eth.src", "eth.dst", "ip.src", "ip.dst", "tcp.dstport",
    "tcp.flags.syn", "tcp.flags.ack", "modbus.func_code", "modbus.word_cnt", "modbus.bit_cnt",
    "modbus.exception_code", "modbus.regval_uint16", "mqtt.msgtype", "mqtt.topic", "mqtt.msg",
    "dns.qry.name", "http.request.method", "tls.handshake.extensions_server_name",
)
Row = dict[str, str]


def _has(row: Row, field: str, value: str) -> bool:
    return value in row[field].split(",")


# What each network attack leaves on the crane LAN, as predicates over tshark's dissection.
# Process attacks (false readings) are checked on the register values instead.
EVIDENCE: dict[str, Callable[[Row], bool]] = {
    "ssh-via-modem": lambda r: r["ip.src"] == "203.0.113.10" and r["tcp.dstport"] == "22"
    and r["tcp.flags.syn"] == "1",
    "hidden-modem": lambda r: r["eth.dst"] == "02:5c:11:0a:77:c3" and r["ip.dst"] == "203.0.113.10",
    "inbound-vnc": lambda r: r["_ws.col.Protocol"] == "VNC" and r["ip.src"] == "203.0.113.10",
    "ocr-http-upload": lambda r: r["http.request.method"] == "POST" and r["ip.dst"] == "203.0.113.80",
    "dns-tunnel": lambda r: "telemetry-cdn.example.net" in r["dns.qry.name"]
    and r["ip.src"] == OCR,
    "tls-beacon": lambda r: r["tls.handshake.extensions_server_name"]
    == "update.crane-vendor.example.com",
    "safety-bypass-write": lambda r: _has(r, "modbus.func_code", "5") and r["ip.src"] == "10.20.0.50",
    "diagnostics-restart": lambda r: _has(r, "modbus.func_code", "8") and r["ip.src"] == ROGUE,
    "scan-and-identify": lambda r: r["ip.src"] == ROGUE and (
        _has(r, "modbus.func_code", "43")
        or (r["tcp.flags.syn"] == "1" and r["tcp.flags.ack"] == "0" and r["tcp.dstport"] != "502")),
    "new-master": lambda r: r["ip.src"] == ROGUE and _has(r, "modbus.func_code", "6"),
}


def dissect(pcap: Path) -> list[Row]:
    """One tshark pass over the capture: the fields the checks need, one dict per frame."""
    binary = shutil.which("tshark")
    if binary is None:
        raise EnvironmentProblem("tshark is not installed: scripts/install-deps.sh")
    argv = [binary, "-r", str(pcap), "-n", "-T", "fields", "-E", "occurrence=a", "-E",
            "aggregator=,"]
    for name in FIELDS:
        argv += ["-e", name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise EnvironmentProblem(f"tshark failed on {pcap}: {done.stderr.strip()}")
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in done.stdout.splitlines()]


@dataclass
class Capture:
    """A lab output directory: the crane LAN capture, its labels, tshark's dissection."""

    pcap: Path
    labels: dict[str, Any]
    _frames: list[Row] | None = None

    @property
    def start(self) -> float:
        return float(self.labels["start"])

    @property
    def end(self) -> float:
        return float(self.labels["end"])

    @property
    def frames(self) -> list[Row]:
        if self._frames is None:
            self._frames = dissect(self.pcap)
        return self._frames

    def times(self, predicate: Callable[[Row], bool]) -> list[float]:
        return [float(row["frame.time_epoch"]) for row in self.frames if predicate(row)]


def load(directory: Path) -> Capture:
    labels = json.loads((directory / "labels.json").read_text())
    return Capture(directory / labels["captures"]["crane_lan"], labels)


REPLAY_CYCLES = 100  # the tampered PLC replays the 10 s before the window (faults.Tamper)
ERROR_SEVERITY = 8388608  # PI_ERROR in Wireshark's expert info


def check_capture(capture: Capture) -> list[str]:
    """Frames inside the labelled run, and no malformed packet or dissector error."""
    problems = []
    times = capture.times(lambda row: True)
    if not times:
        return ["the capture is empty"]
    if times[0] < capture.start - 1.0 or times[-1] > capture.end + 1.0:
        problems.append(f"frames {times[0]:.3f}..{times[-1]:.3f} outside the labelled run "
                        f"{capture.start:.3f}..{capture.end:.3f}")
    for row in capture.frames:
        severities = [int(v) for v in row["_ws.expert.severity"].split(",") if v]
        if row["_ws.malformed"] or any(v >= ERROR_SEVERITY for v in severities):
            problems.append(f"frame {row['frame.number']}: {row['_ws.col.Protocol']} "
                            f"{row['_ws.col.Info']} (malformed or dissector error)")
    return problems


WORKING_CRANE = (PLC, OCR, CMS, "10.20.0.5", "10.20.0.6", "10.20.0.8", "10.20.0.9")
CAMERA_IPS = ("10.20.7.21", "10.20.7.22")


def check_hosts(capture: Capture, required: tuple[str, ...] = WORKING_CRANE) -> list[str]:
    """Every talker and MAC is a labelled host; the hosts of a working crane all talk."""
    if any(host["name"] in ("cam1", "cam2") for host in capture.labels["hosts"]):
        required = required + CAMERA_IPS
    rows = [row for row in capture.frames if row["ip.src"]]
    seen = {row["ip.src"] for row in rows} | {row["ip.dst"] for row in rows}
    macs = {row["eth.src"] for row in capture.frames}
    labelled = {host["ip"] for host in capture.labels["hosts"]}
    labelled_macs = {host["mac"] for host in capture.labels["hosts"]}
    problems = [f"{ip} talks but is not in labels.json" for ip in sorted(seen - labelled)]
    problems += [f"MAC {mac} is not in labels.json" for mac in sorted(macs - labelled_macs)]
    problems += [f"{ip} never appears" for ip in required if ip not in seen]
    return problems


def _intervals(times: list[float]) -> list[float]:
    return [after - before for before, after in itertools.pairwise(times)]


def check_polling(capture: Capture, tolerance: float = 0.15) -> list[str]:
    """Each documented master reads at its documented interval (median within tolerance)."""
    problems = []
    for poll in capture.labels["polling"]:
        count_field = "modbus.word_cnt" if poll["function"] in (3, 4) else "modbus.bit_cnt"

        def request(row: Row, poll: dict[str, Any] = poll, count_field: str = count_field) -> bool:
            return (row["ip.src"] == poll["master"] and row["ip.dst"] == poll["slave"]
                    and row["modbus.func_code"] == str(poll["function"])
                    and row[count_field] == str(poll["quantity"]))

        times = capture.times(request)
        expected = (capture.end - capture.start) / poll["interval_s"]
        if len(times) < 0.7 * expected:
            problems.append(f"{poll['who']} FC {poll['function']}: {len(times)} requests, "
                            f"expected about {expected:.0f}")
            continue
        median = statistics.median(_intervals(times))
        if abs(median - poll["interval_s"]) > tolerance * poll["interval_s"]:
            problems.append(f"{poll['who']} FC {poll['function']}: median interval "
                            f"{median:.3f} s, documented {poll['interval_s']} s")
    return problems


def register_series(capture: Capture, master: str = CMS) -> list[tuple[float, ProcessImage]]:
    """The CMS's view: every FC 4 response of 12 registers, as process images (DI unknown)."""
    series = []
    for row in capture.frames:
        if (row["ip.src"] == PLC and row["ip.dst"] == master and row["modbus.func_code"] == "4"
                and not row["modbus.exception_code"]):
            values = tuple(int(v) for v in row["modbus.regval_uint16"].split(",") if v)
            if len(values) == 12:
                series.append((float(row["frame.time_epoch"]), ProcessImage(values, (False,) * 7)))
    return series


def check_values(capture: Capture, honest_until: float | None = None) -> list[str]:
    """Registers in range and positions consistent with speeds (until ``honest_until``)."""
    problems = []
    series = register_series(capture)
    if len(series) < 20:
        return [f"only {len(series)} register responses to the CMS"]
    for when, image in series:
        if honest_until is not None and when >= honest_until:
            break
        load = image.value("hoist_load")
        if not 0 <= load <= 650:
            problems.append(f"{when:.3f}: hoist_load {load} outside 0..650")
        if not -2000 <= image.value("hoist_height") <= 4500:
            problems.append(f"{when:.3f}: hoist_height {image.value('hoist_height')}")
        for wind in ("wind_speed_1", "wind_speed_2"):
            if not 0 <= image.value(wind) <= 400:
                problems.append(f"{when:.3f}: {wind} {image.value(wind)}")
    consistent = 0
    for (_, a), (t1, b) in itertools.pairwise(series):
        if honest_until is not None and t1 >= honest_until:
            break
        cycles = (b.value("heartbeat") - a.value("heartbeat")) % 65536
        if not 1 <= cycles <= 10:
            problems.append(f"{t1:.3f}: heartbeat went from {a.value('heartbeat')} to "
                            f"{b.value('heartbeat')} between polls 0.2 s apart")
            continue
        for position, speed in (("hoist_height", "hoist_speed"),
                                ("trolley_position", "trolley_speed")):
            moved = b.value(position) - a.value(position)
            # trapezoid of the speeds at both polls; the speed changes by at most one
            # acceleration step (8 cm/s) per 100 ms cycle, plus register rounding
            estimate = (a.value(speed) + b.value(speed)) / 2 * cycles * 0.1
            slack = 3 + 0.4 * cycles * cycles
            if abs(moved - estimate) > slack:
                problems.append(f"{t1:.3f}: {position} moved {moved} in {cycles} cycles but "
                                f"speeds say {estimate:.1f}")
            else:
                consistent += 1
    if consistent == 0:
        problems.append("no pair of polls to check positions against speeds")
    return problems


def mqtt_events(capture: Capture) -> list[tuple[float, str, dict[str, Any]]]:
    """Every MQTT PUBLISH on the crane LAN: time, topic, JSON payload."""
    events = []
    for row in capture.frames:
        if "3" not in row["mqtt.msgtype"].split(","):
            continue
        for topic, payload in zip(row["mqtt.topic"].split(","), row["mqtt.msg"].split(","),
                                  strict=False):
            events.append((float(row["frame.time_epoch"]), topic,
                           json.loads(bytes.fromhex(payload))))
    return events


def check_mqtt(capture: Capture, minimum: int = 1) -> list[str]:
    """OCR events on the documented topic, valid ISO 6346 numbers, as the OCR journalled them."""
    problems = []
    events = mqtt_events(capture)
    if len(events) < minimum:
        problems.append(f"{len(events)} MQTT publishes, expected at least {minimum}")
    journal = {event["container"] for event in capture.labels.get("ocr_journal", [])}
    for when, topic, event in events:
        if topic != "terminal/cranes/STS-07/ocr":
            problems.append(f"{when:.3f}: publish to {topic}")
        number = event.get("container", "")
        if not iso6346.is_valid(number):
            problems.append(f"{when:.3f}: invalid container number {number!r}")
        if number not in journal:
            problems.append(f"{when:.3f}: {number} is not in the OCR journal of the labels")
        for port in ("pol", "pod"):
            if event.get(port) not in iso6346.LOCODES:
                problems.append(f"{when:.3f}: {port} {event.get(port)!r} is not a known UN/LOCODE")
    return problems


def check_attacks(capture: Capture, margin: float = 1.0) -> list[str]:
    """Each network attack's evidence falls inside its window, and there is some."""
    problems = []
    windows = {attack["name"]: attack for attack in capture.labels["attacks"]}
    for name, predicate in EVIDENCE.items():
        times = capture.times(predicate)
        attack = windows.get(name)
        if attack is None:
            if times:
                problems.append(f"{len(times)} frames of {name} in a capture without that attack")
            continue
        if not times:
            problems.append(f"{name}: no evidence in the capture")
            continue
        outside = [t for t in times if not attack["start"] - margin <= t <= attack["end"] + margin]
        if outside:
            problems.append(f"{name}: {len(outside)} frames outside the labelled window "
                            f"{attack['start_iso']}..{attack['end_iso']}")
    for attack in capture.labels["attacks"]:
        if attack["category"] == "false-reading":
            problems += check_false_reading(capture, attack)
    return problems


def check_false_reading(capture: Capture, attack: dict[str, Any]) -> list[str]:
    """The lie is visible in the CMS's polls inside the window, and only there."""
    series = register_series(capture)
    inside = [image for when, image in series if attack["start"] + 0.3 <= when < attack["end"]]
    before = [(when, image) for when, image in series if when < attack["start"]]
    if len(inside) < 10:
        return [f"{attack['name']}: only {len(inside)} polls inside the window"]
    name = attack["name"]
    if name == "zeroed-load-cell":
        lying = [i for i in inside if i.value("hoist_load") == 0 and i.value("hoist_torque") > 30]
        honest = [i for i in inside if i.value("hoist_load") > 0]
        if honest or not lying:
            return [f"{name}: {len(honest)} non-zero loads and {len(lying)} zero loads under "
                    "torque inside the window"]
    elif name == "frozen-anemometer":
        wind_2 = {i.value("wind_speed_2") for i in inside}
        wind_1 = {i.value("wind_speed_1") for i in inside}
        if len(wind_2) != 1 or len(wind_1) < 3:
            return [f"{name}: wind_speed_2 took {len(wind_2)} values, wind_speed_1 {len(wind_1)}"]
    elif name == "sensor-replay":
        # The live heartbeat dates each poll: the PLC serves, at heartbeat h, what it served
        # at h - 100 (or h - 200 on the second pass through its 10 s recording). Compare
        # wherever the CMS happened to poll that earlier cycle too.
        earlier = {image.value("heartbeat"): image.ir[1:] for _, image in before}
        compared = repeated = 0
        for image in inside:
            beat = image.value("heartbeat")
            for back in (REPLAY_CYCLES, 2 * REPLAY_CYCLES):
                recorded = earlier.get((beat - back) % 65536)
                if recorded is not None:
                    compared += 1
                    repeated += recorded == image.ir[1:]
                    break
        if compared < 5 or repeated < compared:
            return [f"{name}: {repeated} of {compared} polls repeat the values served "
                    f"{REPLAY_CYCLES} cycles earlier"]
    return []



def check_all(capture: Capture) -> list[str]:
    """Every check, with the values checked only up to the first false reading."""
    lies = [a["start"] for a in capture.labels["attacks"] if a["category"] == "false-reading"]
    return [*check_capture(capture), *check_hosts(capture), *check_polling(capture),
            *check_values(capture, honest_until=min(lies, default=None)),
            *check_mqtt(capture), *check_attacks(capture)]


def main(argv: list[str] | None = None) -> int:
    """``python -m cranewatch.lab.verify DIR...``: check lab outputs, exit 1 on a problem."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cranewatch.lab.verify")
    parser.add_argument("directories", nargs="+", type=Path, help="lab run output (labels.json)")
    args = parser.parse_args(argv)
    failed = False
    for directory in args.directories:
        problems = check_all(load(directory))
        failed = failed or bool(problems)
        print(f"{directory}: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
