"""Bounded fuzzing of the input sources (issue 19): pcap, pcapng, gzip containers, Zeek logs.

Hypothesis drives structured damage (lengths, timestamps, resolutions, compressed bytes, field
values and headers of Zeek logs); a fixed-seed pass of ``benchmarks/fuzz/fuzz_sources.py``'s
mutators runs over the shared captures and Zeek logs. Whatever the input, the reader and the Zeek
source may only report problems (``CranewatchError`` with a location), never raise anything else,
never hand out a packet past its block or a timestamp that wrapped. The long run (10,000+ cases
a family) is ``benchmarks/fuzz/fuzz_sources.py``; its counts are in ``benchmarks/fuzz/sources.md``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import math
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cranewatch.errors import CranewatchError, InputError
from cranewatch.sources.input_files import DamagedCompression, GunzipStream
from cranewatch.sources.pcap import MAX_PACKET_BYTES, open_capture
from cranewatch.sources.pcapwrite import LINKTYPE_ETHERNET, PCAPNG_EPB, PcapngWriter, PcapWriter
from cranewatch.sources.zeek import read_zeek

T0 = 1_700_000_000_123_456_789
PACKETS = [bytes([i]) * (20 + 7 * i) for i in range(12)]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZER = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz" / "fuzz_sources.py"
LENGTHS = st.sampled_from([0, 1, 15, 16, 31, 32, 0x7F, 0xFFFF, 0x40001, 0x7FFFFFFF, 0x80000000,
                           0xFFFFFFF0, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)


def _pcap() -> bytes:
    out = io.BytesIO()
    writer = PcapWriter(out)
    for i, data in enumerate(PACKETS):
        writer.write(T0 + i * 1000, data)
    return out.getvalue()


def _pcapng() -> bytes:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET, tsresol=9)
    writer.interface(LINKTYPE_ETHERNET, tsresol=6)
    for i, data in enumerate(PACKETS):
        if i % 5 == 4:
            writer.write_simple(data)
        else:
            writer.write(i % 2, T0 + i * 1000, data)
    return out.getvalue()


def read_checked(path: Path) -> list[CranewatchError]:
    """Read every batch, checking what a batch promises; the reader's warnings (or the error)."""
    try:
        with open_capture(path) as reader:
            frames = 0
            for batch in reader.batches(5):
                n = len(batch)
                assert batch.frame.tolist() == list(range(frames + 1, frames + n + 1))
                frames += n
                if n:
                    assert int(batch.caplen.min()) >= 0 and int(batch.caplen.max()) <= MAX_PACKET_BYTES
                    assert int(batch.offset.min()) >= 0
                    assert int((batch.offset + batch.caplen).max()) <= len(batch.buf)
                    assert int(batch.origlen.min()) >= 0  # 4 GB claims do not wrap negative
                    assert all(math.isfinite(t) for t in batch.ts.tolist())
            problems: list[CranewatchError] = [*reader.warnings, *reader.notes]
    except CranewatchError as exc:  # not a capture at all: said with the file
        problems = [exc]
    for problem in problems:
        assert problem.location is not None and problem.location.file == str(path)
    return problems


def _overwrite(data: bytes, writes: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for at, value in writes:
        at %= len(out)
        out[at : at + 4] = struct.pack("<I", value)
    return bytes(out[:cut] if cut is not None else out)


@FUZZ
@given(writes=st.lists(st.tuples(st.integers(0, 10_000), LENGTHS), max_size=4),
       cut=st.none() | st.integers(0, 2000))
def test_pcap_with_hostile_fields_only_reports_problems(tmp_path: Path, writes: list[tuple[int, int]],
                                                        cut: int | None) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(_overwrite(_pcap(), writes, cut))
    read_checked(path)


@FUZZ
@given(writes=st.lists(st.tuples(st.integers(0, 10_000), LENGTHS), max_size=4),
       cut=st.none() | st.integers(0, 2000), tsresol=st.integers(0, 255))
def test_pcapng_with_hostile_fields_only_reports_problems(tmp_path: Path, writes: list[tuple[int, int]],
                                                          cut: int | None, tsresol: int) -> None:
    data = bytearray(_pcapng())
    idb = 28  # the first IDB follows the 28-byte SHB; its if_tsresol value sits at +20
    data[idb + 20] = tsresol
    path = tmp_path / "x.pcapng"
    path.write_bytes(_overwrite(bytes(data), writes, cut))
    read_checked(path)


@FUZZ
@given(high=st.integers(0, 2**32 - 1), low=st.integers(0, 2**32 - 1), tsresol=st.integers(0, 255),
       offset=st.integers(-(2**40), 2**40))
def test_pcapng_timestamps_never_wrap(tmp_path: Path, high: int, low: int, tsresol: int, offset: int) -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out)
    writer.interface(LINKTYPE_ETHERNET, tsresol=tsresol & 0x8F if tsresol & 0x80 else tsresol % 20,
                     tsoffset=offset)
    writer.block(PCAPNG_EPB, struct.pack("<IIIII", 0, high, low, 4, 4) + b"abcd")
    path = tmp_path / "ts.pcapng"
    path.write_bytes(out.getvalue())
    problems = read_checked(path)
    with open_capture(path) as reader:
        (batch,) = list(reader.batches())
    ts = int(batch.ts_ns[0])
    units = 2 ** (tsresol & 0x0F) if tsresol & 0x80 else 10 ** (tsresol % 20)
    kept_offset = offset if abs(offset) < 2**32 else 0  # larger: a corrupt option, ignored
    ticks_ns = ((high << 32) | low) * 10**9 // units
    if ticks_ns + max(kept_offset, 0) * 10**9 < 2**63 - 10**9:
        assert ts == ticks_ns + kept_offset * 10**9  # hand-computed with Python integers
    else:
        assert 2**63 - 10**9 - 2**32 * 10**9 <= ts <= 2**63 - 1  # clipped, never negative
        assert any("2262" in p.message for p in problems)


