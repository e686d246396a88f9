"""Connections announced by another session (FTP's data channels), for detectors that must not
take them for conversations of their own.

``ExpectedConnections`` keeps the ``facts.ExpectedConnection``s a run has seen, bounded, and
answers for a finished connection which announcing session it belongs to: the one whose
announcement names its client, server and server port, made before it began and not yet
expired. Each detector that needs the answer keeps one, fed the same facts.
"""

from __future__ import annotations

from collections import OrderedDict

from cranewatch.detect.facts import Conversation, ExpectedConnection

MAX_EXPECTED = 4096  # announcements kept (oldest forgotten first)
EARLY = 1.0  # seconds a connection may seem to begin before its announcement (clock skew of taps)

Session = tuple[str, str, int]  # the announcing session: client, server, server port


class ExpectedConnections:
    """Announced connections by (who connects, to whom, to which port)."""

    def __init__(self, limit: int = MAX_EXPECTED) -> None:
        self.limit = limit
        self._by_target: OrderedDict[tuple[str, str, str, int], list[ExpectedConnection]] = OrderedDict()
        self._count = 0

    def add(self, expected: ExpectedConnection) -> None:
        keys = [(expected.transport, expected.orig, expected.resp, expected.resp_port)]
        if expected.mode == "passive" and expected.third_party is not None:
            # a passive client may ignore the address the server named and connect to the
            # server it already talks to (curl does by default)
            keys.append((expected.transport, expected.orig, expected.dst, expected.resp_port))
        for key in keys:
            self._by_target.setdefault(key, []).append(expected)
            self._by_target.move_to_end(key)
            self._count += 1
        while self._count > self.limit and self._by_target:
            _, dropped = self._by_target.popitem(last=False)
            self._count -= len(dropped)

    def __len__(self) -> int:
        return self._count

    def announced(self, conv: Conversation) -> ExpectedConnection | None:
        """The announcement ``conv`` answers (the latest that covers its start), or None."""
        return self.announced_at(conv.transport, conv.src, conv.dst, conv.dport, conv.ts)

    def announced_at(self, transport: str, src: str, dst: str, dport: int,
                     ts: float) -> ExpectedConnection | None:
        """The announcement a connection from ``src`` to ``dst``:``dport`` begun at ``ts``
        answers, or None."""
        candidates = self._by_target.get((transport, src, dst, dport))
        if not candidates:
            return None
        for expected in reversed(candidates):
            if expected.ts - EARLY <= ts <= expected.until:
                return expected
        return None


def session_of(expected: ExpectedConnection) -> Session:
    """The announcing session's (client, server, server port)."""
    return expected.src, expected.dst, expected.dport
