"""OCR controller: watches the spreader, reads the container number, reports each move.

It polls discrete inputs 0–1 (twistlocks_locked, spreader_landed) every 500 ms. When the
spreader lifts a locked container off (locked, no longer landed) it reads input registers
1–8 once for weight and position, "reads" the container number from its cameras, and
publishes one JSON event to the terminal broker (topic ``terminal/cranes/STS-07/ocr``,
QoS 1). Every event also goes to its local journal (JSON lines), which starts with the last
moves of the shift; that journal is what exfiltration malware on the controller reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from pymodbus.client import ModbusTcpClient

from cranewatch.lab.iso6346 import LOCODES, random_container
from cranewatch.lab.parts.common import dns_query, setup_part, stopping
from cranewatch.lab.physics import TROLLEY_SHIP_FROM, bay_of_gantry, from_u16, ship_row, ship_tier

TOPIC = "terminal/cranes/STS-07/ocr"
HOME_PORT = "USORF"
POLL_INTERVAL = 0.5
HISTORY_MOVES = 6


def cargo_event(rng: random.Random, discharge: bool, weight_t: float, bay: int, row: int,
                tier: int, when: dt.datetime) -> dict[str, object]:
    """One move as the OCR reports it (the contract of ``crane-reference.md``)."""
    foreign = rng.choice([code for code in LOCODES if code != HOME_PORT])
    return {
        "crane": "STS-07",
        "container": random_container(rng),
        "move": "discharge" if discharge else "load",
        "bay": f"{bay:02d}", "row": f"{row:02d}", "tier": f"{tier:02d}",
        "pol": foreign if discharge else HOME_PORT,
        "pod": HOME_PORT if discharge else foreign,
        "weight_kg": round(weight_t * 1000 / 100) * 100,
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "confidence": round(rng.uniform(0.91, 0.995), 3),
    }


def shift_history(rng: random.Random, now: dt.datetime) -> list[dict[str, object]]:
    """The moves of the shift before the lab started (about one every 2 minutes)."""
    events = []
    for back in range(HISTORY_MOVES, 0, -1):
        when = now - dt.timedelta(seconds=back * 120 + rng.uniform(-20, 20))
        events.append(cargo_event(rng, rng.random() < 0.6, rng.uniform(3, 40),
                                  rng.randrange(1, 60, 2), rng.randrange(0, 10),
                                  rng.choice((82, 84, 86, 6, 8)), when))
    return events


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.ocr")
    parser.add_argument("--plc", default="10.20.7.10")
    parser.add_argument("--dns", default="10.20.0.8")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args()
    log = setup_part("ocr")
    rng = random.Random(args.seed * 1_000_003)
    with args.journal.open("w") as journal:
        for event in shift_history(rng, dt.datetime.now(dt.UTC)):
            journal.write(json.dumps(event) + "\n")

    broker = (dns_query("mqtt.terminal.lan", args.dns) or ["10.20.0.6"])[0]
    mqttc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sts07-ocr")
    mqttc.connect(broker, 1883, keepalive=30)
    mqttc.loop_start()
    plc = ModbusTcpClient(args.plc, port=502, timeout=1)
    was_carrying = False  # a lift already under way when we start is reported too
    next_poll = time.monotonic()
    while not stopping.is_set():
        if not plc.connected:
            plc.connect()
        try:
            bits = plc.read_discrete_inputs(0, count=2, device_id=1)
        except Exception as exc:
            log.warning("poll failed: %s", exc)
            plc.close()
            stopping.wait(1.0)
            continue
        if not bits.isError():
            locked, landed = bits.bits[0], bits.bits[1]
            carrying = locked and not landed
            if carrying and not was_carrying:
                regs = plc.read_input_registers(1, count=8, device_id=1)
                if not regs.isError():
                    report(regs.registers, rng, mqttc, args.journal, log)
            was_carrying = carrying
        next_poll += POLL_INTERVAL
        stopping.wait(max(0.0, next_poll - time.monotonic()))
    mqttc.loop_stop()
    mqttc.disconnect()
    plc.close()


def report(registers: Sequence[int], rng: random.Random, mqttc: mqtt.Client, journal: Path,
           log: logging.Logger) -> None:
    """Publish the move of a container that has just been lifted."""
    load, height = registers[0], from_u16(registers[1])
    trolley, gantry = registers[4], registers[6]
    discharge = trolley >= TROLLEY_SHIP_FROM  # picked on the ship side
    if discharge:
        row, tier = ship_row(trolley), ship_tier(height)
    else:  # loading: the stowage slot comes from the plan, not from where it was picked
        row, tier = rng.randrange(0, 10), rng.choice((82, 84, 86, 6, 8))
    event = cargo_event(rng, discharge, load / 10.0, bay_of_gantry(gantry), row, tier,
                        dt.datetime.now(dt.UTC))
    payload = json.dumps(event)
    mqttc.publish(TOPIC, payload, qos=1)
    with journal.open("a") as out:
        out.write(payload + "\n")
    log.info("published %s", payload)


if __name__ == "__main__":
    main()
