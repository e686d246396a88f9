"""Password hashing with the system's libcrypt, to compare image hashes to known defaults.

The ``crypt`` module is deprecated (and gone in Python 3.13); libxcrypt's ``crypt_r`` through
ctypes knows every scheme a Linux image uses (yescrypt ``$y$``, sha512 ``$6$``, sha256 ``$5$``,
md5 ``$1$``, bcrypt ``$2b$``, DES) with no warning. The image's hash is the salt: hashing a
candidate with it and comparing is how ``check_password`` decides, without cracking anything.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
from functools import cache

# struct crypt_data is 32 KiB in libxcrypt (and smaller in glibc's old libcrypt).
_CRYPT_DATA_SIZE = 32768 + 512


@cache
def _libcrypt() -> ctypes.CDLL | None:
    for name in ("crypt", "xcrypt"):
        found = ctypes.util.find_library(name)
        for candidate in (found, "libcrypt.so.1", "libcrypt.so.2"):
            if not candidate:
                continue
            try:
                lib = ctypes.CDLL(candidate)
            except OSError:
                continue
            lib.crypt_r.restype = ctypes.c_char_p
            lib.crypt_r.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
            return lib
    return None


def gensalt(prefix: str) -> str | None:
    """A fresh setting for ``prefix`` (``$y$`` yescrypt, ``$6$`` sha512, …) from libcrypt."""
    lib = _libcrypt()
    if lib is None or not hasattr(lib, "crypt_gensalt"):
        return None
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    result = lib.crypt_gensalt(prefix.encode(), 0, None, 0)
    return result.decode("ascii") if result else None


def available() -> bool:
    return _libcrypt() is not None


def crypt(password: str, setting: str) -> str | None:
    """The hash of ``password`` under ``setting`` (a full hash or salt string); None on failure."""
    lib = _libcrypt()
    if lib is None:
        return None
    buffer = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = lib.crypt_r(password.encode(), setting.encode(), buffer)
    if not result or result.startswith(b"*"):
        return None
    return result.decode("ascii", "replace")


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` hashes to ``hashed`` (constant-time compare)."""
    computed = crypt(password, hashed)
    return computed is not None and hmac.compare_digest(computed, hashed)
