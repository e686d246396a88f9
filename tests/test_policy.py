"""Ruleset generation: nft accepts every ruleset, output is deterministic and says what it allows."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from cranewatch.errors import ProfileError, UsageError
from cranewatch.policy import check_ruleset, inservice_ruleset, quarantine_ruleset, table_name
from cranewatch.profile import load_profile, parse_profile
from cranewatch.store import Crane

REPO = Path(__file__).resolve().parents[1]
STS07 = REPO / "profiles" / "sts-07.toml"

VENDOR_PROFILE = """
[crane]
id = "STS-11"
[zones]
crane = ["10.30.11.0/24", "10.30.111.0/24"]
terminal = ["10.30.0.0/24"]
[gateway]
ip = "10.30.11.254"
[[hosts]]
name = "cms"
role = "cms"
ip = "10.30.11.30"
[[hosts]]
name = "spreader-io"
role = "plc"
ip = "10.30.111.12"
[[hosts]]
name = "historian"
role = "historian"
ip = "10.30.0.40"
[[allow]]
client = "cms"
server = "historian"
protocol = "opcua"
port = 4840
[[allow]]
client = "*"
server = "cms"
protocol = "https"
port = 443
[[allow]]
client = "cms"
server = "spreader-io"
protocol = "modbus"
port = 502
[[allow]]
client = "zone:crane"
server = "10.30.11.254"
protocol = "dhcp"
port = 67
[[outside]]
name = "vendor-diagnostics"
address = "203.0.113.40/32"
port = 443
protocol = "https"
clients = ["cms"]
"""


def rule_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if " counter name " in line]


def test_quarantine_ruleset_allows_only_the_station() -> None:
    text = quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24")
    assert "table inet cranewatch_sts_07 {" in text
    assert rule_lines(text) == [
        'ip saddr @analysis_station ip daddr @crane_zone counter name "station_to_crane" accept',
        'ip saddr @crane_zone ip daddr @analysis_station counter name "crane_to_station" accept',
        'ip saddr @crane_zone log prefix "cw STS-07 quarantine drop: " counter name "drop_from_crane" drop',
        'ip daddr @crane_zone log prefix "cw STS-07 quarantine drop: " counter name "drop_to_crane" drop',
        'ip saddr @crane_zone log prefix "cw STS-07 quarantine drop: " counter name "drop_crane_to_firewall" drop',
        'ip daddr @crane_zone log prefix "cw STS-07 quarantine drop: " counter name "drop_firewall_to_crane" drop',
    ]
    assert "elements = { 10.20.7.0/24 }" in text and "elements = { 10.20.0.100 }" in text


def test_quarantine_takes_the_zone_of_a_registered_crane_and_an_interface() -> None:
    crane = Crane("STS-07", zone="10.20.7.0/24")
    text = quarantine_ruleset(crane, ["10.20.0.101", "10.20.0.100"], interface="crane0")
    assert "elements = { 10.20.0.100, 10.20.0.101 }" in text  # sorted
    assert 'iifname "crane0" log prefix "cw STS-07 quarantine drop: " counter name "drop_from_crane" drop' in text
    with pytest.raises(UsageError, match="no crane zone"):
        quarantine_ruleset(replace(crane, zone=None), "10.20.0.100")
    with pytest.raises(UsageError, match="analysis station"):
        quarantine_ruleset(crane, [])
    with pytest.raises(UsageError, match="not an address"):
        quarantine_ruleset(crane, "station.example")
    # a zone of both families gets one set per family (an nft set holds one address type)
    mixed = quarantine_ruleset(crane, "10.20.0.100", zone=["10.20.7.0/24", "fd00:7::/64"])
    assert "set crane_zone_ip6 {\n\t\ttype ipv6_addr" in mixed
    with pytest.raises(UsageError, match="one IP family"):
        quarantine_ruleset(crane, "fd00::100")


def test_inservice_ruleset_from_the_sts07_profile() -> None:
    text = inservice_ruleset(load_profile(STS07))
    accepts = [line for line in rule_lines(text) if line.startswith("ip saddr") and line.endswith("accept")]
    # checked by hand against the [[allow]] tables of profiles/sts-07.toml: only those crossing
    # the crane zone's border; cms/ocr → plc and ocr → cameras stay inside the crane LAN
    assert accepts == [
        'ip saddr 10.20.0.50 ip daddr 10.20.7.10 tcp dport 502 counter name "allow_ews_plc_modbus_502" accept',
        'ip saddr 10.20.0.50 ip daddr 10.20.7.10 tcp dport 102 counter name "allow_ews_plc_s7comm_102" accept',
        'ip saddr 10.20.7.20 ip daddr 10.20.0.6 tcp dport 1883 counter name "allow_ocr_broker_mqtt_1883" accept',
        'ip saddr 10.20.0.5 ip daddr 10.20.7.30 tcp dport 8080 counter name "allow_tos_cms_http_8080" accept',
        'ip saddr 10.20.7.0/24 ip daddr 10.20.0.8 meta l4proto { tcp, udp } th dport 53 counter name "allow_zone_crane_dns_53" accept',
        'ip saddr 10.20.7.0/24 ip daddr 10.20.0.7 udp dport 123 counter name "allow_zone_crane_ntp_123" accept',
        'ip saddr 10.20.7.0/24 ip daddr 10.20.0.9 udp dport 514 counter name "allow_zone_crane_syslog_514" accept',
    ]
    assert "ocr → camera-1 rtsp/554: inside the crane LAN" in text
    assert 'ct state established,related counter name "return_traffic" accept' in text
    assert text.count('log prefix "cw STS-07 in-service drop: "') == 5


def test_inservice_handles_any_clients_outside_endpoints_and_the_firewall_itself() -> None:
    text = inservice_ruleset(parse_profile(VENDOR_PROFILE, "sts-11.toml"))
    lines = rule_lines(text)
    assert 'ip daddr 10.30.11.30 tcp dport 443 counter name "allow_cms_https_443" accept' in lines
    assert ('ip saddr 10.30.11.30 ip daddr 203.0.113.40 tcp dport 443 '
            'counter name "outside_vendor_diagnostics_443" accept') in lines
    assert ('ip saddr 10.30.11.30 ip daddr 10.30.0.40 tcp dport 4840 '
            'counter name "allow_cms_historian_opcua_4840" accept') in lines
    # DHCP to the gateway is traffic to the firewall itself: an input-chain rule
    input_chain = text.split("chain input")[1].split("chain output")[0]
    assert 'udp dport 67 counter name "allow_zone_crane_10_30_11_254_dhcp_67" accept' in input_chain
    assert "elements = { 10.30.11.0/24, 10.30.111.0/24 }" in text
    # two crane subnets: traffic between them is routed by the crane's firewall, so it needs a rule
    assert ('ip saddr 10.30.11.30 ip daddr 10.30.111.12 tcp dport 502 '
            'counter name "allow_cms_spreader_io_modbus_502" accept') in lines
    assert "table inet cranewatch_sts_11" in text


def test_baseline_communications_are_added_once() -> None:
    profile = load_profile(STS07)
    baseline = {"communications": [
        {"client": "10.20.7.30", "server": "10.20.0.9", "protocol": "syslog", "port": 6514, "transport": "tcp"},
        {"client": "10.20.0.50", "server": "10.20.7.10", "protocol": "modbus", "port": 502},  # in the profile
        {"client": "10.20.7.10", "server": "10.20.7.30", "protocol": "modbus", "port": 502},  # inside
    ]}
    text = inservice_ruleset(profile, baseline)
    assert ('ip saddr 10.20.7.30 ip daddr 10.20.0.9 tcp dport 6514 '
            'counter name "learned_10_20_7_30_10_20_0_9_syslog_6514" accept') in text
    assert text.count("tcp dport 502 counter") == 1
    assert "and a learned baseline" in text


def test_output_is_deterministic_whatever_the_order_of_the_profile() -> None:
    profile = load_profile(STS07)
    shuffled = list(profile.allowed)
    random.Random(7).shuffle(shuffled)
    again = replace(profile, allowed=tuple(shuffled))
    # the comments carry profile line numbers, which travel with each allowance
    assert inservice_ruleset(profile) == inservice_ruleset(again)
    assert quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24") == quarantine_ruleset(
        "STS-07", "10.20.0.100", zone="10.20.7.0/24")


def test_a_profile_without_a_crane_zone_is_refused() -> None:
    with pytest.raises(ProfileError, match="no crane zone"):
        inservice_ruleset(replace(load_profile(STS07), zones={}))


def test_table_names_are_nft_identifiers() -> None:
    assert table_name("STS-07") == "cranewatch_sts_07"
    assert re.fullmatch(r"cranewatch_[a-z0-9_]+", table_name("Kai 3 / STS.12"))


@pytest.mark.root
def test_nft_accepts_every_generated_ruleset(as_root: None) -> None:
    rulesets = [
        quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24"),
        quarantine_ruleset("STS-07", ["10.20.0.100", "10.20.0.128/28"], zone=["10.20.7.0/24", "10.20.17.0/24"],
                           interface="crane0"),
        quarantine_ruleset("STS-09", "fd00:20::100", zone="fd00:20:9::/64"),
        inservice_ruleset(load_profile(STS07)),
        inservice_ruleset(load_profile(STS07), interface="crane0"),
        inservice_ruleset(load_profile(STS07), {"communications": [
            {"client": "10.20.7.30", "server": "10.20.0.9", "protocol": "syslog", "port": 6514, "transport": "tcp"}]}),
        inservice_ruleset(parse_profile(VENDOR_PROFILE, "sts-11.toml")),
    ]
    for text in rulesets:
        check_ruleset(text)


@pytest.mark.root
def test_nft_check_reports_a_broken_ruleset(as_root: None) -> None:
    from cranewatch.errors import InputError
    broken = quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24").replace("drop\n", "dorp\n", 1)
    with pytest.raises(InputError, match="nft refuses the ruleset"):
        check_ruleset(broken)


def test_a_learned_baseline_object_adds_its_pairs() -> None:
    from cranewatch.baseline import Baseline

    learned = Baseline(
        pairs=frozenset({("10.20.7.30", "10.20.0.9", 6514), ("10.20.0.50", "10.20.7.10", 502)}),
        services=frozenset({("10.20.0.9", "tcp", 6514), ("10.20.7.10", "tcp", 502)}),
        protocols=frozenset({("10.20.7.10", 502, "modbus")}),
    )
    text = inservice_ruleset(load_profile(STS07), learned)
    assert rule_lines(text).count(
        'ip saddr 10.20.7.30 ip daddr 10.20.0.9 tcp dport 6514 counter name "learned_10_20_7_30_10_20_0_9_tcp_6514" accept'
    ) == 1
    assert text.count("tcp dport 502 counter") == 1  # the profile already allows the EWS poll


def test_cli_quarantine_and_policy_write_record_and_move_the_crane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cranewatch.cli import main
    from cranewatch.store import open_store

    db = str(tmp_path / "cw.db")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    out = tmp_path / "q.nft"
    assert main(["quarantine", "STS-07", "--station", "10.20.0.100", "--out", str(out), "--set-state",
                 "--by", "ana", "--db", db]) == 0
    assert out.read_text() == quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24")
    assert main(["policy", "STS-07", "--db", db]) == 0
    printed = capsys.readouterr().out
    assert 'counter name "allow_ocr_broker_mqtt_1883" accept' in printed
    with open_store(db) as store:
        crane = store.crane("STS-07")
        assert crane is not None and crane.state == "quarantined"
        assert store.history("STS-07")[-1].who == "ana"
        quarantine = store.latest_ruleset("STS-07", "quarantine")
        assert quarantine is not None and quarantine.text == out.read_text()
        latest = store.latest_ruleset("STS-07")
        assert latest is not None and latest.purpose == "in-service"
    assert main(["policy", "STS-08", "--db", db]) == 2
    assert "no registered profile" in capsys.readouterr().err


def test_python_api_quarantines_and_writes_the_allow_list(tmp_path: Path) -> None:
    from cranewatch.errors import StateError
    from cranewatch.fleet import import_fleet, inservice_policy, quarantine_crane, transition
    from cranewatch.store import open_store

    with open_store(tmp_path / "cw.db") as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml")
        stored = quarantine_crane(store, "STS-07", "10.20.0.100", out=tmp_path / "q.nft", by="ana")
        assert (tmp_path / "q.nft").read_text() == stored.text
        crane = store.crane("STS-07")
        assert crane is not None and crane.state == "quarantined"
        assert store.history("STS-07")[-1].why == (
            f"quarantine ruleset written to {tmp_path / 'q.nft'} (analysis station 10.20.0.100)")
        transition(store, "STS-07", "under-analysis", reason="scan")
        with pytest.raises(StateError, match="cannot go from under-analysis to quarantined"):
            quarantine_crane(store, "STS-07", "10.20.0.100", out=tmp_path / "again.nft")
        assert not (tmp_path / "again.nft").exists()
        allow = inservice_policy(store, "STS-07", baseline={"communications": []})
        assert 'counter name "allow_ews_plc_modbus_502" accept' in allow.text
        assert store.latest_ruleset("STS-07", "in-service") == allow


# -- rulesets that cannot be injected (issue 19, case 6) ---------------------------------------


@pytest.fixture
def nft() -> None:
    """``nft -c`` works here (installed, and root or CAP_NET_ADMIN); it loads nothing."""
    import shutil

    from cranewatch.errors import EnvironmentProblem

    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    try:
        check_ruleset("table inet cw_probe {\n}\n")
    except EnvironmentProblem as exc:
        pytest.skip(str(exc))


def structure_lines(text: str) -> list[str]:
    """The lines nft reads as statements (comments and blank lines dropped)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


