"""ISO 6346 container numbers and UN/LOCODEs: the cargo data the OCR controller reports.

A number is a 3-letter owner code, an equipment category (U, J or Z), a 6-digit serial and a
check digit. The check digit gives each letter a value from 10 to 38 skipping multiples of 11
(A=10, B=12, ... K=21, ...), weights position i by 2**i, sums, takes mod 11 and maps 10 to 0.
"""

from __future__ import annotations

import random
import re
import string

__all__ = ["LOCODES", "OWNER_CODES", "check_digit", "is_valid", "random_container"]

_PATTERN = re.compile(r"^[A-Z]{3}[UJZ][0-9]{7}$")


def _letter_values() -> dict[str, int]:
    values: dict[str, int] = {}
    value = 10
    for letter in string.ascii_uppercase:
        if value % 11 == 0:  # 11, 22 and 33 are skipped so no letter equals the modulus
            value += 1
        values[letter] = value
        value += 1
    return values


_LETTER_VALUE = _letter_values()

# Real owner prefixes of large lines (BIC codes); category U = freight container.
OWNER_CODES: tuple[str, ...] = ("CSQ", "MSC", "MAE", "CMA", "HLX", "ONE", "EGH", "OOL", "TGH", "COS")
# Ports of loading/discharge as UN/LOCODEs (country + location).
LOCODES: tuple[str, ...] = (
    "CNSHA", "CNNGB", "CNYTN", "KRPUS", "SGSIN", "NLRTM", "DEHAM", "BEANR", "USORF", "USNYC",
    "USSAV", "USLAX", "USLGB", "USHOU", "JPTYO", "TWKHH",
)


def check_digit(first_ten: str) -> int:
    """The check digit for owner code + category + serial (10 characters)."""
    if len(first_ten) != 10 or not _PATTERN.match(first_ten + "0"):
        raise ValueError(f"not an ISO 6346 owner/category/serial: {first_ten!r}")
    total = 0
    for position, char in enumerate(first_ten):
        value = _LETTER_VALUE[char] if char.isalpha() else int(char)
        total += value << position
    return total % 11 % 10


def is_valid(number: str) -> bool:
    """True when ``number`` is a well-formed ISO 6346 number with the right check digit."""
    if not _PATTERN.match(number):
        return False
    return check_digit(number[:10]) == int(number[10])


def random_container(rng: random.Random) -> str:
    """A valid container number with a real owner prefix and category U."""
    serial = f"{rng.randrange(1_000_000):06d}"
    first_ten = rng.choice(OWNER_CODES) + "U" + serial
    return first_ten + str(check_digit(first_ten))
