"""Programs that start by themselves, read as PE files with their Authenticode signature.

The programs are real: built by mingw-w64 in the test, signed by osslsigncode with a CA made by
openssl here (so "untrusted": no trusted root vouches for it), one changed after signing. They
sit in a Windows 10 collection of real hives (``windows_helpers.stock_tree``) started by
services, Run keys, a scheduled task and the start-up folder written with hivex.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.windows.authenticode import inspect
from cranewatch.model import Finding, Severity
from test_forensics_windows import STS07
from windows_helpers import (
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_SZ,
    build_pe,
    make_test_ca,
    set_values,
    sign_pe,
    stock_tree,
    tamper,
    task_xml,
    write,
)

CS = "ControlSet001\\Services"
RUN = "Microsoft\\Windows\\CurrentVersion\\Run"


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("pe")
    ca = make_test_ca(work / "ca")
    plain = build_pe(work / "plain.exe", "crane sync")
    masquerade = build_pe(work / "svc.exe", "crane svc", company="Microsoft Corporation", original="svchost.exe")
    signed = sign_pe(plain, work / "signed.exe", ca)
    broken = tamper(sign_pe(plain, work / "broken.exe", ca), "crane sync")
    return {"plain": plain, "signed": signed, "broken": broken, "masquerade": sign_pe(masquerade, work / "ms.exe", ca),
            "unsigned-ms": masquerade}


def _tree(shared: Path, root: Path, programs: dict[str, Path], implants: bool) -> Path:
    stock_tree(shared, root)
    config = root / "Windows/System32/config"

    def place(kind: str, path: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(programs[kind], root / path)

    # The trap: a vendor's service in Program Files, signed by the vendor's own CA.
    place("signed", "Program Files/Crane Vendor/agent.exe")
    values = [
        (f"{CS}\\CraneAgent", "ImagePath", REG_EXPAND_SZ, '"C:\\Program Files\\Crane Vendor\\agent.exe" -service'),
        (f"{CS}\\CraneAgent", "Start", REG_DWORD, 2),
    ]
    software = []
    if implants:
        place("plain", "ProgramData/CraneSync/cranesync.exe")
        place("masquerade", "Windows/System32/cmssvc.exe")
        place("unsigned-ms", "Users/Public/svchost.exe")
        place("broken", "Users/cms/AppData/Roaming/Vendor/update.exe")
        place("signed", "ProgramData/Tools/health.exe")
        place("plain", "Windows/System32/disabled.exe")
        place("plain", "ProgramData/Microsoft/Windows/Start Menu/Programs/StartUp/helper.exe")
        values += [
            (f"{CS}\\CraneSync", "ImagePath", REG_EXPAND_SZ, "C:\\ProgramData\\CraneSync\\cranesync.exe"),
            (f"{CS}\\CraneSync", "Start", REG_DWORD, 2),
            (f"{CS}\\CmsSvc", "ImagePath", REG_EXPAND_SZ, "%SystemRoot%\\System32\\cmssvc.exe"),
            (f"{CS}\\CmsSvc", "Start", REG_DWORD, 2),
            (f"{CS}\\Disabled", "ImagePath", REG_EXPAND_SZ, "C:\\ProgramData\\CraneSync\\cranesync.exe --old"),
            (f"{CS}\\Disabled", "Start", REG_DWORD, 4),
        ]
        software += [(RUN, "Host", REG_SZ, "C:\\Users\\Public\\svchost.exe -k netsvcs")]
        set_values(root / "Users/cms/NTUSER.DAT", [
            (f"Software\\{RUN}", "VendorUpdate", REG_SZ, "%APPDATA%\\Vendor\\update.exe /silent"),
        ])
        write(root, "Windows/System32/Tasks/CraneHealthCheck", task_xml("C:\\ProgramData\\Tools\\health.exe", author="CMS"))
    set_values(config / "SYSTEM", values)
    if software:
        set_values(config / "SOFTWARE", software)
    return root


def _of(findings: tuple[Finding, ...], name: str) -> list[Finding]:
    return [f for f in findings if f.rule == "windows.program-signature" and f.title.startswith(name + ",")]


def test_signatures_are_read_from_real_programs(programs: dict[str, Path]) -> None:
    plain = inspect(programs["plain"].read_bytes())
    assert plain.status == "unsigned" and plain.kind == "program"
    signed = inspect(programs["signed"].read_bytes())
    assert (signed.status, signed.signer, signed.issuer) == ("untrusted", "Crane Vendor GmbH", "Crane Test Root CA")
    broken = inspect(programs["broken"].read_bytes())
    assert broken.status == "broken" and "invalid digest" in broken.detail
    ms = inspect(programs["masquerade"].read_bytes())
    assert (ms.company, ms.original_name, ms.signer) == ("Microsoft Corporation", "svchost.exe", "Crane Vendor GmbH")
    assert inspect(b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode.").status == "not-pe"
    assert inspect(b"#!/bin/sh\n").status == "not-pe"


def test_started_programs_are_judged_by_signature_and_place(shared_data: Path, tmp_path: Path,
                                                            programs: dict[str, Path]) -> None:
    tree = _tree(shared_data, tmp_path / "C", programs, implants=True)
    findings = scan_image(tree, workers=1, policy=STS07).findings
    expected = {
        "cranesync.exe": (Severity.HIGH, "unsigned and lies in a folder any user can write"),
        "cmssvc.exe": (Severity.HIGH, "claims to be Microsoft's (svchost.exe) but is signed by Crane Vendor GmbH"),
        "svchost.exe": (Severity.HIGH, "claims to be Microsoft's (svchost.exe) but is unsigned"),
        "update.exe": (Severity.CRITICAL, "carries a broken signature of Crane Vendor GmbH"),
        "health.exe": (Severity.HIGH, "signed by Crane Vendor GmbH, a certificate from Crane Test Root CA"),
        "helper.exe": (Severity.HIGH, "unsigned and lies in a folder any user can write"),
        "agent.exe": (Severity.LOW, "signed by Crane Vendor GmbH"),
    }
    for name, (severity, words) in expected.items():
        (found,) = _of(findings, name)
        assert found.severity == severity, (name, found.title)
        assert words in found.title, (name, found.title)
    (sync,) = _of(findings, "cranesync.exe")
    assert sync.evidence[0].path == "ProgramData/CraneSync/cranesync.exe"
    assert sync.evidence[0].values["started_by"] == ["service CraneSync"]  # not the disabled service
    assert sync.evidence[0].values["status"] == "unsigned"
    (update,) = _of(findings, "update.exe")
    assert update.evidence[0].values["started_by"] == [
        "HKU\\cms\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\VendorUpdate"]
    assert update.category == "backdoor"
    assert not _of(findings, "disabled.exe")


def test_a_signed_vendor_service_is_no_alarm(shared_data: Path, tmp_path: Path, programs: dict[str, Path]) -> None:
    tree = _tree(shared_data, tmp_path / "C", programs, implants=False)
    result = scan_image(tree, workers=1, policy=STS07)
    assert [(f.rule, f.title) for f in result.findings if f.severity >= Severity.HIGH] == []
    assert result.warnings == ()


def test_microsofts_name_on_an_unverified_chain_is_medium(tmp_path: Path) -> None:
    """A certificate issued to "Microsoft Corporation" by a CA no one trusts: not proof of a forgery
    (an expired certificate without a timestamp looks the same offline), not proof of Microsoft."""
    from cranewatch.forensics.windows.authenticode import PeInfo
    from cranewatch.forensics.windows.programs import _judge, _Started

    info = inspect(sign_pe(build_pe(tmp_path / "a.exe", "x"), tmp_path / "s.exe",
                           make_test_ca(tmp_path / "ca", signer="Microsoft Corporation")).read_bytes())
    assert (info.status, info.signer) == ("untrusted", "Microsoft Corporation")

    class _Ctx:
        def finding(self, **kw: object) -> dict[str, object]:
            return kw

    class _Win:
        ctx = _Ctx()

    item = _Started("Windows/System32/x.exe", "c:\\windows\\system32\\x.exe", ["service X"], ["x.exe"], True)
    judged = _judge(_Win(), item, info)  # type: ignore[arg-type]
    assert judged is not None and judged["severity"] == Severity.MEDIUM  # type: ignore[index]
    other = PeInfo("untrusted", "Crane Vendor GmbH", "Crane Test Root CA")
    assert _judge(_Win(), item, other)["severity"] == Severity.HIGH  # type: ignore[arg-type,index]


def test_a_hostile_program_is_a_located_problem_and_the_others_are_judged(
        shared_data: Path, tmp_path: Path, programs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import cranewatch.forensics.windows.programs as module

    tree = _tree(shared_data, tmp_path / "C", programs, implants=True)
    real = module.inspect

    def fragile(data: bytes, *catalogs):  # type: ignore[no-untyped-def]
        if data == programs["broken"].read_bytes():
            raise ValueError("a parser met bytes it did not expect")
        return real(data, *catalogs)

    monkeypatch.setattr(module, "inspect", fragile)
    result = scan_image(tree, workers=1, policy=STS07)
    assert not _of(result.findings, "update.exe")
    assert _of(result.findings, "cranesync.exe") and _of(result.findings, "health.exe")
    assert any("Users/cms/AppData/Roaming/Vendor/update.exe: program not read as a PE" in w for w in result.warnings)


def test_damaged_signed_programs_never_break_the_reader(programs: dict[str, Path]) -> None:
    """Bounded fuzzing (fixed seed, 150 cases): bytes flipped and files cut in a signed program
    give a status (mostly "broken"), never an exception."""
    import random

    base = programs["signed"].read_bytes()
    rng = random.Random(16)
    seen = set()
    for _ in range(150):
        data = bytearray(base)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        seen.add(inspect(bytes(data)).status)
    assert seen <= {"broken", "not-pe", "unsigned", "untrusted"}
    assert "broken" in seen