INJECTED_INTERFACES = [
    'eth0" accept #',  # the red team's: every drop rule became an accept
    "eth0\nflush ruleset",  # a newline: `flush ruleset` at top level
    "abcdefghijklmnop",  # 16 characters: over IFNAMSIZ-1
    "eth0 accept", "eth/0", "eth0;", "", ".", "..", "eth0\\", "ëth0",
]


@pytest.mark.parametrize("interface", INJECTED_INTERFACES)
def test_interface_names_outside_nfts_grammar_are_refused(interface: str) -> None:
    with pytest.raises(UsageError, match="not an interface name"):
        quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24", interface=interface)
    with pytest.raises(UsageError, match="not an interface name"):
        inservice_ruleset(load_profile(STS07), interface=interface)


def test_longest_legal_interface_name_is_kept() -> None:
    text = quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24", interface="enp0s31f6.1007")
    assert 'iifname "enp0s31f6.1007" log prefix' in text
    assert 'oifname "abcdefghijklmno"' in quarantine_ruleset(
        "STS-07", "10.20.0.100", zone="10.20.7.0/24", interface="abcdefghijklmno")  # 15: allowed


def test_cli_refuses_an_injected_interface_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cranewatch.cli import main
    from cranewatch.store import open_store

    db = str(tmp_path / "cw.db")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    out = tmp_path / "q.nft"
    # before: exit 0 and `iifname "eth0" accept #" ... drop` in the file
    assert main(["quarantine", "STS-07", "--station", "10.20.0.100", "--interface", 'eth0" accept #',
                 "--out", str(out), "--db", db]) == 2
    assert "not an interface name" in capsys.readouterr().err
    assert not out.exists()
    with open_store(db) as store:
        assert store.latest_ruleset("STS-07") is None


