"""PE programs and their Authenticode signatures: pefile (MIT) and signify (MIT).

``inspect`` reads one program of the image: whether it is a PE at all (pefile), what its
version resource claims (CompanyName, OriginalFilename), and its embedded Authenticode
signature (signify): absent, *valid* (the file's digest matches and the chain reaches a root
of Microsoft's trusted program), *untrusted* (the digest matches but the chain ends at a root
no one trusts: a vendor's or an attacker's own CA), or *broken* (the digest does not match the
file: changed after signing, or a signature that does not parse). Windows' own files are
mostly catalog-signed (no embedded signature): a program without one is looked up in the
image's catalogs (``catalogs``) and takes the verdict of the catalog that lists it.

oscrypto 1.3.0, which signify uses for RSA, cannot read OpenSSL version strings with a
two-digit part (3.0.10 and later) and refuses to load (its issue #78, fixed upstream but not
released). ``_load_signify`` loads oscrypto's libcrypto module with the corrected pattern when
that happens; nothing else of oscrypto is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import struct
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cranewatch.forensics.windows.catalogs import Catalogs

Status = Literal["not-pe", "unsigned", "valid", "untrusted", "broken"]
MAX_PE_BYTES = 256 << 20  # programs larger than this are not read for their signature

_OLD_PATTERN = "'\\\\b(\\\\d\\\\.\\\\d\\\\.\\\\d[a-z]*)\\\\b'"
_NEW_PATTERN = "'\\\\b(\\\\d+\\\\.\\\\d+\\\\.\\\\d+[a-z]*)\\\\b'"


@dataclass(frozen=True)
class PeInfo:
    """What a program is and who signed it."""

    status: Status
    signer: str = ""  # the signing certificate's subject: O, else CN
    issuer: str = ""  # the signing certificate's issuer (CN)
    company: str = ""  # CompanyName of the version resource (a claim, not a proof)
    original_name: str = ""  # OriginalFilename of the version resource
    detail: str = ""  # why broken or untrusted, in signify's words
    kind: str = ""  # "program", "DLL" or "driver"
    catalog: str = ""  # the image path of the catalog that vouches for it (no embedded signature)

    @property
    def signed(self) -> bool:
        return self.status in ("valid", "untrusted", "broken")

    def microsoft(self) -> bool:
        return self.status == "valid" and self.signer.lower().startswith("microsoft")

    def describe(self) -> str:
        if self.status == "not-pe":
            return "not a valid PE program"
        if self.status == "unsigned":
            return "unsigned"
        through = f" through the catalog {self.catalog.rsplit('/', 1)[-1]}" if self.catalog else ""
        if self.status == "valid":
            return f"signed by {self.signer}{through} (valid)"
        if self.status == "untrusted":
            return f"signed by {self.signer}{through}, a certificate from {self.issuer or 'an unknown issuer'} that no trusted root vouches for"
        return f"carries a broken signature{' of ' + self.signer if self.signer else ''} ({self.detail})"


def _load_signify() -> Any:
    """``signify.authenticode``, with oscrypto's version detection corrected if it fails."""
    try:
        return importlib.import_module("signify.authenticode")
    except Exception as exc:  # oscrypto.errors.LibraryNotFoundError: no public name to catch before import
        if "version of libcrypto" not in str(exc):
            raise
    from oscrypto import ffi

    name = "oscrypto._openssl._libcrypto_cffi" if ffi() == "cffi" else "oscrypto._openssl._libcrypto_ctypes"
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"{name} not found")
    with open(spec.origin, encoding="utf-8") as fh:
        source = fh.read()
    if _OLD_PATTERN not in source:
        raise ImportError("oscrypto cannot detect this OpenSSL's version and its source is not the known 1.3.0")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(compile(source.replace(_OLD_PATTERN, _NEW_PATTERN), spec.origin, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return importlib.import_module("signify.authenticode")


def inspect(data: bytes, catalogs: Catalogs | None = None) -> PeInfo:
    """The PE facts and signature status of a program's bytes; without an embedded signature,
    the verdict of a catalog of ``catalogs`` that lists it."""
    info = _inspect(data)
    if info.status != "unsigned" or catalogs is None:
        return info
    verdict = catalogs.lookup(data)
    if verdict is None:
        return info
    return replace(info, status=verdict.status, signer=verdict.signer, issuer=verdict.issuer, detail=verdict.detail,
                   catalog=verdict.path)


def _inspect(data: bytes) -> PeInfo:
    import pefile

    try:
        pe = pefile.PE(data=data, fast_load=True)
    except (pefile.PEFormatError, ValueError, struct.error):
        return PeInfo("not-pe")
    try:
        security = pe.OPTIONAL_HEADER.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]]
        has_table = bool(security.VirtualAddress and security.Size)
    except (AttributeError, IndexError):
        has_table = False
    try:
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]])
        version = _version_strings(pe)
        kind = "driver" if pe.is_driver() else "DLL" if pe.is_dll() else "program"
    except (pefile.PEFormatError, AttributeError, IndexError, ValueError, KeyError):
        version, kind = {}, "program"
    finally:
        pe.close()
    base = {"company": version.get("CompanyName", ""), "original_name": version.get("OriginalFilename", ""), "kind": kind}
    if not has_table:  # no certificate table: nothing embedded (a catalog may still vouch for it)
        return PeInfo("unsigned", **base)
    try:
        return _signature(data, base)
    except (ValueError, UnicodeError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        # asn1crypto parses lazily: a damaged certificate or attribute raises when it is read
        text = " ".join(str(exc).split())[:160]
        return PeInfo("broken", detail=f"the signature does not parse: {type(exc).__name__}: {text}", **base)


def _version_strings(pe: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for info in getattr(pe, "FileInfo", None) or ():
        for entry in info if isinstance(info, list) else [info]:
            for table in getattr(entry, "StringTable", ()):
                for key, value in table.entries.items():
                    out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace").strip("\x00 ")
    return out


def _signature(data: bytes, base: dict[str, str]) -> PeInfo:
    authenticode = _load_signify()
    from signify.exceptions import SignifyError

    try:
        signed = authenticode.AuthenticodeFile.from_stream(io.BytesIO(data))
        signatures = list(signed.iter_embedded_signatures(ignore_parse_errors=False))
    except SignifyError as exc:
        return PeInfo("broken", detail=f"the signature does not parse: {exc}", **base)
    if not signatures:
        return PeInfo("unsigned", **base)
    first = signatures[0]
    signer, issuer = _names(first)
    result, error = signed.explain_verify(signature_types="embedded")
    ok = authenticode.AuthenticodeVerificationResult
    if result == ok.OK:
        return PeInfo("valid", signer, issuer, **base)
    if result in (ok.INVALID_DIGEST, ok.INVALID_ADDITIONAL_HASH, ok.PARSE_ERROR, ok.INCONSISTENT_DIGEST_ALGORITHM):
        return PeInfo("broken", signer, issuer, detail=_why(result, error), **base)
    # The chain did not verify: is the file at least the one that was signed?
    try:
        indirect = first.indirect_data
        intact = indirect.digest == signed.get_fingerprint(indirect.digest_algorithm)
    except (SignifyError, ValueError, AttributeError):
        intact = False
    if not intact:
        return PeInfo("broken", signer, issuer, detail="the file's digest does not match the signed one", **base)
    return PeInfo("untrusted", signer, issuer, detail=_why(result, error), **base)


def _why(result: Any, exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) if exc is not None else ""
    return f"{result.name.lower().replace('_', ' ')}{': ' + text[:160] if text else ''}"


def _names(signature: Any) -> tuple[str, str]:
    """(subject, issuer) of the certificate that signed: its O (else CN) and its issuer's CN."""
    info = signature.signer_info
    for cert in signature.certificates:
        if cert.serial_number == info.serial_number and cert.issuer == info.issuer:
            return _name(cert.subject), _name(cert.issuer, prefer="CN")
    return "", _name(info.issuer, prefer="CN")


def _name(name: Any, prefer: str = "O") -> str:
    try:
        for key in (prefer, "CN", "O"):
            values = list(name.get_components(key))
            if values:
                return str(values[0])
        return str(name.dn)
    except (AttributeError, ValueError, KeyError):
        return ""
