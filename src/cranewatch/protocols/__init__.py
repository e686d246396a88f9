"""Protocol decoders: one module per protocol, pure functions from bytes to typed events.

``load_all()`` imports every protocol module so that its ``register()`` call puts its
DecoderSpec in ``base.REGISTRY``; the pipeline calls it once before dispatching flows.
"""

from __future__ import annotations

import importlib

# Order does not matter for dispatch (probes carry priorities); it is the import order.
PROTOCOL_MODULES = (
    "modbus", "s7comm", "enip", "opcua", "mqtt", "dns", "tls", "http", "ssh", "remote",
    "dhcp", "arp", "ntp", "syslog",
)


def load_all() -> None:
    """Import every protocol module present so their decoders are registered (idempotent)."""
    for name in PROTOCOL_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # a real missing dependency inside the module, not an absent module