def test_names_and_comments_from_a_profile_cannot_break_out_of_their_place() -> None:
    # the profile loader refuses control characters; the generator must hold even without it
    with pytest.raises(ProfileError, match=r"crane\.id: expected a string without control characters"):
        parse_profile(VENDOR_PROFILE.replace('id = "STS-11"', 'id = "STS-11\\nflush ruleset"'), "sts-11.toml")
    profile = replace(parse_profile(VENDOR_PROFILE, "sts-11.toml"), crane_id='STS-11\nflush ruleset "x')
    text = inservice_ruleset(profile)
    statements = structure_lines(text)
    assert not any(line.startswith("flush") for line in statements)
    assert "# cranewatch in-service allow-list for crane STS-11\\nflush ruleset \"x" in text
    assert 'log prefix "cw STS-11?flush ruleset ?x in-service drop: "' in text
    assert "table inet cranewatch_sts_11_flush_ruleset_x {" in text


def test_long_names_become_short_distinct_identifiers() -> None:
    from cranewatch.policy.nft import identifier

    a, b = identifier("allow", "x" * 300, "a"), identifier("allow", "x" * 300, "b")
    assert a != b and len(a) <= 63 and len(b) <= 63
    assert re.fullmatch(r"[a-z][a-z0-9_]*", a)
    assert identifier("7", "up") == "n_7_up"  # an nft identifier starts with a letter


