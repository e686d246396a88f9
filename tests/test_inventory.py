"""The asset inventory: hosts and conversations a recorded run keeps (checked against tshark on
a lab capture), seen hosts against the fleet's and profile's parts with the gaps marked, on
both backends."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.conversations import Conversation, ConversationBook
from cranewatch.inventory import MANUF, asset_inventory, guess_role, vendor_of
from cranewatch.pipeline import HostSummary
from cranewatch.store import Component, Coverage, Crane, ObservedHost, open_store

REPO = Path(__file__).resolve().parents[1]
SSH = REPO / "src" / "cranewatch" / "data" / "lab" / "remote-ssh" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
TSHARK = shutil.which("tshark")


def tshark_totals(capture: Path, display_filter: str) -> tuple[int, int]:
    """(frames, bytes on the wire) tshark counts for a display filter."""
    lengths = subprocess.run([TSHARK or "tshark", "-r", str(capture), "-Y", display_filter, "-T", "fields",
                              "-e", "frame.len"], capture_output=True, text=True, check=True).stdout.split()
    return len(lengths), sum(int(n) for n in lengths)


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_a_recorded_run_keeps_its_hosts_and_conversations_as_tshark_counts_them(tmp_path: Path) -> None:
    db = str(tmp_path / "cw.db")
    assert main(["fleet", "add", "STS-07", "--profile", str(PROFILE), "--db", db]) == 0
    assert main(["analyze", str(SSH), "--profile", str(PROFILE), "--db", db, "--crane", "STS-07",
                 "--format", "jsonl", "--out", str(tmp_path / "r.jsonl")]) == 0
    with open_store(db, readonly=True) as store:
        inventory = asset_inventory(store, "STS-07")
        conversations = {(c.conversation.client, c.conversation.server, c.conversation.server_port): c.conversation
                         for c in store.observed_conversations("STS-07")}
    rows = {a.key: a for a in inventory.assets}
    for mac in ("02:c7:07:00:00:1e", "02:c7:07:00:00:fe", "02:5c:11:0a:77:c3"):
        assert (rows[mac].packets, rows[mac].bytes) == tshark_totals(SSH, f"eth.src=={mac}")
    assert (rows["02:c7:07:00:00:1e"].name, rows["02:c7:07:00:00:1e"].ips, rows["02:c7:07:00:00:1e"].status) == \
        ("cms", ("10.20.7.30",), "registered")
    # the crane gateway carries the terminal's addresses; the hidden modem an outside one
    assert rows["02:c7:07:00:00:fe"].name == "gateway" and rows["02:c7:07:00:00:fe"].ips == ()
    assert rows["02:c7:07:00:00:fe"].remote_ips == ("10.20.0.5", "10.20.0.6", "10.20.0.7", "10.20.0.8")
    modem = rows["02:5c:11:0a:77:c3"]
    assert (modem.status, modem.role, modem.role_source, modem.remote_ips) == \
        ("seen-unregistered", "router", "guess", ("203.0.113.10",))
    # the four cameras were not on the wire in this capture
    assert sorted(a.name or "" for a in inventory.gaps() if a.status == "registered-unseen") == \
        ["camera-1", "camera-2", "camera-3", "camera-4"]
    assert inventory.to_json()["counts"] == {"registered": 4, "registered-unseen": 4, "seen-unregistered": 1}
    http = conversations[("10.20.0.5", "10.20.7.30", 8080)]
    assert (http.flows, http.packets, http.bytes, http.service) == \
        (3, *tshark_totals(SSH, "ip.addr==10.20.0.5 && tcp.port==8080"), "http/8080")
    ssh = conversations[("203.0.113.10", "10.20.7.30", 22)]
    assert (ssh.flows, ssh.packets, ssh.bytes) == (1, *tshark_totals(SSH, "tcp.port==22"))
    assert (conversations[("10.20.7.30", "10.20.7.10", 502)].packets,
            conversations[("10.20.7.30", "10.20.7.10", 502)].bytes) == \
        tshark_totals(SSH, "ip.addr==10.20.7.30 && tcp.port==502")


def host(mac: str | None, ips: tuple[str, ...], first: float, last: float, packets: int) -> HostSummary:
    return HostSummary(mac, ips, first, last, packets, packets * 100)


def conversation(client: str, server: str, port: int, protocol: str) -> Conversation:
    return Conversation(client, server, "tcp", port, protocol, 1, 10, 1000, 1.0, 2.0)


def test_seen_against_registered_over_runs(store_at: str) -> None:
    crane = Crane("STS-09", zone="10.30.9.0/24", components=(
        Component("PLC", "plc", mac="00:0E:8C:12:34:56", ip="10.30.9.10"),
        Component("OCR", "ocr", ip="10.30.9.20"),
        Component("Spare HMI", "other", mac="02:00:00:00:00:99"),
    ))
    with open_store(store_at) as store:
        store.add_crane(crane, who="t", why="t")
        one = store.record_run("STS-09", "analyze", [], [])
        store.record_traffic_summary(one, [host("00:0e:8c:12:34:56", ("10.30.9.10",), 100.0, 200.0, 5),
                                           host("02:00:00:00:00:20", ("10.30.9.20",), 150.0, 160.0, 2),
                                           host("02:00:00:00:00:77", ("10.30.9.77",), 120.0, 130.0, 3)],
                                     [conversation("10.30.9.77", "10.30.9.10", 502, "modbus")])
        two = store.record_run("STS-09", "analyze", [], [])
        store.record_traffic_summary(two, [host("00:0e:8c:12:34:56", ("10.30.9.10",), 50.0, 90.0, 7),
                                           host("02:00:00:00:00:77", ("10.30.9.77",), 300.0, 310.0, 1)], [])
        store.record_traffic_summary(two, [host("00:0e:8c:12:34:56", ("10.30.9.10",), 50.0, 90.0, 7),
                                           host("02:00:00:00:00:77", ("10.30.9.77",), 300.0, 310.0, 1)], [])
        gone = store.record_run("STS-09", "analyze", [], [])
        store.record_traffic_summary(gone, [host("02:00:00:00:00:66", ("10.30.9.66",), 1.0, 2.0, 1)], [])
        store.supersede_run(gone, who="t", why="wrong mirror port")
        inventory = asset_inventory(store, "STS-09")
    rows = {a.key: a for a in inventory.assets}
    assert set(rows) == {"00:0e:8c:12:34:56", "02:00:00:00:00:20", "02:00:00:00:00:77", "registered:Spare HMI"}
    plc = rows["00:0e:8c:12:34:56"]  # matched by MAC; both runs, recorded twice counts once
    assert (plc.name, plc.status, plc.first_seen, plc.last_seen, plc.packets, plc.bytes, plc.runs) == \
        ("PLC", "registered", 50.0, 200.0, 12, 1200, (one, two))
    assert (plc.role, plc.role_source) == ("plc", "registered")
    ocr = rows["02:00:00:00:00:20"]  # matched by IP (no MAC registered)
    assert (ocr.name, ocr.status, ocr.vendor) == ("OCR", "registered", None)  # locally administered
    rogue = rows["02:00:00:00:00:77"]
    assert (rogue.status, rogue.role, rogue.role_source, rogue.runs) == ("seen-unregistered", "plc-master", "guess",
                                                                       (one, two))
    assert rows["registered:Spare HMI"].status == "registered-unseen"
    assert [a.key for a in inventory.assets][:2] == ["02:00:00:00:00:77", "registered:Spare HMI"]  # gaps first
    if MANUF.is_file():
        assert plc.vendor == "Siemens AG"


def test_vendor_and_role_guesses() -> None:
    assert vendor_of("02:11:22:33:44:55") is None and vendor_of(None) is None and vendor_of("zz") is None
    if MANUF.is_file():
        assert vendor_of("00:1b:1b:01:02:03") == "Siemens AG,"
        assert vendor_of("00:1B:C5:00:10:01") == "OpenRB.com, Direct SIA"  # a /36 block inside a /24
    assert guess_role({("tcp", 554)}, set()) == "camera"
    assert guess_role({("tcp", 22), ("tcp", 502)}, set()) == "plc"  # the crane role wins over ssh
    assert guess_role(set(), {("tcp", 502)}) == "plc-master"
    assert guess_role(set(), set(), remote=3) == "router"
    assert guess_role(set(), {("udp", 53)}) is None


def test_the_book_folds_flows_into_conversations_and_is_bounded() -> None:
    class Flow:
        def __init__(self, client: str, port: int, packets: int, first: float) -> None:
            self.client, self.server, self.transport, self.server_port = client, "10.0.0.1", "tcp", port
            self.protocol, self.packets, self.bytes = "", packets, packets * 60
            self.first_seen, self.last_seen = first, first + 1

    book = ConversationBook(limit=2)
    for flow in (Flow("a", 80, 2, 5.0), Flow("a", 80, 3, 1.0), Flow("b", 80, 1, 2.0), Flow("c", 80, 1, 2.0)):
        book.on_flow_end(flow)
    assert book.conversations() == [Conversation("a", "10.0.0.1", "tcp", 80, "tcp", 2, 5, 300, 1.0, 6.0),
                                    Conversation("b", "10.0.0.1", "tcp", 80, "tcp", 1, 1, 60, 2.0, 3.0)]
    assert book.dropped_flows == 1 and book.conversations()[0].service == "tcp/80"


def test_a_run_recorded_before_runs_kept_hosts_counts_by_its_coverage(store_at: str) -> None:
    with open_store(store_at) as store:
        store.add_crane(Crane("STS-10", zone="10.40.0.0/24", components=(Component("PLC", "plc", ip="10.40.0.10"),)),
                        who="t", why="t")
        old = store.record_run("STS-10", "analyze", [], [], coverage=Coverage(("network",), (
            ObservedHost("02:00:00:00:00:10", ("10.40.0.10",)), ObservedHost("02:00:00:00:00:fe", ("8.8.8.8",)))))
        inventory = asset_inventory(store, "STS-10")
    rows = {a.key: a for a in inventory.assets}
    assert set(rows) == {"02:00:00:00:00:10", "02:00:00:00:00:fe"}
    plc = rows["02:00:00:00:00:10"]
    assert (plc.name, plc.status, plc.runs, plc.first_seen, plc.packets) == ("PLC", "registered", (old,), None, 0)
    assert (rows["02:00:00:00:00:fe"].remote_ips, rows["02:00:00:00:00:fe"].role) == (("8.8.8.8",), "router")
