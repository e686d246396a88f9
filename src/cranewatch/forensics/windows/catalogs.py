"""Catalog signatures: the ``.cat`` files under ``Windows/System32/CatRoot``.

Most of Windows' own programs carry no embedded signature: a catalog vouches for them. A catalog
is a PKCS#7 SignedData whose content is a Microsoft certificate trust list (CTL, subject usage
1.3.6.1.4.1.311.12.1.1) with one member per file, each holding the file's Authenticode digest
(SHA-1 or SHA-256) in an ``SpcIndirectDataContent``. A program whose Authenticode digest is a
member of a catalog is signed by that catalog's signer, with the catalog's own verdict (the
chain checked by signify as for an embedded signature: valid, untrusted, or broken when the
catalog's content no longer matches its signature — a broken catalog vouches for nothing).

Speed: a Windows 10 CatRoot holds thousands of catalogs, some with tens of thousands of
members, and parsing members one by one costs about 70 µs each (3.5 s for a 50,000-member
catalog, measured). So each catalog's signed content — the CTL the signature covers, never its
unsigned attributes, which anyone could append to — is scanned once for the DER of its member
digests (a DigestInfo: 0.07 s for the same catalog); only a catalog holding a started program's
digest has its signature verified (signify, cached per catalog).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any, Literal

from cranewatch.forensics.windows.tree import WindowsTree

CATROOT = "Windows/System32/CatRoot"
MAX_CATALOG_BYTES = 64 << 20
_CTL = "1.3.6.1.4.1.311.10.1"
# DigestInfo { AlgorithmIdentifier { sha1 | sha256 [, NULL] }, OCTET STRING digest }
_DIGESTS = re.compile(
    rb"\x30[\x1f\x21]\x30[\x07\x09]\x06\x05\x2b\x0e\x03\x02\x1a(?:\x05\x00)?\x04\x14(.{20})"
    rb"|\x30[\x2f\x31]\x30[\x0b\x0d]\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01(?:\x05\x00)?\x04\x20(.{32})",
    re.S,
)


@dataclass(frozen=True)
class CatalogVerdict:
    """One catalog's signature, as for an embedded one."""

    path: str
    status: Literal["valid", "untrusted", "broken"]
    signer: str = ""
    issuer: str = ""
    detail: str = ""


class Catalogs:
    """The member digests of an image's catalogs, read on first use."""

    def __init__(self, win: WindowsTree) -> None:
        self.win = win
        self._members: dict[bytes, list[str]] | None = None
        self._verdicts: dict[str, CatalogVerdict | None] = {}
        self._count = 0

    @property
    def count(self) -> int:
        """How many catalogs the image holds (readable ones)."""
        self._index()
        return self._count

    def _index(self) -> dict[bytes, list[str]]:
        if self._members is not None:
            return self._members
        self._members = {}
        from cranewatch.forensics.windows.authenticode import _load_signify

        _load_signify()  # registers the CTL content type with asn1crypto
        for path in self.win.files_under(CATROOT):
            if not path.lower().endswith(".cat"):
                continue
            data = self.win.read_bytes(path, limit=MAX_CATALOG_BYTES)
            if data is None:
                self.win.problem(path, f"catalog larger than {MAX_CATALOG_BYTES} bytes not read")
                continue
            try:
                content = _signed_content(data)
            except ValueError as exc:
                self.win.problem(path, f"catalog not read: {exc}")
                continue
            self._count += 1
            for match in _DIGESTS.finditer(content):
                where = self._members.setdefault(match.group(1) or match.group(2), [])
                if not where or where[-1] != path:
                    where.append(path)
        return self._members

    def lookup(self, data: bytes) -> CatalogVerdict | None:
        """The best verdict of a catalog listing the program ``data`` (valid before untrusted),
        or None when no intact catalog lists it."""
        members = self._index()
        if not members:
            return None
        fingerprints = _fingerprints(data)
        best: CatalogVerdict | None = None
        for digest in fingerprints:
            for path in members.get(digest, ()):
                verdict = self._verdict(path)
                if verdict is None or verdict.status == "broken":
                    continue
                if best is None or (verdict.status == "valid" and best.status != "valid"):
                    best = verdict
        return best

    def _verdict(self, path: str) -> CatalogVerdict | None:
        if path in self._verdicts:
            return self._verdicts[path]
        verdict = None
        try:
            verdict = self._verify(path)
        except Exception as exc:  # asn1crypto parses lazily: hostile bytes raise anything when read
            self.win.problem(path, f"catalog not verified ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
        self._verdicts[path] = verdict
        return verdict

    def _verify(self, path: str) -> CatalogVerdict | None:
        from cranewatch.forensics.windows.authenticode import _load_signify, _names, _why

        authenticode = _load_signify()
        from signify.authenticode.trust_list import CertificateTrustList

        data = self.win.read_bytes(path, limit=MAX_CATALOG_BYTES) or b""
        ctl = CertificateTrustList.from_envelope(data)
        if not ctl.is_catalog:
            self.win.problem(path, "a certificate trust list that is not a catalog (subject usage) ignored")
            return None
        signer, issuer = _names(ctl)
        result, error = ctl.explain_verify()
        ok = authenticode.AuthenticodeVerificationResult
        if result == ok.OK:
            return CatalogVerdict(path, "valid", signer, issuer)
        if result in (ok.INVALID_DIGEST, ok.INVALID_ADDITIONAL_HASH, ok.PARSE_ERROR, ok.INCONSISTENT_DIGEST_ALGORITHM):
            self.win.problem(path, f"catalog signature broken ({_why(result, error)}): it vouches for nothing")
            return CatalogVerdict(path, "broken", signer, issuer, _why(result, error))
        return CatalogVerdict(path, "untrusted", signer, issuer, _why(result, error))


def _signed_content(data: bytes) -> bytes:
    """The encapsulated CTL of a catalog (the bytes its signature covers), or ``ValueError``."""
    from asn1crypto import cms

    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].dotted != "1.2.840.113549.1.7.2":
            raise ValueError("not a PKCS#7 SignedData")
        encap = info["content"]["encap_content_info"]
        if encap["content_type"].dotted != _CTL:
            raise ValueError(f"content type {encap['content_type'].dotted} is not a certificate trust list")
        content: Any = encap["content"]
        raw = content.contents if hasattr(content, "contents") else None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise ValueError(" ".join(str(exc).split())[:160] or type(exc).__name__) from None
    if not raw:
        raise ValueError("no certificate trust list inside")
    return bytes(raw)


def _fingerprints(data: bytes) -> list[bytes]:
    """The program's Authenticode digests (SHA-1 and SHA-256), as catalogs list them."""
    from cranewatch.forensics.windows.authenticode import _load_signify

    authenticode = _load_signify()
    signed = authenticode.AuthenticodeFile.from_stream(io.BytesIO(data))
    return [signed.get_fingerprint(hashlib.sha1), signed.get_fingerprint(hashlib.sha256)]
