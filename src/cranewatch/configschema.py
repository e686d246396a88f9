"""Declared shapes of the configuration files: every key a table may hold and its value's type.

Profiles, fleet files and baselines are written by hurried people (and, for baselines, may be
handed over by anyone): a misspelt key that is silently ignored can drop a register limit from
an allow-list or widen a firewall. ``check`` walks a loaded document against its shape and
returns every unknown key and wrong type as a ``Problem`` with its path (``allow[2].regsiters``)
and a cleaned copy without them, so the loaders that build records from it never meet a value
of the wrong type; the loaders turn the paths into ``file:line`` and report all problems at once.

Why a schema of our own rather than pydantic or jsonschema: the documents are TOML with
native dates and times, the errors must be located at a source line (neither library knows
lines, both would need the same path-to-line scan), and the existing loaders already collect
located problems pySigma-style; a declared shape of ~100 lines keeps one mechanism and adds no
runtime dependency.
"""

from __future__ import annotations

import difflib
import json
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from cranewatch.errors import Location

PathPart = str | int


@dataclass(frozen=True, slots=True)
class Problem:
    """One value that does not fit its shape: where (a path of keys and indices) and why."""

    path: tuple[PathPart, ...]
    message: str
    unknown: bool = False  # an unknown key (rather than a wrong type)

    def dotted(self) -> str:
        return dotted(self.path)


def dotted(path: tuple[PathPart, ...]) -> str:
    """``allow[2].registers`` for ``("allow", 2, "registers")``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class Shape:
    """A value's declared shape; ``fit`` returns the value cleaned (or ``MISSING``) and problems."""

    name = "a value"

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        raise NotImplementedError


MISSING: Any = object()


_REPR = reprlib.Repr()  # bounded: a value may be huge or deeply nested
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 4, 4


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table", type(None): "null"}.get(type(value), type(value).__name__)
    return f"{kind} {_REPR.repr(value)}"


@dataclass(frozen=True, slots=True)
class Scalar(Shape):
    """One of some Python types (``bool`` is never taken for an integer)."""

    types: tuple[type, ...]
    name: str
    test: Callable[[Any], bool] | None = None  # a further condition on the value

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        ok = isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)
        if ok and self.test is not None:
            ok = self.test(value)
        if not ok:
            problems.append(Problem(path, f"{dotted(path)}: expected {self.name}, got {_describe(value)}"))
            return MISSING
        return value


@dataclass(frozen=True, slots=True)
class ListOf(Shape):
    """A list whose items fit ``item``; items that do not are reported and left out."""

    item: Shape
    length: int | None = None  # a fixed length (a tuple saved as a list)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"a list of {self.length} values" if self.length else f"a list ({self.item.name} each)"

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        if not isinstance(value, list):
            problems.append(Problem(path, f"{dotted(path)}: expected {self.name}, got {_describe(value)}"))
            return MISSING
        if self.length is not None and len(value) != self.length:
            problems.append(Problem(path, f"{dotted(path)}: expected {self.length} values, got {len(value)}"))
            return MISSING
        out = [self.item.fit(v, (*path, i), problems) for i, v in enumerate(value)]
        if self.length is not None and any(v is MISSING for v in out):
            return MISSING
        return [v for v in out if v is not MISSING]


@dataclass(frozen=True, slots=True)
class Tuple(Shape):
    """A fixed-length list whose items have their own shapes (a saved tuple)."""

    items: tuple[Shape, ...]
    name = "a list"

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        if not isinstance(value, list) or len(value) != len(self.items):
            names = [s.name for s in self.items]
            kinds = f"each {names[0]}" if len(set(names)) == 1 else ", ".join(names)
            problems.append(Problem(path, f"{dotted(path)}: expected a list of {len(self.items)} values "
                                          f"({kinds}), got {_describe(value)}"))
            return MISSING
        out = [s.fit(v, (*path, i), problems) for i, (s, v) in enumerate(zip(self.items, value, strict=True))]
        return MISSING if any(v is MISSING for v in out) else out


@dataclass(frozen=True, slots=True)
class AnyOf(Shape):
    """The first of ``options`` the value fits."""

    options: tuple[Shape, ...]

    @property
    def name(self) -> str:  # type: ignore[override]
        return " or ".join(o.name for o in self.options)

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        for option in self.options:
            trial: list[Problem] = []
            fitted = option.fit(value, path, trial)
            if not trial:
                return fitted
        problems.append(Problem(path, f"{dotted(path)}: expected {self.name}, got {_describe(value)}"))
        return MISSING


@dataclass(frozen=True, slots=True)
class Table(Shape):
    """A table with declared keys; unknown keys are problems (with a guess at the meant key)."""

    fields: Mapping[str, Shape]
    required: frozenset[str] = frozenset()
    name = "a table"

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        if not isinstance(value, dict):
            problems.append(Problem(path, f"{dotted(path)}: expected a table, got {_describe(value)}"))
            return MISSING
        missing = [k for k in self.fields if k in self.required and k not in value]
        for key in missing:
            problems.append(Problem(path, f"{dotted(path)}: missing {key!r}"))
        if missing:
            return MISSING
        out: dict[str, Any] = {}
        for key, item in value.items():
            shape = self.fields.get(key)
            if shape is None:
                guess = difflib.get_close_matches(str(key), list(self.fields), n=1)
                hint = f"did you mean {guess[0]!r}? " if guess else ""
                where = dotted(path) if path else "top level"
                problems.append(Problem((*path, key), f"{where}: unknown key {key!r} ({hint}expected one of "
                                                      f"{', '.join(self.fields)})", unknown=True))
                continue
            fitted = shape.fit(item, (*path, key), problems)
            if fitted is not MISSING:
                out[key] = fitted
        return MISSING if any(k not in out for k in self.required) else out


