"""Prefetch (``Windows/Prefetch/*.pf``): versions 17, 23, 26 and 30, Windows 10's MAM compression.

No licence-compatible real sample was available (see ``prefetch_build``): the files are laid out
field by field from libscca's documentation of the format, and Windows 10's are compressed by
wimlib (XPRESS Huffman, an independent compressor). Every file is read back by libscca's
``sccainfo`` (Debian's libscca-utils, an independent reader of layout and compression) and the
values the product reads are compared with what sccainfo prints, and with what was written.
The Windows 10 1903 case is 106,776 bytes, two 64 KiB blocks: its stream is two wimlib chunks
end to end, which sccainfo reads as one stream (the move to the second block's table is checked);
a back-reference from one block into the previous one, which Windows' writer may emit, has no
independent writer here and is not tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.forensics.api import scan_image
from cranewatch.forensics.windows.prefetch import PrefetchError, parse
from cranewatch.model import Finding, Severity
from prefetch_build import PfSpec, build, mam
from test_forensics_windows import STS07
from windows_helpers import PF_C, STOCK_PREFETCH, stock_tree, write

C = "\\VOLUME{01d8a1b2c3d4e5f6-5a6b7c8d}"
USB = "\\VOLUME{01da0b1c2d3e4f50-1234abcd}"
# 2026-11-03 02:14:07 UTC and 2026-11-02 21:00:00 UTC as FILETIMEs, worked out by hand:
# (seconds since 1970 + 11644473600) * 10^7
RUN1 = (1_793_672_047 + 11_644_473_600) * 10_000_000
RUN2 = (1_793_653_200 + 11_644_473_600) * 10_000_000
SYSTEM_FILES = [f"{C}\\WINDOWS\\SYSTEM32\\NTDLL.DLL", f"{C}\\WINDOWS\\SYSTEM32\\KERNEL32.DLL",
                f"{C}\\WINDOWS\\SYSTEM32\\KERNELBASE.DLL"]


def sccainfo(path: Path) -> dict[str, object]:
    """What libscca's sccainfo reads from ``path``."""
    tool = shutil.which("sccainfo")
    if tool is None:
        pytest.fail("sccainfo is not installed: run scripts/install-deps.sh (libscca-utils)")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=True).stdout
    return {
        "version": int(re.search(r"Format version\s*: (\d+)", out).group(1)),  # type: ignore[union-attr]
        "executable": re.search(r"Executable filename\s*: (.*)", out).group(1).strip(),  # type: ignore[union-attr]
        "run_count": int(re.search(r"Run count\s*: (\d+)", out).group(1)),  # type: ignore[union-attr]
        "last_runs": re.findall(r"Last run time:[^:]*: (\w{3} \d+, \d{4} [\d:.]+) UTC", out),
        "files": re.findall(r"Filename: \d+\s*: (.*)", out),
        "devices": re.findall(r"Device path\s*: (.*)", out),
        "serials": [int(s, 16) for s in re.findall(r"Serial number\s*: 0x([0-9a-f]+)", out)],
    }


def _sccainfo_time(iso: str) -> str:
    """'2026-11-03T02:14:07Z' as sccainfo prints it: 'Nov 03, 2026 02:14:07.000000000'."""
    from datetime import datetime

    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%b %d, %Y %H:%M:%S.") + f"{moment.microsecond:06d}000"


CASES = {
    "v17": (PfSpec(17, "NC.EXE", 3, [RUN1], [*SYSTEM_FILES, f"{C}\\TEMP\\NC.EXE"]), False),
    "v23": (PfSpec(23, "PSEXEC.EXE", 1, [RUN1], [*SYSTEM_FILES, f"{C}\\USERS\\CMS\\DOWNLOADS\\PSEXEC.EXE"]), False),
    "v26": (PfSpec(26, "ANYDESK.EXE", 12, [RUN1, RUN2], [*SYSTEM_FILES, f"{C}\\PROGRAMDATA\\ANYDESK.EXE"]), False),
    "v30": (PfSpec(30, "CHISEL.EXE", 2, [RUN1, RUN2], [*SYSTEM_FILES, f"{C}\\USERS\\PUBLIC\\CHISEL.EXE"]), False),
    "v30-mam": (PfSpec(30, "TEAMVIEWER.EXE", 40, [RUN1, RUN2],
                       [*SYSTEM_FILES, f"{C}\\PROGRAM FILES (X86)\\TEAMVIEWER\\TEAMVIEWER.EXE"]), True),
    "v30-1903-mam": (PfSpec(30, "MIMIKATZ.EXE", 5, [RUN1], [*SYSTEM_FILES, f"{USB}\\TOOLS\\X64\\MIMIKATZ.EXE"]
                            + [f"{C}\\WINDOWS\\SYSTEM32\\LIB{i:04d}.DLL" for i in range(600)], variant2=True), True),
}


