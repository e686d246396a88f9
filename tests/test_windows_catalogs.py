"""Catalog signatures (Windows/System32/CatRoot): a program without an embedded signature is
signed by the catalog that lists its Authenticode digest; one that no catalog lists is not.

The catalogs are real: the certificate trust list is written here in DER from the format's
documentation ([MS-CAESO] CTL, subject usage 1.3.6.1.4.1.311.12.1.1; each member an
SpcIndirectDataContent holding the program's Authenticode digest, computed here by hand from
the PE layout), wrapped in an unsigned PKCS#7 and signed by ``osslsigncode`` with a test CA.
``osslsigncode verify -catalog`` — an independent reader — confirms each program is (or is not)
in its catalog before cranewatch is asked. The signer is named "Microsoft Windows"; its root
is trusted only where the test says so (signify's store, patched).
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from cranewatch.forensics.api import scan_image
from cranewatch.model import Finding, Severity
from test_forensics_windows import STS07
from windows_helpers import (
    REG_DWORD,
    REG_EXPAND_SZ,
    build_pe,
    make_test_ca,
    set_values,
    stock_tree,
    tamper,
)

CS = "ControlSet001\\Services"
CATROOT = "Windows/System32/CatRoot/{F750E6C3-38EE-11D1-85E5-00C04FC295EE}"


# --- DER, by hand -------------------------------------------------------------------------------


def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return der(0x06, body)


def seq(*items: bytes) -> bytes:
    return der(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return der(0x31, b"".join(sorted(items)))  # DER orders a SET OF by encoding


NULL = b"\x05\x00"
HASHES = {"sha1": ("1.3.14.3.2.26", "1.3.6.1.4.1.311.12.1.2"), "sha256": ("2.16.840.1.101.3.4.2.1", "1.3.6.1.4.1.311.12.1.3")}


def authenticode_digest(pe: bytes, name: str) -> bytes:
    """The Authenticode digest of an unsigned PE: every byte but the CheckSum field and the
    certificate-table directory entry (PE/COFF specification, "Calculating the PE Image Hash")."""
    optional = struct.unpack_from("<I", pe, 0x3C)[0] + 24
    checksum = optional + 64
    security = optional + (144 if struct.unpack_from("<H", pe, optional)[0] == 0x20B else 128)
    assert struct.unpack_from("<II", pe, security) == (0, 0), "no certificate table"
    return hashlib.new(name, pe[:checksum] + pe[checksum + 4 : security] + pe[security + 8 :]).digest()


def member(digest: bytes, name: str) -> bytes:
    obsolete = der(0x80, "<<<Obsolete>>>".encode("utf-16-be"))
    pe_image = seq(der(0x03, b"\x00"), der(0xA0, der(0xA2, obsolete)))  # SpcPeImageData
    indirect = seq(seq(oid("1.3.6.1.4.1.311.2.1.15"), pe_image), seq(seq(oid(HASHES[name][0]), NULL), der(0x04, digest)))
    tag = digest.hex().upper().encode("utf-16-le") + b"\0\0"
    info = seq(der(0x1E, "{C689AAB8-8E78-11D0-8C47-00C04FC295EE}".encode("utf-16-be")), der(0x02, b"\x02\x00"))
    return seq(der(0x04, tag), set_of(seq(oid("1.3.6.1.4.1.311.2.1.4"), set_of(indirect)),
                                      seq(oid("1.3.6.1.4.1.311.12.2.2"), set_of(info))))


def unsigned_catalog(digests: list[bytes], name: str) -> bytes:
    ctl = seq(seq(oid("1.3.6.1.4.1.311.12.1.1")), der(0x04, bytes(range(16))), der(0x17, b"261201000000Z"),
              seq(oid(HASHES[name][1]), NULL), seq(*[member(d, name) for d in digests]))
    signed = seq(der(0x02, b"\x01"), set_of(), seq(oid("1.3.6.1.4.1.311.10.1"), der(0xA0, ctl)), set_of())
    return seq(oid("1.2.840.113549.1.7.2"), der(0xA0, signed))


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/install-deps.sh")
    return found


def osslsigncode_says(program: Path, catalog: Path, ca: Path) -> bool:
    run = subprocess.run([_tool("osslsigncode"), "verify", "-in", str(program), "-catalog", str(catalog), "-CAfile",
                          str(ca)], capture_output=True, text=True, check=False)
    return run.returncode == 0 and "Succeeded" in run.stdout


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("cat")
    ca = make_test_ca(work / "ca", signer="Microsoft Windows")
    listed = build_pe(work / "cranetel.exe", "crane telemetry service")
    listed256 = build_pe(work / "cranelog.exe", "crane logging service")
    trojan = tamper(shutil.copyfile(listed, work / "trojan.exe"), "crane telemetry service")
    other = build_pe(work / "other.exe", "not in any catalog")
    catalogs = {}
    for name, program, algo in (("crane.cat", listed, "sha1"), ("crane256.cat", listed256, "sha256")):
        digests = [authenticode_digest(program.read_bytes(), algo), hashlib.new(algo, b"unrelated").digest()]
        (work / f"u-{name}").write_bytes(unsigned_catalog(digests, algo))
        root, leaf, key = ca
        subprocess.run([_tool("osslsigncode"), "sign", "-certs", str(leaf), "-key", str(key), "-ac", str(root),
                        "-h", "sha256", "-in", str(work / f"u-{name}"), "-out", str(work / name)], check=True,
                       capture_output=True)
        catalogs[name] = work / name
    # The independent reader agrees before cranewatch is asked.
    assert osslsigncode_says(listed, catalogs["crane.cat"], ca[0])
    assert osslsigncode_says(listed256, catalogs["crane256.cat"], ca[0])
    assert not osslsigncode_says(trojan, catalogs["crane.cat"], ca[0])
    assert not osslsigncode_says(other, catalogs["crane.cat"], ca[0])
    return {"ca": ca[0], "listed": listed, "listed256": listed256, "trojan": trojan, "other": other, **catalogs}


def _tree(shared: Path, root: Path, kit: dict[str, Path], programs: dict[str, str], catalogs: bool = True) -> Path:
    """A Windows 10 collection whose services start ``programs`` (System32 name -> kit key)."""
    stock_tree(shared, root)
    system32 = root / "Windows/System32"
    if catalogs:
        (root / CATROOT).mkdir(parents=True, exist_ok=True)
        for name in ("crane.cat", "crane256.cat"):
            shutil.copyfile(kit[name], root / CATROOT / name)
        (root / CATROOT / "damaged.cat").write_bytes(kit["crane.cat"].read_bytes()[:300])
    values = []
    for name, key in programs.items():
        shutil.copyfile(kit[key], system32 / name)
        service = name.removesuffix(".exe")
        values += [(f"{CS}\\{service}", "ImagePath", REG_EXPAND_SZ, f"%SystemRoot%\\System32\\{name}"),
                   (f"{CS}\\{service}", "Start", REG_DWORD, 2)]
    set_values(system32 / "config/SYSTEM", values)
    return root


def _of(findings: tuple[Finding, ...], name: str) -> list[Finding]:
    return [f for f in findings if f.rule == "windows.program-signature" and f.title.startswith(name + ",")]


@pytest.fixture
def trusted_root(kit: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test root trusted as Microsoft's own roots are (signify's store, for this test only)."""
    from cranewatch.forensics.windows.authenticode import _load_signify

    authenticode = _load_signify()
    from signify.x509 import Certificate, CertificateStore

    root = Certificate.from_pem(kit["ca"].read_bytes())
    monkeypatch.setattr(authenticode, "TRUSTED_CERTIFICATE_STORE", CertificateStore([root], trusted=True))


