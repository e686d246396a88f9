"""The console shows the process signals with each incident shaded: the plots the process
checks keep in a finding's evidence (process/plot.py), served as images only when they are plain
drawing, on the finding page and in the crane page's "Process signals" section."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cranewatch.cli import main
from cranewatch.model import Evidence
from cranewatch.store import open_store
from cranewatch.web import auth
from web_helpers import PASSWORD, client, console, finding

REPO = Path(__file__).resolve().parents[1]
FALSE_LOAD = REPO / "src" / "cranewatch" / "data" / "lab" / "false-load" / "crane-lan.pcap"
PROFILE = REPO / "profiles" / "sts-07.toml"
FLEET = REPO / "profiles" / "fleet-example.toml"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    db = tmp_path_factory.mktemp("plots") / "cw.db"
    assert main(["fleet", "import", str(FLEET), "--db", str(db)]) == 0
    for state in ("quarantined", "under-analysis"):
        assert main(["fleet", "set-state", "STS-07", state, "--reason", "t", "--db", str(db)]) == 0
    assert main(["analyze", str(FALSE_LOAD), "--crane", "STS-07", "--profile", str(PROFILE),
                 "--db", str(db), "--format", "jsonl", "--out", str(db.parent / "doc.jsonl")]) == 0
    hostile = finding(9001, category="false-reading", rule="process.hostile", title="hostile plot")
    hostile = type(hostile)(**{**{k: getattr(hostile, k) for k in hostile.__dataclass_fields__},
                               "evidence": (Evidence(values={"svg": '<svg xmlns="http://www.w3.org/2000/svg">'
                                                                    '<script>alert(1)</script></svg>'}),)})
    with open_store(db) as store:
        store.record_run("STS-07", "analyze", [], [hostile], who="t")
        store.add_user("viewer", "viewer", auth.hash_password(PASSWORD, n=2**10), by="test")
    with console(db) as server:
        yield db, server


def _stored_plots(db: Path) -> dict[str, list[str]]:
    with open_store(db, readonly=True) as store:
        return {f.id: [e.values["svg"] for e in f.evidence if isinstance(e.values.get("svg"), str)]
                for f in store.findings("STS-07") if f.rule != "process.hostile"}


def test_the_crane_page_shows_each_process_findings_plot(world: Any) -> None:
    db, server = world
    stored = {fid: svgs for fid, svgs in _stored_plots(db).items() if svgs}
    assert stored, "the false-load capture judged with the profile must give process findings with plots"
    with client(server, "viewer") as c:
        page = c.get("/crane/STS-07")
        assert page.status_code == 200
        shown = set(re.findall(r'src="/crane/STS-07/finding/([^/"]+)/plot/0\.svg"', page.text))
        assert shown == set(stored)
        for fid, svgs in stored.items():
            plot = c.get(f"/crane/STS-07/finding/{fid}/plot/0.svg")
            assert plot.status_code == 200 and plot.headers["content-type"].startswith("image/svg+xml")
            assert plot.text == svgs[0]  # what the checks drew, as stored
            root = ET.fromstring(plot.text)
            assert root.tag == f"{SVG}svg"
            assert any(True for _ in root.iter(f"{SVG}polyline"))  # the signals
            assert any(True for _ in root.iter(f"{SVG}rect"))  # the incident, shaded
            detail = c.get(f"/crane/STS-07/finding/{fid}")
            assert f"/crane/STS-07/finding/{fid}/plot/0.svg" in detail.text
            assert "&lt;svg" not in detail.text  # the plot is not dumped as text in the values


def test_a_plot_that_is_not_plain_drawing_is_never_served(world: Any) -> None:
    db, server = world
    with open_store(db, readonly=True) as store:
        hostile = next(f.id for f in store.findings("STS-07") if f.rule == "process.hostile")
    with client(server, "viewer") as c:
        assert c.get(f"/crane/STS-07/finding/{hostile}/plot/0.svg").status_code == 404
        assert c.get(f"/crane/STS-07/finding/{hostile}/plot/7.svg").status_code == 404
        assert "<script>alert(1)" not in c.get(f"/crane/STS-07/finding/{hostile}").text


def test_plots_need_a_session(world: Any) -> None:
    _, server = world
    with client(server) as c:
        assert c.get("/crane/STS-07/finding/x/plot/0.svg", follow_redirects=False).status_code in (302, 303, 401)