@pytest.mark.skipif(shutil.which("gzip") is None, reason="needs gzip(1)")
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.none() | st.integers(0, 10**6))
def test_gzip_damage_gives_what_gzip_dc_gives_up_to_the_damage(tmp_path: Path, damage: list[tuple[int, int]],
                                                               cut: int | None) -> None:
    packed = bytearray(gzip.compress(_pcap() * 20))
    for at, flip in damage:
        packed[at % len(packed)] ^= flip
    data = bytes(packed[: cut % len(packed)] if cut is not None else packed)
    stream = GunzipStream(io.BytesIO(data), "x.gz")
    parts = []
    try:
        while part := stream.read(777):
            parts.append(part)
    except DamagedCompression as exc:
        assert exc.location is not None and exc.location.offset is not None
    reference = subprocess.run(["gzip", "-dc"], input=data, capture_output=True, check=False).stdout
    inflated = b"".join(parts)
    assert reference.startswith(inflated) or data[:2] != b"\x1f\x8b" or not reference
    path = tmp_path / "x.pcap.gz"
    path.write_bytes(data)
    read_checked(path)


# --------------------------------------------------------------------------- Zeek logs

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "query", "qtype",
          "rcode", "answers", "TTLs", "server_name", "host", "method", "uri", "status_code", "func",
          "topic", "payload", "client", "server", "version", "duration", "orig_bytes", "cert_chain_fps")
LOGS = ("conn", "dns", "ssl", "http", "ssh", "modbus", "modbus_detailed", "s7comm", "enip", "cip",
        "mqtt_connect", "mqtt_publish", "mqtt_subscribe", "x509")


def _check_zeek(paths: list[Path]) -> None:
    try:
        result = read_zeek(paths)
    except InputError as exc:  # only for inputs that are not there or not regular files
        raise AssertionError(f"read_zeek raised {exc}") from exc
    for event in result.events:
        assert isinstance(event.src, str) and isinstance(event.dst, str)
        assert 0 <= event.sport <= 0xFFFF and 0 <= event.dport <= 0xFFFF
        assert math.isfinite(event.ts) and 0 <= event.ts < 2**34
    for problem in result.problems:
        assert problem.location is not None and problem.location.file is not None


@FUZZ
@given(log=st.sampled_from(LOGS),
       records=st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8), min_size=1, max_size=5))
def test_zeek_json_with_any_values_only_reports_problems(tmp_path: Path, log: str,
                                                         records: list[dict[str, Any]]) -> None:
    path = tmp_path / f"{log}.log"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _check_zeek([path])


TSV_TEXT = st.lists(st.sampled_from([*list("\\x0aF9-,()ém é\x00\t"), "(empty)", "\\x", "\\xZZ", "\\xc3"]),
                   max_size=8).map("".join)


@FUZZ
@given(log=st.sampled_from(LOGS), separator=TSV_TEXT, set_separator=TSV_TEXT,
       types=st.lists(st.sampled_from(["time", "port", "count", "string", "vector[string]", "set[count]",
                                       "vector[vector[", "bool", "interval", "table[", "addr"]), min_size=6, max_size=6),
       rows=st.lists(st.lists(TSV_TEXT, min_size=5, max_size=7), min_size=1, max_size=4))
def test_zeek_tsv_with_any_headers_and_values_only_reports_problems(
        tmp_path: Path, log: str, separator: str, set_separator: str, types: list[str], rows: list[list[str]]) -> None:
    fields = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    header = (f"#separator {separator}\n#set_separator\t{set_separator}\n#path\t{log}\n"
              f"#fields\t{chr(9).join(fields)}\n#types\t{chr(9).join(types)}\n")
    path = tmp_path / f"{log}.log"
    path.write_text(header + "".join("\t".join(row) + "\n" for row in rows), encoding="utf-8", errors="surrogatepass")
    _check_zeek([path])


# --------------------------------------------------------------------------- seeded mutation pass


def _fuzzer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_sources", FUZZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_sources"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("family", "cases"), [("pcap", 150), ("pcapng", 150), ("gzip", 150), ("zeek", 60)])
def test_mutated_shared_inputs_exit_0_or_3_never_70(tmp_path: Path, shared_data: Path, family: str,
                                                    cases: int) -> None:
    fuzz = _fuzzer()
    seeds: dict[str, Any] = fuzz.capture_seeds(limit=32 * 1024)
    seeds["bombs"] = []
    seeds["zeek"] = fuzz.zeek_seeds() if family == "zeek" else []
    assert seeds[family], f"no {family} seeds in {shared_data}"
    outcomes: dict[str, int] = {}
    for index in range(cases):
        path = fuzz.make_case(family, index, 19, seeds, tmp_path)
        code, detail = fuzz.run_case(family, path)
        assert code in ("0", "3"), f"case {index} ({path}): {detail}"
        outcomes[code] = outcomes.get(code, 0) + 1
    assert outcomes.get("3", 0) > cases // 10  # the mutations do damage: problems are found


def test_fuzzer_makes_cases_deterministically(tmp_path: Path) -> None:
    fuzz = _fuzzer()
    rng = random.Random(3)
    seed = _pcap()
    assert fuzz.mutate_bytes(seed, random.Random(3), [seed]) == fuzz.mutate_bytes(seed, random.Random(3), [seed])
    assert fuzz.mutate_bytes(seed, rng, [seed]) != seed or fuzz.mutate_bytes(seed, rng, [seed]) != seed
