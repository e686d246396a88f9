"""hidden-uplink: off-subnet traffic that bypasses the gateway's MAC; rogue DHCP/gateways."""

from __future__ import annotations

from cranewatch.detect.facts import Binding, DhcpMessage
from cranewatch.model import Severity
from cranewatch.profile import parse_profile
from detect_helpers import (
    CMS,
    GW,
    GW_MAC,
    MODEM_MAC,
    OCR,
    REPO,
    T0,
    TOS,
    conv,
    learn,
    normal_crane,
    run,
    sts07,
)


def test_ssh_from_outside_through_a_modem_is_found() -> None:
    baseline = learn(normal_crane())
    assert baseline.gateways == {GW_MAC}
    inbound = conv("198.51.100.80", CMS, 22, T0 + 60, client_macs=(MODEM_MAC,),
                   server_macs=("02:00:00:00:07:30",), protocol="ssh")
    findings = run([inbound], profile=sts07(), baseline=baseline)
    (f,) = [f for f in findings if f.category == "hidden-uplink"]
    # without knowing the modem's own address, the crane host stands for the LAN end
    assert f.severity == Severity.CRITICAL and f.src == CMS and f.dst == "198.51.100.80"
    assert f.evidence[0].values["next_hop_mac"] == MODEM_MAC
    # once ARP names the modem, the finding says who it is
    arp = Binding(ts=T0, frame=2, src="10.20.7.199", dst=CMS, source="t.pcap", ip="10.20.7.199",
                  mac=MODEM_MAC)
    (g,) = [f for f in run([arp, inbound], profile=sts07(), baseline=baseline)
            if f.category == "hidden-uplink"]
    assert g.src == "10.20.7.199" and g.dst == "198.51.100.80" and g.title.startswith("10.20.7.199 carries")
    assert set(f.technique) == {"T0883", "T0884"}


def test_traffic_through_the_sanctioned_gateway_is_quiet() -> None:
    baseline = learn(normal_crane())
    via_gateway = conv(OCR, TOS, 8080, T0, client_macs=("02:00:00:00:07:20",), server_macs=(GW_MAC,))
    assert [f for f in run([via_gateway], profile=sts07(), baseline=baseline)
            if f.category == "hidden-uplink"] == []


def test_gateway_mac_from_the_profile_or_from_arp() -> None:
    text = (REPO / "profiles" / "sts-07.toml").read_text().replace(
        'ip = "10.20.7.254"\n', f'ip = "10.20.7.254"\nmac = "{GW_MAC}"\n', 1)
    profile = parse_profile(text)
    out = conv(OCR, "203.0.113.9", 443, T0, client_macs=("02:00:00:00:07:20",), server_macs=(MODEM_MAC,))
    assert [f.category for f in run([out], profile=profile) if f.category == "hidden-uplink"] == ["hidden-uplink"]
    # No MAC in the profile, no baseline: the ARP binding of the gateway's IP names it.
    arp = Binding(ts=T0 - 1, frame=1, src=GW, dst=OCR, source="t.pcap", ip=GW, mac=GW_MAC)
    assert [f.category for f in run([arp, out], profile=sts07()) if f.category == "hidden-uplink"] == ["hidden-uplink"]
    # Without any way to know the gateway, the rule does not guess.
    assert [f for f in run([out], profile=sts07()) if f.category == "hidden-uplink"] == []


def test_generalises_to_other_subnets() -> None:
    other = parse_profile("""
[crane]
id = "STS-12"
[zones]
crane = ["192.168.12.0/24"]
terminal = ["172.20.0.0/16"]
[gateway]
ip = "192.168.12.1"
mac = "aa:bb:cc:00:00:01"
""")
    sneaky = conv("192.168.12.40", "172.20.1.1", 502, T0, client_macs=("aa:bb:cc:00:00:40",),
                  server_macs=("aa:bb:cc:00:00:99",))
    (f,) = [f for f in run([sneaky], profile=other, crane="STS-12") if f.category == "hidden-uplink"]
    assert "terminal host" in f.title


def test_new_dhcp_server_and_default_gateway() -> None:
    baseline = learn(normal_crane())
    offer = DhcpMessage(ts=T0, frame=4, src="10.20.7.200", dst="255.255.255.255", sport=67, dport=68,
                        source="t.pcap", message_type="offer", client_mac="02:00:00:00:07:21",
                        server_ip="10.20.7.200", router=("10.20.7.200",))
    findings = [f for f in run([offer], profile=sts07(), baseline=baseline) if f.category == "hidden-uplink"]
    titles = sorted(f.title for f in findings)
    assert len(findings) == 2
    assert titles[0].startswith("DHCP server 10.20.7.200 hands out default gateway 10.20.7.200")
    assert titles[1] == "New DHCP server 10.20.7.200 on the crane LAN"
    # the foreign gateway the lease hands out is where the clients' traffic would go
    assert sorted((f.src, f.dst or "") for f in findings) == [("10.20.7.200", ""), ("10.20.7.200", "10.20.7.200")]


def test_profile_only_learns_the_gateway_from_terminal_traffic() -> None:
    to_terminal = conv(OCR, TOS, 8080, T0, client_macs=("02:00:00:00:07:20",), server_macs=(GW_MAC,))
    via_modem = conv(CMS, "198.51.100.80", 443, T0 + 5, client_macs=("02:00:00:00:07:30",),
                     server_macs=(MODEM_MAC,))
    via_gateway = conv(CMS, "198.51.100.81", 443, T0 + 6, client_macs=("02:00:00:00:07:30",),
                       server_macs=(GW_MAC,))
    found = [f for f in run([to_terminal, via_modem, via_gateway], profile=sts07()) if f.category == "hidden-uplink"]
    assert [(f.src, f.dst) for f in found] == [(CMS, "198.51.100.80")]
    assert found[0].evidence[0].values["sanctioned_gateway_macs"] == [GW_MAC]
