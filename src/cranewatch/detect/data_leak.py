"""data-leak: container numbers (ISO 6346, check digit verified), UN/LOCODEs and OCR events in
clear text to a destination not allowed to receive them (T0882 Theft of Operational
Information, T0802 Automated Collection).

Looked for in HTTP URLs and bodies, MQTT topics and payloads, DNS names (also hex/base32/
base64-encoded labels) and raw TCP/UDP payloads, inside gzip and zlib streams too. Who may receive container data comes from
the profile (``[data] container_receivers``), else from the baseline (hosts that received it
in normal operation); without either only outside destinations are judged. Container data in
DNS names is always a leak: resolvers forward names to whoever owns the domain.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cranewatch.detect.base import Context, Incidents, Verdict, endpoint, make_finding
from cranewatch.detect.content import (
    ContainerData,
    find_container_data,
    find_container_data_deep,
    inflated,
)
from cranewatch.detect.facts import DnsQuery, HttpRequest, MqttPublish, Payload
from cranewatch.model import Finding, Severity

VERDICT = Verdict(
    rule="data-leak",
    category="data-leak",
    severity=Severity.HIGH,
    technique=("T0882", "T0802"),
    remedy="Container and cargo data must reach the TOS path only. Find the process on the "
    "sending host that copies it (OCR software, a script, an implant), stop it, and tell the "
    "terminal's security officer which containers were exposed.",
)
EXCERPT = 120


def may_receive(ctx: Context, dst: str) -> bool | None:
    """Whether ``dst`` may receive container data; None when nothing says."""
    if ctx.profile is not None and ctx.profile.data_receivers:
        return ctx.profile.may_receive_container_data(dst)
    if ctx.baseline is not None:
        return dst in ctx.baseline.container_receivers
    if ctx.is_outside(dst):
        return False
    return None


def describe(found: ContainerData) -> dict[str, Any]:
    return {"containers": list(found.containers), "locodes": list(found.locodes),
            "ocr_event": found.ocr_event, "encoding": found.encoding}


class DataLeak:
    name: ClassVar[str] = "data-leak"
    accepts: ClassVar[tuple[type, ...]] = (HttpRequest, MqttPublish, DnsQuery, Payload)

    def __init__(self) -> None:
        self.incidents = Incidents()

    def observe(self, fact: Any, ctx: Context) -> None:
        if isinstance(fact, DnsQuery):
            found = find_container_data_deep(fact.name.encode())
            if found:
                self._report(fact, "dns", found, fact.name, fact.src, fact.dst, fact.dport or 53)
            return
        if isinstance(fact, Payload):
            # the direction the bytes went decides who received them
            src, dst = (fact.src, fact.dst) if fact.from_client else (fact.dst, fact.src)
            port = fact.dport if fact.from_client else fact.sport
        else:
            src, dst, port = fact.src, fact.dst, fact.dport
        if may_receive(ctx, dst) is not False:
            return  # first: most traffic goes where it may, and its text need not be built
        if isinstance(fact, HttpRequest):
            channel = "http"
            text = f"{fact.method} {fact.uri} Host: {fact.host or ''}\n".encode() + fact.body
        elif isinstance(fact, MqttPublish):
            channel = "mqtt"
            text = fact.topic.encode() + b"\n" + fact.payload
        elif isinstance(fact, Payload):
            channel = fact.transport
            text = fact.data
        else:
            return
        found = find_container_data(text)
        if not found and channel != "mqtt":
            found = find_container_data_deep(text[:4096])
        elif not found and isinstance(fact, MqttPublish) and inflated(fact.payload) is not None:
            found = find_container_data_deep(fact.payload[:4096])  # a compressed batch of events
        if found:
            self._report(fact, channel, found, text[:EXCERPT].decode("utf-8", "replace"), src, dst, port)

    def _report(self, fact: Any, channel: str, found: ContainerData, excerpt: str,
                src: str, dst: str, port: int) -> None:
        values = describe(found)
        values["channel"] = channel
        values["port"] = port
        if channel == "dns":
            values["names"] = [excerpt]
        self.incidents.add((src, dst, channel), fact, values, excerpt=excerpt)

    def finish(self, ctx: Context) -> list[Finding]:
        findings = []
        for key, inc in self.incidents.items():
            src, dst, channel = key
            outside = ctx.is_outside(dst)
            containers = inc.values.get("containers", [])
            what = "OCR events" if inc.values.get("ocr_event") else "container numbers"
            where = "outside host" if outside else "host"
            title = (f"{what} ({len(containers)} container(s), e.g. {containers[0] if containers else '?'}) "
                     f"sent by {ctx.host_name(src)} over {channel.upper()} to {where} {ctx.host_name(dst)}")
            if channel == "dns":
                title = (f"container numbers encoded in DNS names ({inc.values.get('encoding')}) "
                         f"queried by {ctx.host_name(src)} via {ctx.host_name(dst)}")
            severity = Severity.CRITICAL if outside or channel == "dns" else Severity.HIGH
            findings.append(make_finding(ctx, VERDICT, key, inc, title, src,
                                         endpoint(dst, inc.values.get("port")), severity))
        return findings
