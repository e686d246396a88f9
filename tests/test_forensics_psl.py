"""Host names need a real public suffix (the Public Suffix List, Debian's publicsuffix package):
expected suffixes read off the list by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cranewatch.forensics import endpoint_policy, psl
from cranewatch.forensics.checks.endpoints import classify_host

needs_list = pytest.mark.skipif(not psl.DEFAULT.exists(), reason="Debian's publicsuffix not installed "
                                "(scripts/install-deps.sh installs it)")


@needs_list
@pytest.mark.parametrize(("host", "suffix", "internet"), [
    ("telemetry.vendor-cloud.cn", "cn", True),
    ("update.maker.com.cn", "com.cn", True),
    ("foo.co.uk", "co.uk", True),
    ("co.uk", "co.uk", False),                 # a suffix alone is nobody's host
    ("x.s3.amazonaws.com", "s3.amazonaws.com", True),  # the list's private section
    ("workorders.serve", None, False),         # Python: module.function
    ("config.value", None, False),
    ("plc.crane", None, False),                # an internal name
])
def test_the_debian_list_decides(host: str, suffix: str | None, internet: bool) -> None:
    assert psl.public_suffix(host) == suffix
    assert psl.is_internet_name(host) is internet


def test_wildcards_and_exceptions_follow_the_algorithm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = tmp_path / "psl.dat"
    listed.write_text("// test list\nck\n*.ck\n!www.ck\ncom\n")
    monkeypatch.setenv("CRANEWATCH_PSL", str(listed))
    psl._rules.cache_clear()
    try:
        assert psl.public_suffix("a.b.ck") == "b.ck"      # *.ck: any label under ck is a suffix
        assert psl.public_suffix("www.ck") == "ck"        # !www.ck: the exception's parent
        assert psl.is_internet_name("b.ck") is False      # b.ck is itself a suffix
        assert psl.is_internet_name("shop.b.ck") is True
        assert psl.public_suffix("evil.zz") is None       # no implicit '*' rule
    finally:
        psl._rules.cache_clear()


def test_without_the_list_every_dotted_name_counts_as_public(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRANEWATCH_PSL", str(tmp_path / "absent.dat"))
    psl._rules.cache_clear()
    try:
        assert not psl.available() and psl.is_internet_name("config.value") is True
    finally:
        psl._rules.cache_clear()


@needs_list
def test_endpoints_judged_by_their_suffix() -> None:
    policy, _ = endpoint_policy()
    assert classify_host("telemetry.vendor-cloud.cn", policy) == "public"
    assert classify_host("workorders.serve", policy) == "local"
    assert classify_host("updates.crane-vendor.invalid", policy) == "public"  # RFC 2606 stands for one
