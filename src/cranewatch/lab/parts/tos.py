"""Terminal operating system: takes the OCR events, sends the next work order to the CMS.

A paho-mqtt subscriber on ``terminal/cranes/STS-07/ocr``; for each event it POSTs a work
order (the next container for this crane) to ``http://<cms>:8080/workorders`` and every
10 s reads ``/status``: the plain HTTP the TOS and CMS speak.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import urllib.request

import paho.mqtt.client as mqtt

from cranewatch.lab.iso6346 import random_container
from cranewatch.lab.parts.common import setup_part, stopping

TOPIC = "terminal/cranes/STS-07/ocr"
STATUS_INTERVAL = 10.0


def send(url: str, body: dict[str, object] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "TOS-Navis/7.2"})
    with urllib.request.urlopen(request, timeout=3) as reply:
        reply.read()
        return int(reply.status)


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.tos")
    parser.add_argument("--broker", default="10.20.0.6")
    parser.add_argument("--cms", default="10.20.7.30")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    log = setup_part("tos")
    rng = random.Random(args.seed * 31 + 5)
    events: queue.Queue[dict[str, object]] = queue.Queue()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object,
                   properties: object) -> None:
        client.subscribe(TOPIC, qos=1)

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            events.put(json.loads(message.payload))
        except ValueError:
            log.warning("not JSON on %s", message.topic)

    mqttc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tos-sts07")
    mqttc.on_connect = on_connect
    mqttc.on_message = on_message
    mqttc.connect(args.broker, 1883, keepalive=30)
    mqttc.loop_start()
    base = f"http://{args.cms}:8080"
    while not stopping.is_set():
        try:
            event = events.get(timeout=STATUS_INTERVAL)
        except queue.Empty:
            event = None
        try:
            if event is None:
                send(f"{base}/status")
                continue
            log.info("ocr event %s %s", event.get("container"), event.get("move"))
            order = {"crane": "STS-07", "container": random_container(rng),
                     "move": event.get("move"), "after": event.get("container")}
            status = send(f"{base}/workorders", order)
            log.info("work order %s -> %d", order["container"], status)
        except OSError as exc:
            log.warning("CMS unreachable: %s", exc)
    mqttc.loop_stop()
    mqttc.disconnect()


if __name__ == "__main__":
    main()