def test_render_refuses_what_the_generators_must_never_emit() -> None:
    from cranewatch.policy.nft import Chain, Rule, Ruleset, render

    for bad in (Rule(('iifname "eth0" accept #"',), "drop", "x"), Rule(("ip saddr 1.2.3.4",), "accept\nflush ruleset"),
                Rule(("ip saddr 1.2.3.4\nflush ruleset",), "drop")):
        with pytest.raises(ValueError, match="unsafe"):
            render(Ruleset("cranewatch_x", (), (), (Chain("forward", "forward", (bad,)),)))


def test_mixed_family_stations_get_one_set_and_rule_per_family(nft: None) -> None:
    text = quarantine_ruleset("STS-07", ["10.20.0.100", "fd00:20::100"], zone=["10.20.7.0/24", "fd00:7::/64"])
    assert rule_lines(text)[:4] == [
        'ip saddr @analysis_station ip daddr @crane_zone counter name "station_to_crane" accept',
        'ip6 saddr @analysis_station_ip6 ip6 daddr @crane_zone_ip6 counter name "station_to_crane" accept',
        'ip saddr @crane_zone ip daddr @analysis_station counter name "crane_to_station" accept',
        'ip6 saddr @crane_zone_ip6 ip6 daddr @analysis_station_ip6 counter name "crane_to_station" accept',
    ]
    check_ruleset(text)  # before: "Could not resolve hostname: Address family ... not supported"
    # an IPv6 station beside an IPv4-only zone is declared but has nothing to reach
    check_ruleset(quarantine_ruleset("STS-07", ["10.20.0.100", "fd00:20::100"], zone="10.20.7.0/24"))


