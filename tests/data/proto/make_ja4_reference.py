"""Regenerates ja4plus-reference.json: JA4 of every ClientHello per capture, by ja4plus.

Run in a separate venv (``pip install ja4plus==1.4.0``, which brings scapy), from the repo:
``python tests/data/proto/make_ja4_reference.py ../shared/data/pcaps <capture paths relative to it>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ja4plus import JA4Fingerprinter  # type: ignore[import-not-found]
from scapy.all import rdpcap  # type: ignore[import-not-found]

root = Path(sys.argv[1])
fingerprints: dict[str, list[tuple[int, str]]] = {}
for capture in sys.argv[2:]:
    try:
        packets = rdpcap(str(root / capture))
    except Exception:  # captures scapy cannot read are left out of the reference
        continue
    fingerprinter = JA4Fingerprinter()
    for frame, packet in enumerate(packets, 1):
        ja4 = fingerprinter.process_packet(packet)
        if ja4:
            fingerprints.setdefault(capture, []).append((frame, ja4))
reference = Path(__file__).with_name("ja4plus-reference.json")
document = json.loads(reference.read_text()) if reference.exists() else {}
document["fingerprints"] = dict(sorted(fingerprints.items()))
reference.write_text(json.dumps(document, indent=1) + "\n")