def pf_bytes(work: Path, spec: PfSpec, compressed: bool) -> bytes:
    raw = build(spec)
    return mam(work, raw) if compressed else raw


@pytest.mark.parametrize("case", list(CASES))
def test_each_version_reads_as_sccainfo_reads_it(tmp_path: Path, case: str) -> None:
    spec, compressed = CASES[case]
    data = pf_bytes(tmp_path, spec, compressed)
    path = tmp_path / f"{spec.executable}-1A2B3C4D.pf"
    path.write_bytes(data)
    seen = sccainfo(path)
    pf = parse(data)
    assert pf.compressed is compressed and (data[:4] == b"MAM\x04") is compressed
    if case == "v30-1903-mam":
        assert len(build(spec)) == 106_776  # two blocks
    assert (pf.version, pf.executable, pf.run_count) == (seen["version"], seen["executable"], seen["run_count"])
    assert (pf.version, pf.executable, pf.run_count) == (spec.version, spec.executable, spec.run_count)
    assert list(pf.files) == seen["files"] == spec.files
    assert [v.device for v in pf.volumes] == seen["devices"] == [spec.volume]
    assert [v.serial for v in pf.volumes] == seen["serials"] == [spec.serial]
    assert [_sccainfo_time(t) for t in pf.last_runs] == seen["last_runs"][: len(pf.last_runs)]
    expected = {RUN1: "2026-11-03T02:14:07Z", RUN2: "2026-11-02T21:00:00Z"}
    assert list(pf.last_runs) == [expected[t] for t in (spec.last_runs if spec.version >= 26 else spec.last_runs[:1])]
    assert pf.program == spec.files[-1] if case != "v30-1903-mam" else pf.program == spec.files[3]