def test_inservice_with_a_dual_stack_crane_zone_is_accepted_by_nft(nft: None) -> None:
    profile = parse_profile(VENDOR_PROFILE.replace(
        'crane = ["10.30.11.0/24", "10.30.111.0/24"]', 'crane = ["10.30.11.0/24", "fd00:30:11::/64"]'
    ).replace('name = "historian"', 'name = "historian"\nzone = "terminal"').replace(
        'ip = "10.30.0.40"', 'ip = "fd00:30::40"'), "sts-11.toml")
    text = inservice_ruleset(profile)
    lines = rule_lines(text)
    assert 'ip6 saddr @crane_zone_ip6 ct state invalid log prefix "cw STS-11 in-service drop: " counter name "invalid_from_crane" drop' in lines
    # cms (IPv4) → historian (IPv6): no family fits both ends, so no rule rather than a broken one
    assert not any("allow_cms_historian" in line for line in lines)
    check_ruleset(text)


@pytest.mark.parametrize("station", ["0.0.0.0/0", "::/0", "0.0.0.0/1", "10.0.0.0/8", "fd00::/16"])
def test_a_station_wider_than_a_station_is_refused_without_force(station: str) -> None:
    zone = "fd00:7::/64" if ":" in station else "10.20.7.0/24"
    with pytest.raises(UsageError, match="--force"):
        quarantine_ruleset("STS-07", station, zone=zone)
    text = quarantine_ruleset("STS-07", station, zone=zone, force=True)
    assert f"# WARNING: analysis station {station} covers more than a station should (forced with --force)" in text
    assert f"--station {station} --force" in text


def test_small_station_networks_need_no_force() -> None:
    assert "WARNING" not in quarantine_ruleset("STS-07", ["10.20.0.0/16", "10.20.0.128/28"], zone="10.20.7.0/24")


def test_cli_station_0_0_0_0_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cranewatch.cli import main

    db = str(tmp_path / "cw.db")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    out = tmp_path / "q.nft"
    assert main(["quarantine", "STS-07", "--station", "0.0.0.0/0", "--out", str(out), "--db", db]) == 2
    assert "0.0.0.0/0 is a network, not a station" in capsys.readouterr().err and not out.exists()
    assert main(["quarantine", "STS-07", "--station", "0.0.0.0/0", "--force", "--out", str(out), "--db", db]) == 0
    assert "# WARNING: analysis station 0.0.0.0/0" in out.read_text()


