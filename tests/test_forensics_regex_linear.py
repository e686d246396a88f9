"""The forensic text checks read a hostile line in linear time (issue 19, case 2).

A vendor's image is written by the adversary: one line of "a.password.a.password..." made the
password pattern cubic (8 KB: 47 s), "nc nc nc ..." or "ssh ssh ..." quadratic. The rewritten
patterns must answer as the old ones did (a differential test on random lines built from the
patterns' own words, old patterns kept here as the reference) and stay fast on long lines.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from cranewatch.forensics.checks import accounts, endpoints, persistence, remote_access

_KW = r"(password|passwd|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token)"
OLD = {
    "password-assignment": re.compile(
        r"(?i)(?<![$@%\w])[\w.\-]*" + _KW + r"[\w.\-]*"
        r"\s*(?:=|:(?=\s*[\"']))\s*[\"'](?!(?:define|undef|changeme|none|null|false|true)[\"'])([^\s\"'$%{<]{4,})[\"']|"
        r"^\s*[\w.\-]*(password|passphrase|secret|api[_-]?key|access[_-]?token|auth[_-]?token)[\w.\-]*\s*=\s*"
        r"(?!\$|%|<|\{|\*+$|changeme|none|null|false|true|yes|no\b)([^\s\"'#;,$]{4,})", re.M),
    "url-credentials": re.compile(r"\b[a-z][\w+.\-]*://[^\s:/@\"']+:([^\s@/\"']{3,})@[\w.\-]+"),
    "reverse-shell": re.compile(
        r"/dev/(tcp|udp)/[\w.\-]+/\d+|\b(nc|ncat|netcat)\b[^|;&]*\s-[a-z]*[ec]\s|"
        r"\bbash\s+-i\s*>&|socat\b[^\n]*\bexec:|\bpty\.spawn\(|socket\.socket\([^)]*\).*connect|"
        r"mkfifo\b[^\n]*\|\s*(nc|ncat|netcat)\b|\bsh\s+-i\b[^\n]*\|\s*(nc|ncat)\b", re.I),
    "download-exec": re.compile(
        r"\b(curl|wget|fetch)\b[^|;\n]*\|\s*(sudo\s+)?(ba|da|z)?sh\b|"
        r"\b(curl|wget)\b[^;\n]*&&\s*(ba)?sh\s|(ba)?sh\s+-c\s+[\"']?\$\((curl|wget)\b", re.I),
    "encoded-exec": re.compile(
        r"base64\s+(-d|--decode)[^|\n]*\|\s*(ba)?sh\b|echo\s+[A-Za-z0-9+/=]{40,}\s*\|\s*base64|"
        r"\beval\s+\"?\$\(\s*echo\s+[A-Za-z0-9+/=]{20,}", re.I),
    "reverse-ssh": re.compile(r"\b(auto)?ssh\b[^\n#]*\s-[a-zA-Z]*R\s*\d+(:[\w.\-]+)?:\d+"),
    "endpoint": re.compile(
        r"((?<![\w.])(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(?![\w.]))|"
        r"\b(?:https?|ftp|mqtts?|tcp|udp|ssh|rtsp|wss?|opc\.tcp|sftp|tftp)://(?:[^\s/@\"'<>]+@)?"
        r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+)|"
        r"^\s*[\w.\-]*(?:server|host|remote|endpoint|broker|peer|addr|address|url|gateway|target)[\w.\-]*"
        r"\s*[=:]\s*[\"']?([A-Za-z][A-Za-z0-9\-]*(?:\.[A-Za-z0-9\-]+)+)(?![\w.\-]|\s*\()", re.I | re.M),
}
NEW = {
    "password-assignment": dict(accounts._SECRETS)["password-assignment"],
    "url-credentials": dict(accounts._SECRETS)["url-credentials"],
    **{name: pattern for name, _, _, pattern in persistence._COMMANDS},
    "reverse-ssh": dict(remote_access._TEXT_PATTERNS)["reverse-ssh"],
    "endpoint": endpoints._ENDPOINT_TEXT,
}
# words each pattern is made of, so that random lines of them often match
WORDS = {
    "password-assignment": ["x", ".", "-", "$", "@", "%", "password", "secret", "api_key", "=", ":", " ",
                            "'", '"', "abcd", "changeme", "$x", "#", "{", "='abcd'", ": 'abcd'", " = abcd", "=\"s3cr3t\""],
    "url-credentials": ["http", "a", "A", ".", "+", "-", "://", "://u", "user", ":", ":pass@", "@", "host",
                        " ", "/", "'", "1", "ftp://u:pwd@h"],
    "reverse-shell": ["nc", "ncat", " ", "-e", "-c", "x", "|", ";", "&", "socat", "exec:", "socket.socket(",
                      ")", "connect", "mkfifo", "sh -i", "/dev/tcp/1.2.3.4/9"],
    "download-exec": ["curl", "wget", "fetch", " ", "x", "|", ";", "&&", "sh", "bash", "sudo ", "sh -c $("],
    "encoded-exec": ["base64", " ", "-d", "--decode", "|", "sh", "bash", "echo", "A" * 42, "x",
                     'eval "$(echo '],
    "reverse-ssh": ["ssh", "autossh", " ", " -R", " -fNR", "2222", ":", ":localhost", ":22", "#", "x", ".",
                    " -R 2222:localhost:22", " -NR2222:22"],
    "endpoint": ["server", "host", ".", "-", "x", "=", ":", " ", "'", "srv.example.com", "10.2.3.4", "http",
                 "://", "@", "a"],
}


def answer(name: str, pattern: re.Pattern[str], line: str) -> object:
    """What the check uses: the endpoints' groups, the secret's value, else whether it matched."""
    if name == "endpoint":
        return [m.group(1, 2, 3) for m in pattern.finditer(line)]
    match = pattern.search(line)
    if match and name in ("password-assignment", "url-credentials"):
        return next((g for g in reversed(match.groups()) if g), match.group(0))
    return match is not None


@pytest.mark.parametrize("name", sorted(WORDS))
def test_same_answers_as_the_old_patterns(name: str) -> None:
    rng = random.Random(19)
    hits = 0
    for _ in range(6000):
        line = "".join(rng.choice(WORDS[name]) for _ in range(rng.randint(1, 14)))
        expected = answer(name, OLD[name], line)
        assert answer(name, NEW[name], line) == expected, line
        hits += bool(expected)
    assert hits > 50  # the random lines do reach the matching paths


HOSTILE = ["a.password.", "a.", "-", "server.", "passwordpassword", "nc ", "curl ", "wget ",
           "base64 -d ", "ssh ", "autossh ", "socat ", "mkfifo ", "sh -i ", "socket.socket(", "$a.password",
           "ubuntu1", "~deb1", "+deb1", "+b1"]


@pytest.mark.parametrize("name", sorted(NEW))
def test_hostile_lines_cost_linear_time(name: str) -> None:
    for seed in HOSTILE:
        line = seed * (200_000 // len(seed)) + "!"
        start = time.perf_counter()
        answer(name, NEW[name], line)
        assert time.perf_counter() - start < 1.0, seed  # the old patterns: minutes to hours