def test_damaged_files_raise_located_prefetch_errors(tmp_path: Path) -> None:
    spec, _ = CASES["v30-mam"]
    data = pf_bytes(tmp_path, spec, True)
    with pytest.raises(PrefetchError, match="MAM data not decompressed"):
        parse(data[: len(data) // 2])
    with pytest.raises(PrefetchError, match="no SCCA signature"):
        parse(b"XXXX" * 40)
    with pytest.raises(PrefetchError, match="not XPRESS Huffman"):
        parse(b"MAM\x02" + data[4:])
    with pytest.raises(PrefetchError, match="format version 31"):
        parse(b"\x1f\x00\x00\x00" + build(spec)[4:])
    raw = bytearray(build(spec))
    raw[84 + 16: 84 + 20] = (len(raw) - 4).to_bytes(4, "little")  # filename strings run past the end
    with pytest.raises(PrefetchError, match="past the end"):
        parse(bytes(raw))


def _prefetch_tree(shared: Path, root: Path) -> Path:
    stock_tree(shared, root)
    folder = "Windows/Prefetch"
    for name, (spec, compressed) in CASES.items():
        write(root, f"{folder}/{spec.executable}-{name.upper()}.pf", pf_bytes(root.parent, spec, compressed))
    write(root, f"{folder}/BROKEN.EXE-00000000.pf", b"MAM\x04" + (5000).to_bytes(4, "little") + bytes(30))
    return root


@pytest.fixture(scope="module")
def scanned(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Finding, ...], tuple[str, ...]]:
    root = _prefetch_tree(shared_data, tmp_path_factory.mktemp("pf") / "C")
    result = scan_image(root, workers=1, policy=STS07)
    return result.findings, result.warnings


def _by(findings: tuple[Finding, ...], rule: str) -> dict[str, Finding]:
    return {f.title.split(" ran ")[0]: f for f in findings if f.rule == rule}


def test_prefetch_findings(scanned: tuple[tuple[Finding, ...], tuple[str, ...]]) -> None:
    findings, _ = scanned
    tools = _by(findings, "windows.prefetch-tool")
    assert {t: f.severity for t, f in tools.items()} == {"AnyDesk": Severity.HIGH, "TeamViewer": Severity.HIGH}
    attacks = _by(findings, "windows.prefetch-attack-tool")
    assert {t: f.severity for t, f in attacks.items()} == {
        "netcat": Severity.HIGH, "PsExec": Severity.MEDIUM, "tunnel (chisel, ligolo, socat)": Severity.HIGH,
        "Mimikatz": Severity.HIGH}
    evidence = attacks["netcat"].evidence[0]
    assert evidence.path == "Windows/Prefetch/NC.EXE-V17.pf"
    assert evidence.values["program"] == "C:\\TEMP\\NC.EXE"  # the volume holding \WINDOWS is C:
    assert evidence.values["run_count"] == 3 and evidence.values["last_run"] == "2026-11-03T02:14:07Z"
    assert evidence.values["files"][0] == "C:\\WINDOWS\\SYSTEM32\\NTDLL.DLL"
    chisel = attacks["tunnel (chisel, ligolo, socat)"]
    assert chisel.evidence[0].values["last_runs"] == ["2026-11-03T02:14:07Z", "2026-11-02T21:00:00Z"]
    assert chisel.last_seen == 1_793_672_047.0
    (removable,) = [f for f in findings if f.rule == "windows.prefetch-removable"]
    assert [e.values["program"] for e in removable.evidence] == [f"{USB}\\TOOLS\\X64\\MIMIKATZ.EXE"]
    (user,) = [f for f in findings if f.rule == "windows.prefetch-user-folder"]
    assert user.severity == Severity.LOW
    assert sorted(e.values["program"] for e in user.evidence) == [
        "C:\\PROGRAMDATA\\ANYDESK.EXE", "C:\\TEMP\\NC.EXE", "C:\\USERS\\CMS\\APPDATA\\LOCAL\\MICROSOFT\\ONEDRIVE\\ONEDRIVE.EXE",
        "C:\\USERS\\CMS\\DOWNLOADS\\PSEXEC.EXE", "C:\\USERS\\PUBLIC\\CHISEL.EXE"]  # OneDrive: the stock tree's


def test_a_damaged_prefetch_file_is_a_located_problem(scanned: tuple[tuple[Finding, ...], tuple[str, ...]]) -> None:
    _, warnings = scanned
    (problem,) = [w for w in warnings if "Prefetch" in w]
    assert "Windows/Prefetch/BROKEN.EXE-00000000.pf: Prefetch file not read (MAM data not decompressed" in problem


def test_stock_programs_give_nothing_high(shared_data: Path, tmp_path: Path) -> None:
    """svchost, explorer, Defender's engine and the user's OneDrive, as Windows 10 prefetches them
    (``windows_helpers.STOCK_PREFETCH``, in every stock tree)."""
    root = stock_tree(shared_data, tmp_path / "C")
    assert len(list((root / "Windows/Prefetch").glob("*.pf"))) == len(STOCK_PREFETCH) == 4
    result = scan_image(root, workers=1, policy=STS07)
    assert [(f.rule, f.title) for f in result.findings if f.severity >= Severity.HIGH] == []
    prefetch = [f for f in result.findings if f.rule.startswith("windows.prefetch")]
    # only OneDrive, from the user's AppData: a low note, not an alarm
    assert [(f.rule, f.severity, [e.values["program"] for e in f.evidence]) for f in prefetch] == [
        ("windows.prefetch-user-folder", Severity.LOW, [STOCK_PREFETCH["ONEDRIVE.EXE"].replace(PF_C, "C:")])]
    assert result.warnings == ()


_SEED_RAW = build(CASES["v30"][0])
_SEED_17 = build(CASES["v17"][0])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from([_SEED_RAW, _SEED_17]),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=12),
       st.integers(0, 2200))
def test_mangled_prefetch_files_raise_prefetch_errors_only(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed[:cut] if cut < len(seed) else seed)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        pf = parse(bytes(data))
    except PrefetchError:
        return
    assert pf.version in (17, 23, 26, 30) and len(pf.volumes) <= 64


@pytest.fixture(scope="module")
def compressed_seed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return pf_bytes(tmp_path_factory.mktemp("seed"), *CASES["v30-1903-mam"])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=8))
def test_mangled_compressed_files_raise_prefetch_errors_only(compressed_seed: bytes,
                                                             flips: list[tuple[int, int]]) -> None:
    data = bytearray(compressed_seed)
    for at, value in flips:
        data[at % len(data)] = value
    try:
        parse(bytes(data))
    except PrefetchError:
        pass