def test_a_ruleset_nft_refuses_is_never_written(nft: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cranewatch.errors import InputError
    from cranewatch.fleet import import_fleet, quarantine_crane
    from cranewatch.store import open_store

    broken = quarantine_ruleset("STS-07", "10.20.0.100", zone="10.20.7.0/24").replace("drop\n", "dorp\n", 1)
    monkeypatch.setattr("cranewatch.fleet.isolation.quarantine_ruleset", lambda *a, **k: broken)
    with open_store(tmp_path / "cw.db") as store:
        import_fleet(store, REPO / "profiles" / "fleet-example.toml")
        with pytest.raises(InputError, match="nft refuses the ruleset"):
            quarantine_crane(store, "STS-07", "10.20.0.100", out=tmp_path / "q.nft")  # no check=True asked
        assert not (tmp_path / "q.nft").exists()
        assert store.latest_ruleset("STS-07") is None


def test_check_says_that_nft_accepted_the_ruleset(nft: None, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from cranewatch.cli import main

    db = str(tmp_path / "cw.db")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    capsys.readouterr()
    out = tmp_path / "q.nft"
    assert main(["quarantine", "STS-07", "--station", "10.20.0.100", "--out", str(out), "--check", "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"ruleset written to {out} (load with: nft -f {out})", "nft -c accepted the ruleset"]
    assert main(["policy", "STS-07", "--check", "--db", db]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# cranewatch in-service allow-list")  # stdout: the ruleset only
    assert captured.err == "nft -c accepted the ruleset\n"


def test_a_dollar_or_hash_in_a_crane_name_does_not_reach_a_quoted_string(nft: None) -> None:
    """Found by the fuzz test: nft expands `$name` even inside quotes ("unknown identifier")."""
    text = quarantine_ruleset("$STS #7", "10.20.0.100", zone="10.20.7.0/24")
    assert 'log prefix "cw ?STS ?7 quarantine drop: "' in text
    check_ruleset(text)


def test_overlapping_stations_or_zones_give_a_set_nft_accepts(nft: None) -> None:
    """Found by the fuzz test: `--station 0.0.0.0/0 --station 10.20.0.100` gave
    `elements = { 0.0.0.0/0, 10.20.0.100 }`, which nft refuses ("conflicting intervals")."""
    text = quarantine_ruleset("STS-07", ["0.0.0.0/0", "10.20.0.100"], zone=["10.20.7.0/24", "10.20.7.5"], force=True)
    assert "elements = { 0.0.0.0/0 }" in text and "elements = { 10.20.7.0/24 }" in text
    check_ruleset(text)


def test_policy_with_a_baseline_naming_a_host_by_name_is_a_located_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `ValueError: 'cms' does not appear to be an IPv4 or IPv6 network` (exit 70)."""
    import json

    from cranewatch.baseline import Baseline, save_baseline
    from cranewatch.cli import main

    path = tmp_path / "b.json"
    save_baseline(Baseline(pairs=frozenset({("10.20.7.30", "10.20.0.9", 514)})), path)
    data = json.loads(path.read_text())
    data["pairs"].append(["cms", "10.20.0.9", 514])
    path.write_text(json.dumps(data, indent=1))
    db = str(tmp_path / "cw.db")
    assert main(["fleet", "import", str(REPO / "profiles" / "fleet-example.toml"), "--db", db]) == 0
    capsys.readouterr()
    assert main(["policy", "STS-07", "--baseline", str(path), "--db", db]) == 3
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if '"pairs"' in text)
    assert f"{path}:{line}: pairs[1][0]: expected an IP address, got a string 'cms'" in capsys.readouterr().err


def test_learned_communications_other_than_tcp_or_udp_get_no_rule() -> None:
    """Found by the long fuzz run: a baseline service with transport 'ééé' reached the ruleset
    (render refused it: exit 70); a learned GRE pair ('ip47') gave 'ip47 dport 0'."""
    from cranewatch.baseline import Baseline

    learned = Baseline(
        pairs=frozenset({("10.20.7.30", "10.20.0.9", 514), ("10.20.7.30", "203.0.113.9", 0),
                         ("10.20.7.30", "10.20.0.6", 1883)}),
        services=frozenset({("10.20.0.9", "udp", 514), ("203.0.113.9", "ip47", 0), ("10.20.0.6", "ééé", 1883)}),
    )
    text = inservice_ruleset(load_profile(STS07), learned)
    assert "learned_10_20_7_30_203_0_113_9" not in text and "ééé" not in text and "ip47" not in text
    assert 'ip saddr 10.20.7.30 ip daddr 10.20.0.9 udp dport 514 counter name "learned_10_20_7_30_10_20_0_9_udp_514" accept' in text


# -- FTP through the conntrack helper -----------------------------------------------------------

FTP_ALLOWANCES = VENDOR_PROFILE.replace("[[outside]]", '''[[allow]]
client = "historian"
server = "cms"
protocol = "ftp"
port = 21
[[allow]]
client = "cms"
server = "10.30.11.254"
protocol = "ftp"
port = 2121
[[outside]]''')


def _chain(text: str, name: str) -> list[str]:
    body = text.split(f"chain {name} {{")[1].split("\n\t}")[0]
    return [line for line in structure_lines(body) if not line.startswith("type filter")]


def test_an_ftp_allowance_assigns_the_conntrack_helper_and_opens_no_port_range() -> None:
    """An ftp allow rule lets its control connection through with the kernel's ftp helper
    assigned (nftables wiki, Conntrack helpers); the data connection the helper expects passes
    as related to it, counted on its own, ahead of the general established/related rule; no
    rule opens a data port."""
    text = inservice_ruleset(parse_profile(FTP_ALLOWANCES, "sts-11.toml"))
    assert '\tct helper helper_ftp {\n\t\ttype "ftp" protocol tcp\n\t}' in text
    forward = _chain(text, "forward")
    assert forward[:2] == ['ct state related ct helper "ftp" counter name "ftp_data" accept',
                           'ct state established,related counter name "return_traffic" accept']
    assert ('ip saddr 10.30.0.40 ip daddr 10.30.11.30 tcp dport 21 ct helper set "helper_ftp" '
            'counter name "allow_historian_cms_ftp_21" accept') in forward
    # FTP to the firewall itself: the input chain assigns the helper and takes its related
    to_firewall = _chain(text, "input")
    assert to_firewall[0] == 'ct state related ct helper "ftp" counter name "ftp_data" accept'
    assert ('ip saddr 10.30.11.30 ip daddr 10.30.11.254 tcp dport 2121 ct helper set "helper_ftp" '
            'counter name "allow_cms_10_30_11_254_ftp_2121" accept') in to_firewall
    assert text.count("ct helper set") == 2  # only the ftp allowances, no other rule
    assert not re.search(r"dport \d+-\d+", text)  # no port range
    # a profile without FTP gets neither object nor related rule (its ruleset is as before)
    plain = inservice_ruleset(parse_profile(VENDOR_PROFILE, "sts-11.toml"))
    assert "ct helper" not in plain


def test_learned_ftp_gets_the_helper_and_its_data_connections_no_rule() -> None:
    from cranewatch.baseline import Baseline

    learned = Baseline(
        pairs=frozenset({("10.20.0.50", "10.20.7.30", 21), ("10.20.0.50", "10.20.7.30", 40132),
                         ("10.20.7.30", "10.20.0.50", 59355)}),
        services=frozenset({("10.20.7.30", "tcp", 21), ("10.20.7.30", "tcp", 40132),
                            ("10.20.0.50", "tcp", 59355)}),
        protocols=frozenset({("10.20.7.30", 21, "ftp"), ("10.20.7.30", 40132, "ftp-data"),
                             ("10.20.0.50", 59355, "ftp-data")}),
    )
    text = inservice_ruleset(load_profile(STS07), learned)
    assert ('ip saddr 10.20.0.50 ip daddr 10.20.7.30 tcp dport 21 ct helper set "helper_ftp" '
            'counter name "learned_10_20_0_50_10_20_7_30_ftp_21" accept') in rule_lines(text)
    assert "40132" not in text and "59355" not in text


def test_the_generated_ftp_ruleset_passes_nft_check(nft: None) -> None:
    check_ruleset(inservice_ruleset(parse_profile(FTP_ALLOWANCES, "sts-11.toml")))


def test_render_refuses_a_helper_it_does_not_declare_or_cannot_name() -> None:
    from cranewatch.policy.nft import Chain, CtHelper, Rule, Ruleset, render

    rule = Rule(("tcp dport 21",), "accept", "x", helper="helper_ftp")
    with pytest.raises(ValueError, match="unsafe"):
        render(Ruleset("cranewatch_x", (), (), (Chain("forward", "forward", (rule,)),)))
    for bad in (CtHelper("helper_ftp", 'ftp" protocol tcp; }', "tcp"), CtHelper("helper_ftp", "ftp", "sctp"),
                CtHelper("helper ftp", "ftp", "tcp")):
        with pytest.raises(ValueError, match="unsafe"):
            render(Ruleset("cranewatch_x", (), (), (Chain("forward", "forward", (rule,)),), (bad,)))
    good = render(Ruleset("cranewatch_x", (), (), (Chain("forward", "forward", (rule,)),),
                          (CtHelper("helper_ftp", "ftp", "tcp"),)))
    assert 'tcp dport 21 ct helper set "helper_ftp" counter name "x" accept' in good