@dataclass(frozen=True, slots=True)
class MapOf(Shape):
    """A table of any keys (matching ``key``, when given) whose values fit ``value``."""

    value: Shape
    key: re.Pattern[str] | None = None
    key_name: str = ""
    key_test: Callable[[str], bool] | None = None
    name = "a table"

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        if not isinstance(value, dict):
            problems.append(Problem(path, f"{dotted(path)}: expected a table, got {_describe(value)}"))
            return MISSING
        out: dict[str, Any] = {}
        for key, item in value.items():
            if (self.key is not None and not self.key.fullmatch(str(key))) or (
                    self.key_test is not None and not self.key_test(str(key))):
                problems.append(Problem((*path, key), f"{dotted(path)}: key {key!r} is not {self.key_name}"))
                continue
            fitted = self.value.fit(item, (*path, key), problems)
            if fitted is not MISSING:
                out[key] = fitted
        return out


@dataclass(frozen=True, slots=True)
class Nullable(Shape):
    inner: Shape

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.inner.name} or null"

    def fit(self, value: Any, path: tuple[PathPart, ...], problems: list[Problem]) -> Any:
        return None if value is None else self.inner.fit(value, path, problems)


def _finite(value: Any) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


def _plain(value: Any) -> bool:
    return all(c.isprintable() or c == "\t" for c in value) if isinstance(value, str) else True


STR = Scalar((str,), "a string")
# Text people read (names, makers, paths): no control characters, which would forge terminal
# output, end a comment in a generated ruleset, or (a NUL) fail every file-system call.
TEXT = Scalar((str,), "a string without control characters", _plain)
INT = Scalar((int,), "an integer")
NUMBER = Scalar((int, float), "a number")
FINITE = Scalar((int, float), "a finite number", _finite)
# A learned quantity (an envelope, a model coefficient): finite and far from float overflow.
MODERATE = Scalar((int, float), "a number between -1e9 and 1e9", lambda v: _finite(v) and abs(v) <= 1e9)
BOOL = Scalar((bool,), "true or false")
TIME = Scalar((time, str), "a time of day (HH:MM)", _plain)
DATE = Scalar((date, str), "a date (YYYY-MM-DD)", _plain)  # datetime is a date too
DATETIME = Scalar((datetime, date, str), "a date-time", _plain)


def check(document: Any, shape: Shape) -> tuple[Any, list[Problem]]:
    """``document`` without what does not fit ``shape`` (``{}`` when nothing does), and why."""
    problems: list[Problem] = []
    cleaned = shape.fit(document, (), problems)
    return ({} if cleaned is MISSING else cleaned), problems


# -- finding a path's line in the source ---------------------------------------------------------

_TOML_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(?:#.*)?$")


def toml_line(text: str, path: tuple[PathPart, ...]) -> int | None:
    """The line of ``path`` in TOML text (tomllib keeps no positions): a small scan that follows
    ``[table]`` and ``[[array]]`` headers, the n-th entry of an array, then ``key =``.

    Inline tables and dotted keys are found by their key's line; None when nothing fits.
    """
    lines = text.splitlines()
    headers: list[tuple[int, str, bool]] = []
    for number, line in enumerate(lines, 1):
        m = _TOML_HEADER.match(line)
        if m:
            headers.append((number, m.group(2).replace('"', "").replace(" ", ""), bool(m.group(1))))
    scope = (0, len(lines) + 1)  # where the current entry's sub-tables lie
    own = (1, headers[0][0] if headers else len(lines) + 1)  # where its own keys lie
    prefix = ""
    best: int | None = None
    i = 0
    while i < len(path):
        part = path[i]
        if isinstance(part, int):
            i += 1
            continue
        name = prefix + part
        following = path[i + 1] if i + 1 < len(path) else None
        index = following if isinstance(following, int) else None
        found = [h for h in headers if scope[0] < h[0] < scope[1] and h[1] == name
                 and (index is None or h[2])]
        pick = found[index if index is not None else 0] if len(found) > (index or 0) else None
        if pick is None:  # a plain key of the current table, else a table it defines implicitly
            key = re.compile(rf"^\s*[\"']?{re.escape(part)}[\"']?\s*[=.]")
            at = next((n for n in range(own[0], min(own[1], len(lines) + 1)) if key.match(lines[n - 1])), None)
            implied = next((h[0] for h in headers if scope[0] < h[0] < scope[1]
                            and h[1].startswith(name + ".")), None)
            return at or implied or best
        best = pick[0]
        after = [h for h in headers if h[0] > pick[0]]
        scope = (pick[0], next((h[0] for h in after if not h[1].startswith(name + ".")), len(lines) + 1))
        own = (pick[0] + 1, after[0][0] if after else len(lines) + 1)
        prefix = name + "."
        i += 1 if index is None else 2
    return best


def json_line(text: str, path: tuple[PathPart, ...]) -> int | None:
    """The line of ``path`` in JSON text: each key is looked for after the line of its parent."""
    lines = text.splitlines()
    at, found = 0, None
    for part in path:
        if isinstance(part, int):
            continue
        needles = (json.dumps(str(part)), json.dumps(str(part), ensure_ascii=False))  # as written
        for number in range(at, len(lines)):
            if any(needle in lines[number] for needle in needles):
                at, found = number, number + 1
                break
        else:
            return found
    return found


def toml_error_location(exc: Exception, text: str, source: str) -> Location:
    """Where tomllib says a document broke (``at line L, column C``; ``at end of document``:
    its last line)."""
    m = re.search(r"at line (\d+), column (\d+)", str(exc))
    if m:
        return Location(file=source, line=int(m.group(1)), column=int(m.group(2)))
    return Location(file=source, line=max(1, len(text.splitlines())))
