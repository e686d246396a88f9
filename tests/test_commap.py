"""The communication map: nodes and edges from recorded conversations (counts checked with
tshark), the one conversation outside the profile in red, sums over runs on both backends,
a deterministic SVG whose hostile labels stay text, and its section in the commissioning report."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.commap import EDGE_COLOUR, communication_map, render_svg
from cranewatch.conversations import Conversation
from cranewatch.report.html import inline_svg, render_report
from cranewatch.store import Component, Crane, open_store

REPO = Path(__file__).resolve().parents[1]
SSH = REPO / "src" / "cranewatch" / "data" / "lab" / "remote-ssh" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
TSHARK = shutil.which("tshark")
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("commap") / "cw.db")
    assert main(["fleet", "add", "STS-07", "--profile", str(PROFILE), "--db", db]) == 0
    assert main(["analyze", str(SSH), "--profile", str(PROFILE), "--db", db, "--crane", "STS-07",
                 "--format", "jsonl", "--out", str(Path(db).with_suffix(".jsonl"))]) == 0
    return db


def test_the_ssh_session_from_outside_is_the_one_unexpected_edge(recorded: str) -> None:
    with open_store(recorded, readonly=True) as store:
        m = communication_map(store, "STS-07")
    assert m.judged_by == ("profile",)
    zones = {n.address: (n.zone, n.name) for n in m.nodes}
    assert zones["10.20.7.30"] == ("crane", "cms") and zones["10.20.0.5"] == ("terminal", "tos")
    assert zones["203.0.113.10"] == ("outside", None)
    assert len(m.edges) == 9 and all(e.expected is not None for e in m.edges)
    [ssh] = m.unexpected()
    assert (ssh.client, ssh.server, ssh.service, ssh.flows) == ("203.0.113.10", "10.20.7.30", "ssh/22", 1)
    if TSHARK:
        lengths = subprocess.run([TSHARK, "-r", str(SSH), "-Y", "tcp.port==22", "-T", "fields", "-e", "frame.len"],
                                 capture_output=True, text=True, check=True).stdout.split()
        assert (ssh.packets, ssh.bytes) == (len(lengths), sum(map(int, lengths))) == (47, 8076)


def test_the_svg_is_deterministic_plain_drawing_with_the_red_edge(recorded: str) -> None:
    with open_store(recorded, readonly=True) as store:
        first = render_svg(communication_map(store, "STS-07"))
        second = render_svg(communication_map(store, "STS-07"))
    assert first == second
    root = ET.fromstring(first)
    edges = [g for g in root.iter(f"{SVG}g") if "edge" in g.get("class", "")]
    red = [g for g in edges if g.get("class") == "edge unexpected"]
    assert len(edges) == 9 and len(red) == 1  # one line per client/server pair
    assert red[0].find(f"{SVG}path").get("stroke") == EDGE_COLOUR[False]  # type: ignore[union-attr]
    assert "203.0.113.10 → 10.20.7.30: ssh/22: 1 flows, 47 packets, 8076 bytes" in red[0].findtext(f"{SVG}title", "")
    assert "<pre>" not in str(inline_svg(first))  # the report embeds it as drawing


def test_hostile_names_stay_text(store_at: str) -> None:
    with open_store(store_at) as store:
        store.add_crane(Crane("X1", zone="10.1.0.0/24", components=(
            Component(HOSTILE, "plc", ip="10.1.0.10"),
            Component("cam", '"><image href="javascript:alert(1)"/>', ip="10.1.0.20"))), who="t", why="t")
        run = store.record_run("X1", "analyze", [], [])
        store.record_traffic_summary(run, [], [
            Conversation("10.1.0.20", "10.1.0.10", "tcp", 502, "modbus", 1, 2, 120, 1.0, 2.0)])
        m = communication_map(store, "X1")
    svg = render_svg(m)
    root = ET.fromstring(svg)
    tags = {el.tag.rsplit("}", 1)[-1] for el in root.iter()}
    assert tags <= {"svg", "title", "rect", "text", "g", "path", "circle"}
    texts = [el.text or "" for el in root.iter(f"{SVG}text")]
    assert HOSTILE[:27] in " ".join(texts)  # the name, shortened, as text
    assert not any(name.lower().startswith("on") or name.endswith("href") for el in root.iter() for name in el.attrib)
    assert "<script" not in svg and "<image" not in svg
    assert m.edges[0].expected is None and m.judged_by == ()  # no profile, no baseline: unjudged


def test_edges_sum_over_runs_and_leave_superseded_runs_out(store_at: str) -> None:
    class Baseline:  # what the map asks of a baseline
        @staticmethod
        def has_pair(client: str, server: str, port: int | None = None) -> bool:
            return (client, server, port) == ("10.1.0.20", "10.1.0.10", 502)

    with open_store(store_at) as store:
        store.add_crane(Crane("X2", zone="10.1.0.0/24"), who="t", why="t")
        runs = [store.record_run("X2", "analyze", [], []) for _ in range(3)]
        store.record_traffic_summary(runs[0], [], [Conversation("10.1.0.20", "10.1.0.10", "tcp", 502, "modbus", 2, 10, 600, 5.0, 9.0),
                                                   Conversation("10.1.0.20", "8.8.8.8", "udp", 53, "dns", 1, 2, 180, 6.0, 6.5)])
        store.record_traffic_summary(runs[1], [], [Conversation("10.1.0.20", "10.1.0.10", "tcp", 502, "modbus", 1, 4, 240, 1.0, 7.0)])
        store.record_traffic_summary(runs[2], [], [Conversation("10.1.0.99", "10.1.0.10", "tcp", 502, "modbus", 1, 4, 240, 1.0, 7.0)])
        store.supersede_run(runs[2], who="t", why="wrong port")
        m = communication_map(store, "X2", baseline=Baseline())  # type: ignore[arg-type]
        only_second = communication_map(store, "X2", run_ids=[runs[1]])
    modbus, dns = m.edges
    assert (modbus.flows, modbus.packets, modbus.bytes, modbus.first_seen, modbus.last_seen, modbus.expected) == \
        (3, 14, 840, 1.0, 9.0, True)
    assert (dns.server, dns.expected) == ("8.8.8.8", False)
    assert [n.address for n in m.nodes] == ["8.8.8.8", "10.1.0.10", "10.1.0.20"]  # 10.1.0.99: superseded
    assert {n.address: n.zone for n in m.nodes}["8.8.8.8"] == "outside"
    assert {n.address: n.role for n in m.nodes} == {"8.8.8.8": "dns", "10.1.0.10": "plc", "10.1.0.20": "plc-master"}
    assert [(e.flows, e.packets) for e in only_second.edges] == [(1, 4)]


def test_the_commissioning_report_has_the_map(recorded: str) -> None:
    with open_store(recorded, readonly=True) as store:
        html = render_report(store, "STS-07")
    section = html.split('<section id="comm-map"', 1)[1].split("</section>", 1)[0]
    assert "<svg" in section and 'class="edge unexpected"' in section
    assert '<tr class="unexpected"><td class="mono">203.0.113.10</td><td class="mono">10.20.7.30</td><td>ssh/22</td>' \
        '<td>1</td><td>47</td><td>8076</td>' in section