def test_catalog_signed_system_programs_are_signed_and_a_trojan_is_not(
        shared_data: Path, tmp_path: Path, kit: dict[str, Path], trusted_root: None) -> None:
    tree = _tree(shared_data, tmp_path / "C", kit, {"cranetel.exe": "listed", "cranelog.exe": "listed256",
                                                     "cranetrj.exe": "trojan"})
    result = scan_image(tree, workers=1, policy=STS07)
    assert not _of(result.findings, "cranetel.exe")  # listed (SHA-1 catalog), valid chain: Windows' own
    assert not _of(result.findings, "cranelog.exe")  # listed (SHA-256 catalog)
    (trojan,) = _of(result.findings, "cranetrj.exe")
    assert trojan.severity == Severity.HIGH and trojan.category == "backdoor"
    assert "listed in none of the image's 2 catalogs" in trojan.title
    assert trojan.evidence[0].values["status"] == "unsigned"
    damaged = [p for p in result.warnings if "damaged.cat" in p]
    assert damaged and "catalog not read" in damaged[0]  # located, and the other catalogs still count


def test_a_catalog_under_an_untrusted_root_is_a_signature_like_an_embedded_one(
        shared_data: Path, tmp_path: Path, kit: dict[str, Path]) -> None:
    tree = _tree(shared_data, tmp_path / "C", kit, {"cranetel.exe": "listed"})
    (found,) = _of(scan_image(tree, workers=1, policy=STS07).findings, "cranetel.exe")
    values = found.evidence[0].values
    assert (values["status"], values["signer"], values["catalog"]) == (
        "untrusted", "Microsoft Windows", f"{CATROOT}/crane.cat")
    assert found.severity == Severity.MEDIUM and "through the catalog crane.cat" in found.title


def test_without_catalogs_an_unsigned_system_program_is_not_reported(
        shared_data: Path, tmp_path: Path, kit: dict[str, Path]) -> None:
    tree = _tree(shared_data, tmp_path / "C", kit, {"cranetrj.exe": "trojan"}, catalogs=False)
    assert not _of(scan_image(tree, workers=1, policy=STS07).findings, "cranetrj.exe")


def test_unsigned_attributes_cannot_add_a_member(shared_data: Path, tmp_path: Path, kit: dict[str, Path],
                                                 trusted_root: None) -> None:
    """The member digests are read from the signed content only: a DigestInfo of the trojan
    appended where the signature does not reach (after the catalog) vouches for nothing."""
    tree = _tree(shared_data, tmp_path / "C", kit, {"cranetrj.exe": "trojan"})
    digest = authenticode_digest(kit["trojan"].read_bytes(), "sha1")
    catalog = tree / CATROOT / "crane.cat"
    catalog.write_bytes(catalog.read_bytes() + seq(seq(oid(HASHES["sha1"][0]), NULL), der(0x04, digest)))
    (trojan,) = _of(scan_image(tree, workers=1, policy=STS07).findings, "cranetrj.exe")
    assert trojan.evidence[0].values["status"] == "unsigned" and trojan.severity == Severity.HIGH
