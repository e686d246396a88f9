"""``cranewatch profile draft``: a profile skeleton from a quarantine capture.

Two ways of knowing it is right: a small capture built here whose every host, role, range and
value kind was decided when it was written (hand-checked below), and the lab: a draft from
``normal`` judges the lab's attack captures, finding every network attack of their labels,
while ``normal-2`` stays quiet.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cranewatch.detect.engine import build_sink
from cranewatch.draft import PointStats, draft_profile, guess_roles, render_draft
from cranewatch.model import Finding, Severity
from cranewatch.oui import load_oui, parse_oui
from cranewatch.pipeline import analyze
from cranewatch.profile import CraneProfile, load_profile, parse_profile
from cranewatch.sources.pcapwrite import ethernet_frame, ipv4_address
from detect_capture import (
    Capture,
    Host,
    modbus,
    mqtt_connect,
    mqtt_publish,
    read_request,
    read_response,
)

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "src" / "cranewatch" / "data" / "lab"

# -- a small capture, every fact of it chosen here ---------------------------------------------

LAN = "172.16.5.0/24"
PLC = Host("172.16.5.2", "00:0e:8c:11:22:33")  # 00:0E:8C is Siemens AG's OUI (IEEE registry)
HMI = Host("172.16.5.3", "02:00:00:00:05:03")
EWS = Host("172.16.5.4", "02:00:00:00:05:04")
OCR = Host("172.16.5.20", "02:00:00:00:05:14")
CAMERA = Host("172.16.5.21", "02:00:00:00:05:15")
GATEWAY = Host("172.16.5.1", "02:00:00:00:05:01")
BROKER = Host("10.1.0.6", "02:00:00:00:01:06")
NTP = Host("10.1.0.7", "02:00:00:00:01:07")
T0 = 1_790_000_000.0
POLLS = 40
SWING = [-50 + (37 * i) % 126 for i in range(POLLS)]  # up and down, -50 (i = 0) to 75 (i = 17)


def arp_reply(sender: Host, target: Host) -> bytes:
    body = (struct.pack(">HHBBH", 1, 0x0800, 6, 4, 2) + bytes.fromhex(sender.mac.replace(":", ""))
            + ipv4_address(sender.ip) + bytes.fromhex(target.mac.replace(":", "")) + ipv4_address(target.ip))
    return ethernet_frame(target.mac, sender.mac, 0x0806, body)


def small_capture(path: Path) -> Path:
    """The HMI polls HR 0-3 of the PLC at 2 Hz: HR 0 stays 1234, HR 1 counts up by one per
    read, HR 2 toggles 0/1, HR 3 swings up and down between -50 and +75 (int16). The EWS writes HR 10 once.
    The OCR pulls RTSP from the camera and publishes MQTT to the terminal's broker, the HMI
    asks the terminal's NTP server; the gateway answers ARP."""
    cap = Capture(lan=LAN, gateway_mac=GATEWAY.mac)
    exchanges: list[tuple[bool, bytes, float]] = []
    for i in range(POLLS):
        values = [1234, 100 + i, i % 2, SWING[i]]
        exchanges.append((True, modbus(i + 1, 1, read_request(3, 0, 4)), 0.5))
        exchanges.append((False, modbus(i + 1, 1, read_response(3, values)), 0.002))
    cap.tcp(T0, HMI, PLC, 40001, 502, exchanges)
    write = modbus(1, 1, struct.pack(">BHH", 6, 10, 77))
    cap.tcp(T0 + 5, EWS, PLC, 40002, 502, [(True, write, 0.01), (False, write, 0.002)])
    cap.tcp(T0 + 1, OCR, CAMERA, 40003, 554, [
        (True, b"OPTIONS rtsp://172.16.5.21/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n", 0.01),
        (False, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n", 0.002)])
    cap.tcp(T0 + 2, OCR, BROKER, 40004, 1883, [
        (True, mqtt_connect("ocr"), 0.01), (False, b"\x20\x02\x00\x00", 0.002),
        (True, mqtt_publish("cranes/ocr", b'{"container": "none"}'), 0.5)])
    for k in range(3):
        cap.udp(T0 + 3 + k, HMI, NTP, 123, 123, b"\x23" + bytes(47))
        cap.udp(T0 + 3.01 + k, NTP, HMI, 123, 123, b"\x24\x02" + bytes(46))
    cap.packets.append((T0 + 0.5, arp_reply(GATEWAY, HMI)))
    return cap.write(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_capture(tmp_path_factory.mktemp("draft") / "rtg-3.pcap")


SIEMENS_OUI = "00-0E-8C   (hex)\t\tSiemens AG\n"


def test_small_capture_roles_zones_and_gateway_as_built(small: Path, tmp_path: Path) -> None:
    oui = tmp_path / "oui.txt"
    oui.write_text(SIEMENS_OUI)
    draft = draft_profile([small], crane_id="RTG-3", oui=load_oui((str(oui),)))
    roles = {h.ip: (h.name, h.role) for h in guess_roles(draft)}
    assert roles == {
        PLC.ip: ("plc", "plc"), HMI.ip: ("hmi", "hmi"), EWS.ip: ("ews", "ews"),
        OCR.ip: ("ocr", "ocr"), CAMERA.ip: ("camera", "camera"), GATEWAY.ip: ("gateway", "gateway"),
        BROKER.ip: ("mqtt-broker", "mqtt-broker"), NTP.ip: ("ntp", "ntp"),
    }
    text = render_draft(draft)
    profile = parse_profile(text, "draft.toml")  # what `profile check` loads
    assert profile.crane_id == "RTG-3"
    assert [str(n) for n in profile.zones["crane"]] == [LAN]
    assert [str(n) for n in profile.zones["terminal"]] == ["10.1.0.0/24"]
    assert profile.gateway is not None and profile.gateway.ip == GATEWAY.ip
    assert profile.gateway.mac == GATEWAY.mac
    plc = profile.host_by_ip(PLC.ip)
    assert plc is not None and plc.mac == PLC.mac
    assert f'mac = "{PLC.mac}"  # vendor: Siemens AG' in text
    assert f'mac = "{HMI.mac}"  # vendor: locally administered address (no vendor)' in text
    assert f"Vendors: {oui}" in text


def test_small_capture_masters_read_and_write_sets(small: Path) -> None:
    profile = parse_profile(render_draft(draft_profile([small], crane_id="RTG-3")), "draft.toml")
    hmi = profile.allowances(HMI.ip, PLC.ip, "modbus")
    assert len(hmi) == 1 and hmi[0].port == 502 and not hmi[0].write
    assert hmi[0].functions == frozenset({3}) and [str(r) for r in hmi[0].ranges] == ["HR:0-3"]
    ews = profile.allowances(EWS.ip, PLC.ip, "modbus")
    assert len(ews) == 1 and ews[0].write and [str(r) for r in ews[0].ranges] == ["HR:10"]
    assert ews[0].functions == frozenset({6})
    assert profile.allows(OCR.ip, CAMERA.ip, "rtsp", 554)
    assert profile.allows(OCR.ip, BROKER.ip, "mqtt", 1883)
    assert profile.allows(HMI.ip, NTP.ip, "ntp", 123)
    assert not profile.allows(HMI.ip, CAMERA.ip, None, 554)
    assert len(profile.allowed) == 5


def test_small_capture_register_kinds_from_the_values(small: Path) -> None:
    text = render_draft(draft_profile([small], crane_id="RTG-3"))
    profile = parse_profile(text, "draft.toml")
    assert [(p.table, p.address, p.type) for p in profile.registers] == [
        ("HR", 0, "uint16"), ("HR", 1, "uint16"), ("HR", 2, "uint16"), ("HR", 3, "int16")]
    assert all(p.low is None and p.high is None for p in profile.registers)  # limits: a person's
    comments = {line.split('"')[1]: line.split("# GUESS: ")[1] for line in text.splitlines()
                if line.startswith('name = "hr_')}
    assert comments == {
        "hr_0": f"constant 1234; {POLLS} samples",
        "hr_1": f"counter (rises at nearly every read); {POLLS} samples",
        "hr_2": f"boolean (0/1); {POLLS} samples",
        "hr_3": f"bounded analogue, signed: observed -50..75 raw; {POLLS} samples",
    }
    assert "# written but never read: HR:10" in text


def test_every_guess_is_marked_and_nothing_outside_or_safety_is_granted(small: Path) -> None:
    text = render_draft(draft_profile([small], crane_id="RTG-3"))
    profile = parse_profile(text, "draft.toml")
    assert profile.outside_endpoints == () and profile.safety_points == frozenset()
    assert not any(p.safety for p in profile.registers)
    for line in text.splitlines():
        if line.startswith(("role = ", "crane = ", "terminal = ", "[gateway]")):
            assert "# GUESS: " in line, line
        if line.startswith("name = ") and "_" in line:  # register names
            assert "# GUESS: " in line, line


def test_the_draft_is_stable(small: Path) -> None:
    assert render_draft(draft_profile([small], crane_id="X")) == render_draft(draft_profile([small], crane_id="X"))


def test_point_kinds_by_hand() -> None:
    import numpy as np

    def kind(values: list[int], table: str = "HR") -> str:
        stats = PointStats()
        stats.add(np.array(values), "p")
        return stats.kind(table)[0]

    assert kind([7, 7, 7]) == "constant 7"
    assert kind([65534, 65535, 0, 1, 2]) == "counter (rises at nearly every read)"  # wraps
    assert kind([0, 1, 1, 0]) == "boolean (0/1)"
    assert kind([3, 9, 4, 12]) == "bounded analogue: observed 3..12 raw"
    assert kind([65535, 2, 65530]) == "bounded analogue, signed: observed -6..2 raw"
    assert kind([1, 2]) == "too few samples (2) to guess"
    assert kind([1, 0, 1], "DI") == "boolean (0/1)"


def test_oui_formats_and_absence(tmp_path: Path) -> None:
    manuf = "00:0E:8C\tSiemens\tSiemens AG\n00:1B:C5:00:10:00/36\tOpenRBco\tOpenRB.com, Direct SIA\n"
    table = parse_oui(manuf)
    assert table[(24, 0x000E8C)] == "Siemens AG" and table[(36, 0x001BC5001)] == "OpenRB.com, Direct SIA"
    assert parse_oui(SIEMENS_OUI) == {(24, 0x000E8C): "Siemens AG"}
    path = tmp_path / "manuf"
    path.write_text(manuf)
    oui = load_oui((str(path),))
    assert oui.vendor("00:1b:c5:00:10:ff") == "OpenRB.com, Direct SIA"  # the /36 block
    assert oui.vendor("00-0E-8C-01-02-03") == "Siemens AG"
    assert oui.vendor("00:1b:c5:00:20:00") is None
    assert oui.vendor("ff:ff:ff:ff:ff:ff") == "multicast/broadcast address (no vendor)"
    missing = load_oui((str(tmp_path / "nothing"),))
    assert not missing.found and "no OUI database found" in missing.source
    assert missing.vendor("00:0e:8c:01:02:03") is None


def test_the_command_writes_a_draft_that_profile_check_passes(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "rtg-3.toml"
    exe = [sys.executable, "-m", "cranewatch"]
    done = subprocess.run([*exe, "profile", "draft", str(small), "--crane", "RTG-3", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "drafted 8 hosts" in done.stderr and "review every GUESS" in done.stderr
    checked = subprocess.run([*exe, "profile", "check", str(out)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"OK {out}: crane RTG-3, 8 hosts, 5 allowed communications, 4 register points")


def test_the_command_says_when_a_capture_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    done = subprocess.run([sys.executable, "-m", "cranewatch", "profile", "draft", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert str(bad) in done.stderr


# -- the lab: a draft from normal judges the attack captures ----------------------------------

# Without a profile that names safety points, a write cannot be called a safety override: the
# draft names none, so the labelled safety override is found as the write it is (plc-control).
SAME_CAUSE = {"safety-override": {"plc-control"}}
NETWORK_CATEGORIES = {"hidden-uplink", "remote-access", "data-leak", "c2", "egress", "safety-override",
                      "plc-control", "recon", "rogue-master", "new-asset", "lateral-movement"}


@cache
def lab_draft() -> CraneProfile:
    if not (LAB / "normal" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    return parse_profile(render_draft(draft_profile([LAB / "normal" / "crane-lan.pcap"], crane_id="STS-07")),
                         "draft.toml")


def lab_findings(name: str) -> list[Finding]:
    return list(analyze([LAB / name / "crane-lan.pcap"], sinks=[build_sink(lab_draft())]).findings)


def attack_scenarios() -> list[str]:
    """The lab scenarios with a network attack (the process ones need named signals, which a
    draft cannot know)."""
    if not LAB.is_dir():
        return []
    return sorted(d.name for d in LAB.iterdir() if (d / "labels.json").exists()
                  and any(a["category"] in NETWORK_CATEGORIES
                          for a in json.loads((d / "labels.json").read_text())["attacks"]))


def _host(endpoint: str | None) -> str:
    if not endpoint:
        return ""
    return endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint


def _same(label: str, found: str | None) -> bool:
    import ipaddress

    if "/" in label:
        return bool(found) and ipaddress.ip_address(_host(found).split("/")[0]) in ipaddress.ip_network(label)
    return _host(found) == _host(label) and (":" not in label or found == label)


def test_the_lab_draft_names_the_lab_hosts_as_its_labels_do() -> None:
    profile = lab_draft()
    labels = json.loads((LAB / "normal" / "labels.json").read_text())
    macs = {h["ip"]: h["mac"] for h in labels["hosts"]}
    expected = {"10.20.7.10": "plc", "10.20.7.20": "ocr", "10.20.7.30": "hmi", "10.20.7.254": "gateway"}
    for ip, role in expected.items():
        host = profile.host_by_ip(ip)
        assert host is not None and host.role == role and host.mac == macs[ip], (ip, host)
    assert [str(n) for n in profile.zones["crane"]] == ["10.20.7.0/24"]
    assert profile.gateway is not None and profile.gateway.mac == macs["10.20.7.254"]


@pytest.mark.parametrize("scenario", attack_scenarios())
def test_a_draft_from_normal_finds_every_network_attack(scenario: str) -> None:
    truth: dict[str, Any] = json.loads((LAB / scenario / "labels.json").read_text())
    attacks = [a for a in truth["attacks"] if a["category"] in NETWORK_CATEGORIES]
    findings = lab_findings(scenario)
    for attack in attacks:
        wanted = SAME_CAUSE.get(attack["category"], {attack["category"]})
        hits = [f for f in findings if f.category in wanted and _same(attack["src"], f.src)
                and _same(attack["dst"], f.dst)]
        assert hits, (attack["name"], [(f.category, f.src, f.dst) for f in findings])
        assert min(f.first_seen or 0 for f in hits) <= attack["end"] + 0.5


def test_a_draft_from_normal_keeps_normal_2_quiet() -> None:
    if not (LAB / "normal-2" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    loud = [(f.category, f.title) for f in lab_findings("normal-2") if f.severity >= Severity.LOW]
    assert loud == []


def test_the_draft_of_the_lab_passes_profile_check(tmp_path: Path) -> None:
    lab_draft()
    out = tmp_path / "sts-07.draft.toml"
    out.write_text(render_draft(draft_profile([LAB / "normal" / "crane-lan.pcap"], crane_id="STS-07")))
    assert load_profile(out).crane_id == "STS-07"


def test_portless_conversations_are_no_service(tmp_path: Path) -> None:
    # Found drafting every public capture: an ICMP exchange between two local hosts is a
    # conversation on "port 0", which no [[allow]] can hold (`profile check` refused the draft).
    import ipaddress

    from cranewatch.baseline import Baseline
    from cranewatch.draft import Draft, ProfileDrafter
    from cranewatch.oui import OuiTable

    baseline = Baseline(hosts={"10.0.0.1": frozenset({"02:00:00:00:00:01"}),
                               "10.0.0.2": frozenset({"02:00:00:00:00:02"})},
                        crane_networks=(ipaddress.ip_network("10.0.0.0/24"),),
                        pairs=frozenset({("10.0.0.1", "10.0.0.2", 0), ("10.0.0.1", "10.0.0.2", 502)}),
                        services=frozenset({("10.0.0.2", "icmp", 0), ("10.0.0.2", "tcp", 502)}),
                        protocols=frozenset({("10.0.0.2", 502, "modbus")}))
    draft = Draft(baseline, ProfileDrafter(), (), (), OuiTable("none", False), "X")
    profile = parse_profile(render_draft(draft), "draft.toml")
    assert [(a.client, a.server, a.protocol, a.port) for a in profile.allowed] == [("hmi", "plc", "modbus", 502)]


@pytest.mark.slow
def test_every_public_ics_capture_drafts_a_profile_that_passes_check(shared_data: Path) -> None:
    from cranewatch.detect.survey import manifest_captures

    checked = 0
    for path, name, _packets in manifest_captures(shared_data / "pcaps" / "MANIFEST.tsv"):
        text = render_draft(draft_profile([path], crane_id="X"))
        assert text == render_draft(draft_profile([path], crane_id="X")), name  # stable
        parse_profile(text, name)  # raises with every problem located
        checked += 1
    assert checked >= 80


def test_draft_then_analyze_through_the_commands(tmp_path: Path) -> None:
    """The issue's story on the command line: draft from lab/normal, then analyze an attack."""
    if not (LAB / "remote-ssh" / "crane-lan.pcap").exists():
        pytest.skip("lab data not bundled in this checkout")
    exe = [sys.executable, "-m", "cranewatch"]
    draft = tmp_path / "sts-07.draft.toml"
    made = subprocess.run([*exe, "profile", "draft", str(LAB / "normal" / "crane-lan.pcap"), "--crane", "STS-07",
                           "--out", str(draft)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([*exe, "analyze", str(LAB / "remote-ssh" / "crane-lan.pcap"), "--profile", str(draft),
                           "--format", "jsonl"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    found = {(r["category"], r["src"], r["dst"]) for r in records if r["type"] == "finding"}
    assert ("hidden-uplink", "10.20.7.199", "203.0.113.10") in found
    assert ("remote-access", "203.0.113.10", "10.20.7.30:22") in found
    # the draft names no limits: the run says which process checks that leaves out
    (limits,) = [r for r in records if r["type"] == "skipped" and r["checks"] == "process-limits"]
    assert limits["missing"] == ["rated_load", "overload_limit", "wind_stop_limit", "hoist_speed_limit",
                                 "trolley_speed_limit"]


def test_a_lan_numbered_from_a_public_range(shared_data: Path) -> None:
    # Found drafting the public captures: ModbusTCP.pcap's plant uses 141.81.0.0/24, and the
    # draft listed no host at all (only private addresses counted as local) while it listed
    # 617 register candidates. Hosts seen with a MAC of their own are on the LAN, whatever
    # their range. Expected by tshark: one master, 141.81.0.10, polling 13 servers
    # (tshark -Y 'tcp.dstport==502 && mbtcp' -T fields -e ip.src -e ip.dst | sort -u).
    capture = shared_data / "pcaps" / "ICS-Security-Tools" / "pcaps" / "ModbusTCP" / "ModbusTCP.pcap"
    profile = parse_profile(render_draft(draft_profile([capture], crane_id="X")), "draft.toml")
    assert [str(n) for n in profile.zones["crane"]] == ["141.81.0.0/24"]
    servers = {"141.81.0.24", "141.81.0.26", "141.81.0.44", "141.81.0.46", "141.81.0.64", "141.81.0.66",
               "141.81.0.84", "141.81.0.86", "141.81.0.104", "141.81.0.143", "141.81.0.144",
               "141.81.0.163", "141.81.0.164"}
    assert {h.ip for h in profile.hosts if h.role == "plc"} == servers
    assert [(h.ip, h.role) for h in profile.hosts if h.role != "plc"] == [("141.81.0.10", "ews")]  # it writes coils
    assert {(a.client, profile.host_by_name(a.server).ip) for a in profile.allowed  # type: ignore[union-attr]
            if a.protocol == "modbus"} == {("ews", ip) for ip in servers}
