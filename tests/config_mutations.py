"""Mutations of configuration files for the fuzz tests and the long fuzz run.

TOML text (profiles, fleet files) is mutated by line-aware edits a hurried person or an
attacker might make: a misspelt key, a value of another type, a header changed, lines
dropped, duplicated or swapped, a byte flipped. JSON baselines are mutated as data (a node
replaced, a key renamed, dropped or added) and now and then as bytes. Each mutator takes a
``random.Random`` so a seed names a case.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from typing import Any

from cranewatch.errors import CranewatchError

KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_\-]+)(\s*=\s*)(.*)$")
HEADER_LINE = re.compile(r"^(\s*)(\[\[?)([^\]]+)(\]\]?)(.*)$")

TOML_VALUES = [
    '"x"', '""', "42", "-1", "0", "3.5", "true", "false", "[]", '["a", 1]', "{a = 1}", "{}",
    "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", '"HR:0-3"', '["HR:0-3"]', '"HR:9-1"',
    '"\\u0000"', '"\\u001b[31mred"', '"10.20.7.0/33"', '"::/0"', '"0.0.0.0/0"', "nan", "inf",
    "9223372036854775807", '"' + "a" * 5000 + '"', "[[[[1]]]]", '["mon", 7]', '"Mars/Olympus"',
    '"eth0\\" accept #"', '"zone:moon"', '"*"', "[1, 2, 3, 128]", "65536", '"02:c7:07:00:00:zz"',
]
JSON_VALUES: list[Any] = [
    None, True, False, 0, -1, 1e308, -1e308, 2**70, 3.5, "", "x", "10.20.7.0/33", "::/0", [], {},
    [1, 2], [[1]], ["a", "b"], {"a": 1}, {"1": 2.0}, [None], ["x", "y", 1], [1.0, 2.0, 3.0],
    "a" * 5000, [[["deep"]]], {"hoisting": 1.0}, [[0.0, 0.0]], math.nan,
]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbours: registers -> regsiters
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]  # drop one
    if kind == 2:
        return word[:i] + rng.choice("aeiourst_") + word[i:]  # insert one
    return word.rstrip("s") if word.endswith("s") else word + "s"  # clients <-> client


NUMBER = re.compile(r"(?<![\w.:-])\d+(?![\w.:-])")


def _gentle_toml(lines: list[str], rng: random.Random) -> None:
    """An edit that keeps the file well-typed: a number changed, a list item or a comment."""
    numbered = [n for n, line in enumerate(lines) if KEY_LINE.match(line) and NUMBER.search(line)]
    listed = [n for n, line in enumerate(lines) if KEY_LINE.match(line) and line.rstrip().endswith("]")
              and "," in line]
    op = rng.randrange(3)
    if op == 0 and numbered:
        n = rng.choice(numbered)
        lines[n] = NUMBER.sub(lambda m: str(max(0, int(m.group()) + rng.choice([-1, 1, 7, 100]))), lines[n], count=1)
    elif op == 1 and listed:
        n = rng.choice(listed)
        head, _, items = lines[n].partition("[")
        parts = items.rstrip().rstrip("]").split(",")
        rng.shuffle(parts)
        lines[n] = head + "[" + ",".join(parts[: max(1, len(parts) - rng.randrange(2))]) + "]"
    else:
        lines.insert(rng.randrange(len(lines) + 1), "# " + rng.choice(["note", "[[allow]]", 'x = "y"']))


def mutate_toml(text: str, rng: random.Random, steps: int | None = None) -> str:
    """1-3 edits of TOML text (see module docstring); two in five keep it well-typed."""
    lines = text.splitlines()
    for _ in range(steps or rng.randint(1, 3)):
        if not lines:
            lines = [""]
        if rng.random() < 0.4:
            _gentle_toml(lines, rng)
            continue
        op = rng.randrange(9)
        i = rng.randrange(len(lines))
        keyed = [n for n, line in enumerate(lines) if KEY_LINE.match(line)]
        headers = [n for n, line in enumerate(lines) if HEADER_LINE.match(line)]
        if op in (0, 1) and keyed:  # a misspelt key
            n = rng.choice(keyed)
            m = KEY_LINE.match(lines[n])
            assert m
            lines[n] = f"{m.group(1)}{_typo(m.group(2), rng)}{m.group(3)}{m.group(4)}"
        elif op in (2, 3, 4) and keyed:  # a value of another type
            n = rng.choice(keyed)
            m = KEY_LINE.match(lines[n])
            assert m
            lines[n] = f"{m.group(1)}{m.group(2)}{m.group(3)}{rng.choice(TOML_VALUES)}"
        elif op == 5 and headers:  # a header changed: [[allow]] -> [allow], a typo, a sub-table
            n = rng.choice(headers)
            m = HEADER_LINE.match(lines[n])
            assert m
            name = m.group(3)
            choice = rng.randrange(3)
            if choice == 0:
                lines[n] = f"{m.group(1)}[{name}]"
            elif choice == 1:
                lines[n] = f"{m.group(1)}{m.group(2)}{_typo(name, rng)}{m.group(4)}"
            else:
                lines[n] = f"{m.group(1)}[[{name}.extra]]"
        elif op == 6:  # a line dropped or duplicated
            if rng.random() < 0.5:
                del lines[i]
            else:
                lines.insert(i, lines[i])
        elif op == 7:  # two lines swapped
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:  # a byte flipped (NUL, quote, bracket, newline, non-UTF-8 stays text here)
            line = lines[i]
            k = rng.randrange(len(line) + 1)
            lines[i] = line[:k] + rng.choice(['"', "[", "]", "=", "\x00", "\n", "#", "\\", "é", "\x1b"]) + line[k + 1:]
    return "\n".join(lines) + "\n"


def _nodes(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _nodes(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):  # enough items to reach every shape
            found += _nodes(v, (*path, i))
    return found


def _parent(obj: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        obj = obj[part]
    return obj


def _similar(value: Any, rng: random.Random) -> Any:
    """A value of the same type: what a well-typed but odd baseline holds."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([0, -value, value * 1000, value + 1, 2**63])
    if isinstance(value, float):
        return rng.choice([0.0, -value, value * 1e6, math.inf, math.nan, 1e-300])
    if isinstance(value, str):
        return rng.choice(["", value[::-1], value + "x", "10.20.7.0/24", "fd00::1", "é" * 3])
    if isinstance(value, list):
        return value[: len(value) // 2] if rng.random() < 0.5 else value + value[:1]
    return value


def mutate_json(document: Any, rng: random.Random, steps: int | None = None) -> str:
    """1-3 edits of a JSON document as data (two in five keep its types); one case in ten also
    has a byte flipped."""
    doc = json.loads(json.dumps(document))
    for _ in range(steps or rng.randint(1, 3)):
        paths = [p for p in _nodes(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, last = _parent(doc, path), path[-1]
        if rng.random() < 0.4:
            parent[last] = _similar(parent[last], rng)
            continue
        op = rng.randrange(6)
        if op <= 2:  # another value
            parent[last] = json.loads(json.dumps(rng.choice(JSON_VALUES)))
        elif op == 3 and isinstance(parent, dict):  # a key renamed
            parent[_typo(str(last), rng)] = parent.pop(last)
        elif op == 4:  # dropped
            del parent[last]
        elif isinstance(parent, dict):  # a key added
            parent[rng.choice(["extra", "pasirs", str(last) + "_", "1"])] = rng.choice(JSON_VALUES)
        else:
            parent.insert(rng.randrange(len(parent) + 1), rng.choice(JSON_VALUES))
    text = json.dumps(doc, indent=1)
    if rng.random() < 0.1:
        k = rng.randrange(len(text))
        text = text[:k] + rng.choice(['"', "{", "]", ",", "\x00", "\\", "é"]) + text[k + 1:]
    return text


def outcome(load: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)``, ``("error: <kind>", error)`` for a located cranewatch error, or
    ``("crash: <ExceptionType>", exception)`` for anything else."""
    try:
        return "ok", load()
    except CranewatchError as exc:
        return f"error: {error_kind(exc)}", exc
    except Exception as exc:  # the fuzzers exist to find these
        return f"crash: {type(exc).__name__}", exc


def error_kind(exc: CranewatchError) -> str:
    """A short class of a located error: its first problem's message without values."""
    problems = getattr(exc, "problems", None) or [exc]
    message = str(problems[0].message)
    message = re.sub(r"^[\w.\[\]\-]*: ", "", message)  # the path
    message = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\d+(\.\d+)?", "…", message)
    return " ".join(message.split()[:6])


def located(exc: CranewatchError) -> bool:
    """Every problem of the error says where (a file and a line, byte or column)."""
    problems = getattr(exc, "problems", None) or [exc]
    return all(p.location is not None and p.location.file is not None
               and (p.location.line is not None or p.location.offset is not None
                    or p.location.file.startswith("<"))
               for p in problems)
