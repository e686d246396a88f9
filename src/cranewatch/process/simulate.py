"""Honest (and tampered) crane signals from the lab's physics model, without a network.

For tests and benchmarks: the lab's 10 Hz model of STS-07 (``cranewatch.lab.physics``) runs
cycle by cycle, a master "polls" every ``poll_cycles`` cycles, and the registers become a
``SignalFrame`` exactly as the register map reads them off the wire. ``setpoints`` and
``panel`` callbacks let a test write the PLC's holding registers and coils or press the
operator's buttons at given times; ``tamper`` applies one of the lab's compromised-PLC faults
(``cranewatch.lab.faults.Tamper``) to what the PLC serves.

``write_capture`` turns the same polls into a real Modbus/TCP capture (classic pcap: the CMS
polling the PLC over one TCP connection), so the whole path from packets to findings can be
tested and checked against tshark.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cranewatch.lab.faults import Tamper
from cranewatch.lab.physics import DT, Crane, Panel, ProcessImage, Setpoints
from cranewatch.lab.registers import STS07_REGISTER_MAP
from cranewatch.process.signals import RegisterMap, SignalFrame

ImageHook = Callable[[float, ProcessImage], ProcessImage]
SETPOINT_NAMES = ("overload_limit", "wind_stop_limit", "hoist_speed_limit", "trolley_speed_limit")


@dataclass(frozen=True, slots=True)
class Polls:
    """Raw register words as a master read them: one row per poll, one column per address."""

    t: np.ndarray
    tables: dict[str, np.ndarray]  # "IR" (n, 12), "DI" (n, 7), "HR" (n, 4), "CO" (n, 2)

    def frame(self, register_map: RegisterMap = STS07_REGISTER_MAP) -> SignalFrame:
        columns: dict[str, np.ndarray] = {}
        for table, block in self.tables.items():
            for address in range(block.shape[1]):
                spec = register_map.lookup(table, address)
                if spec is not None:
                    columns[spec.name] = spec.engineering(block[:, address])
        return SignalFrame.from_columns(self.t, columns, register_map, source="simulated")


def run_polls(seconds: float, *, seed: int = 7, start: float = 1_700_000_000.0,
              poll_cycles: int = 2, setpoints: Callable[[float], Setpoints] | None = None,
              panel: Callable[[float], Panel] | None = None, tamper: Tamper | None = None,
              hook: ImageHook | None = None, drift: float = 0.0) -> Polls:
    """Run the crane for ``seconds``; return what a master polling every ``poll_cycles`` read.

    ``drift``: the chance that a poll lands one PLC cycle late, as a real master's timer
    drifts against the PLC's scan (0: every poll on the same phase).
    """
    crane = Crane(seed=seed)
    cycles = round(seconds / DT)
    polls = (cycles + poll_cycles - 1) // poll_cycles
    late = np.random.default_rng(seed).random(polls) < drift
    poll_at = set((np.arange(polls) * poll_cycles + late).tolist())
    ir = np.zeros((polls, 12), dtype=np.int64)
    di = np.zeros((polls, 7), dtype=np.int64)
    hr = np.zeros((polls, 4), dtype=np.int64)
    co = np.zeros((polls, 2), dtype=np.int64)
    t = np.zeros(polls)
    row = 0
    for cycle in range(cycles):
        now = start + cycle * DT
        sp = setpoints(now) if setpoints else Setpoints()
        image = crane.step(sp, panel(now) if panel else Panel())
        if tamper is not None:
            image = tamper.apply(image, now)
        if hook is not None:
            image = hook(now, image)
        if cycle in poll_at and row < polls:
            t[row] = now
            ir[row] = image.ir
            di[row] = image.di
            values = asdict(sp)
            hr[row] = [values[n] for n in SETPOINT_NAMES]
            co[row] = [int(sp.safety_bypass), int(sp.fault_reset)]
            row += 1
    return Polls(t[:row], {"IR": ir[:row], "DI": di[:row], "HR": hr[:row], "CO": co[:row]})


def simulate(seconds: float, *, register_map: RegisterMap = STS07_REGISTER_MAP,
             **options: object) -> SignalFrame:
    """``run_polls`` as an aligned ``SignalFrame`` (what the checks see)."""
    return run_polls(seconds, **options).frame(register_map)  # type: ignore[arg-type]


# --- a real capture of the same polls --------------------------------------------------------

CMS = ("10.20.7.30", b"\x02\x00\x00\x07\x00\x30", 49152)
PLC = ("10.20.7.10", b"\x02\x00\x00\x07\x00\x10", 502)
READS = (("IR", 4, 12), ("DI", 2, 7), ("HR", 3, 4), ("CO", 1, 2))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(text: str) -> bytes:
    return bytes(int(p) for p in text.split("."))


def _packet(src: tuple[str, bytes, int], dst: tuple[str, bytes, int], seq: int, ack: int,
            flags: int, payload: bytes, ident: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", src[2], dst[2], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, 65535, 0, 0)
    pseudo = _ip(src[0]) + _ip(dst[0]) + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    csum = _checksum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 6, 0,
                     _ip(src[0]), _ip(dst[0]))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return dst[1] + src[1] + b"\x08\x00" + ip + tcp + payload


def _pdu(function: int, count: int, words: np.ndarray) -> bytes:
    if function in (1, 2):
        value = 0
        for i, bit in enumerate(words[:count]):
            value |= (1 if bit else 0) << i
        data = value.to_bytes((count + 7) // 8, "little")
    else:
        data = struct.pack(f"!{count}H", *[int(w) & 0xFFFF for w in words[:count]])
    return bytes([function, len(data)]) + data


def write_capture(polls: Polls, path: str | Path) -> int:
    """Write the polls as a classic pcap of Modbus/TCP (CMS → PLC, unit 1); returns packets."""
    records: list[tuple[float, bytes]] = []
    t0 = float(polls.t[0]) - 0.01
    c_seq, s_seq, ident = 1000, 5000, 1
    records.append((t0, _packet(CMS, PLC, c_seq, 0, 0x02, b"", ident)))
    records.append((t0 + 0.0002, _packet(PLC, CMS, s_seq, c_seq + 1, 0x12, b"", ident)))
    records.append((t0 + 0.0004, _packet(CMS, PLC, c_seq + 1, s_seq + 1, 0x10, b"", ident)))
    c_seq, s_seq = c_seq + 1, s_seq + 1
    transaction = 0
    for row, t in enumerate(polls.t.tolist()):
        for i, (table, function, count) in enumerate(READS):
            transaction = (transaction + 1) & 0xFFFF
            request = struct.pack("!HHHBBHH", transaction, 0, 6, 1, function, 0, count)
            pdu = _pdu(function, count, polls.tables[table][row])
            response = struct.pack("!HHHB", transaction, 0, len(pdu) + 1, 1) + pdu
            when = t + 0.004 * i
            ident += 1
            records.append((when, _packet(CMS, PLC, c_seq, s_seq, 0x18, request, ident)))
            records.append((when + 0.001, _packet(PLC, CMS, s_seq, c_seq + len(request), 0x18,
                                                  response, ident)))
            c_seq += len(request)
            s_seq += len(response)
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for when, frame in records:
            sec = int(when)
            usec = round((when - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            out.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            out.write(frame)
    return len(records)
