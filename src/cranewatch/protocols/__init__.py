"""Protocol decoders: one module per protocol, pure functions from bytes to typed events.

Each module declares itself once (``registry.ProtocolSpec``: decoders, ethertypes, event
adapters, batch path, Zeek mapping) and ``registry.register_protocol`` puts it in the
registry; ``load_all()`` imports every protocol module (``registry.PROTOCOL_MODULES``).
"""

from __future__ import annotations

from cranewatch.protocols.registry import PROTOCOL_MODULES, load_all

__all__ = ["PROTOCOL_MODULES", "load_all"]
