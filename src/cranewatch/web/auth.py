"""Who may use the console and what each may do: password hashing, roles, sessions, login limits.

**Passwords** are hashed with scrypt (``hashlib.scrypt``, OpenSSL's), a memory-hard KDF:
N = 2**17, r = 8, p = 1 — 128 MiB and ~0.3 s per hash on this class of machine, the cost
OWASP's password-storage guidance gives as scrypt's minimum. Why scrypt and not argon2id: it
is in the standard library (no new dependency, no C extension to build on a sensor), and at
these parameters it resists GPU and ASIC guessing as argon2id does; argon2-cffi would add a
dependency for no gain we can show. The hash is stored as ``scrypt$N$r$p$salt$hash`` (base64,
16-byte salt, 32-byte hash), so parameters can be raised later and old hashes still verify.
At most ``HASHES_AT_ONCE`` hashes run at a time (each takes 128 MiB), and a login for an
unknown user hashes too, so timing does not tell which names exist.

**Roles** (``PERMISSIONS``): viewer reads; analyst also triages (acknowledge, reopen, note,
assign); officer also disposes (false-positive, accepted-risk, remediated) and signs gate
decisions; admin reads and manages users (``cranewatch users``) — an admin is not an officer,
so whoever manages accounts does not also clear cranes.

**Sessions** are server-side (the ``sessions`` table): the cookie holds a random 256-bit token,
the store only its sha256; each has a CSRF token, an absolute lifetime and an idle limit.

**Login limits** (``LoginLimiter``): failed logins are counted per client address and per user
name in a sliding window; past the limit the login is refused with 429 before any hash is
computed. The counts live in the server's memory (a restart forgets them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from cranewatch.errors import UsageError
from cranewatch.store.schema import USER_ROLES

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MAX_N = 2**20  # a stored hash asking for more memory than 1 GiB is refused, not computed
HASHES_AT_ONCE = 2
_hashing = threading.BoundedSemaphore(HASHES_AT_ONCE)
MIN_PASSWORD = 10

# what each role may do
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "analyst": frozenset({"read", "triage"}),
    "officer": frozenset({"read", "triage", "dispose", "sign"}),
    "admin": frozenset({"read", "users"}),
}
assert set(PERMISSIONS) == set(USER_ROLES)

# finding states an analyst may set; the others are dispositions (officers only)
TRIAGE_STATES = frozenset({"open", "acknowledged"})


def may(role: str, action: str) -> bool:
    return action in PERMISSIONS.get(role, frozenset())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    with _hashing:
        return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES,
                              maxmem=2 * 128 * n * r * p + (1 << 20))


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The encoded scrypt hash of ``password`` (fresh salt)."""
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p))}"


def verify_password(password: str, encoded: str | None) -> bool:
    """Whether ``password`` matches the encoded hash; an unknown user (None) costs a hash too."""
    if encoded is None:
        _scrypt(password, b"\0" * SALT_BYTES, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    try:
        scheme, n_text, r_text, p_text, salt_text, hash_text = encoded.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = base64.b64decode(salt_text), base64.b64decode(hash_text)
    except ValueError:
        return False
    if scheme != "scrypt" or not (2 <= n <= MAX_N and 1 <= r <= 32 and 1 <= p <= 4):
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


def check_password_text(password: str) -> str:
    """A password as typed, checked: long enough, one line."""
    password = password.rstrip("\r\n")
    if "\n" in password or "\r" in password:
        raise UsageError("the password is one line")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short: at least {MIN_PASSWORD} characters")
    return password


def new_token() -> str:
    """A random 256-bit token, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


@dataclass(slots=True)
class LoginLimiter:
    """Failed logins per client address and per user name within ``window`` seconds."""

    per_client: int = 10
    per_user: int = 5
    window: float = 300.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, client: str, user: str, now: float | None = None) -> float:
        """Seconds until a login from ``client`` for ``user`` may be tried (0: now)."""
        at = time.monotonic() if now is None else now
        with self._lock:
            waits = []
            for key, limit in ((f"c:{client}", self.per_client), (f"u:{user.lower()}", self.per_user)):
                times = self._recent(key, at)
                if len(times) >= limit:
                    waits.append(times[0] + self.window - at)
            if len(self._failures) > 100_000:  # bounded: forget keys with nothing recent
                for key in [k for k, v in self._failures.items() if not v or v[-1] <= at - self.window]:
                    del self._failures[key]
        return max(waits, default=0.0)

    def failed(self, client: str, user: str, now: float | None = None) -> None:
        at = time.monotonic() if now is None else now
        with self._lock:
            self._recent(f"c:{client}", at).append(at)
            self._recent(f"u:{user.lower()}", at).append(at)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"u:{user.lower()}", None)
