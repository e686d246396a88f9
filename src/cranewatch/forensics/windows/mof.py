"""MOF text (Managed Object Format): the ``instance of`` declarations of a ``.mof`` file.

What ``mofcomp`` compiles into the WMI repository, as Microsoft's MOF documentation describes it:
``#pragma`` lines, qualifier lists in ``[...]``, class declarations (skipped), and instances::

    instance of CommandLineEventConsumer as $Cons
    {
        Name = "Updater";
        CommandLineTemplate = "powershell -nop -c \\"iex ...\\"";
    };

Values are strings (C escapes, adjacent strings joined), numbers, ``true``/``false``/``null``,
``$alias`` references to an earlier instance and arrays in braces. The parser is lenient at the
top level, so the same code reads the MOF text Windows writes into WMI-Activity event 5861
("Binding EventFilter: instance of __EventFilter {...};"). A string or comment that does not end
is a located problem (line); the instances before it are kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MofValue = str | int | float | bool | None | tuple["MofValue", ...]

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+|\n)
  | (?P<comment>//[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)
  | (?P<open_comment>/\*)
  | (?P<pragma>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<open_string>")
  | (?P<char>'(?:[^'\\\n]|\\.)*')
  | (?P<alias>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[-+]?(?:0[xX][0-9A-Fa-f]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}()\[\];=,:.])
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


@dataclass
class MofInstance:
    """``instance of CLASS [as $ALIAS] { ... };`` at ``line``, its properties by name as written."""

    class_name: str
    alias: str | None
    line: int
    namespace: str | None
    properties: dict[str, MofValue] = field(default_factory=dict)

    def get(self, name: str) -> MofValue:
        """A property by name, any case (MOF names are not case-sensitive)."""
        lower = name.lower()
        return next((v for k, v in self.properties.items() if k.lower() == lower), None)

    def text(self, name: str) -> str:
        value = self.get(name)
        return value if isinstance(value, str) else ""


class MofError(ValueError):
    """A MOF text that cannot be read on from ``line``."""

    def __init__(self, line: int, what: str) -> None:
        super().__init__(f"line {line}: {what}")
        self.line = line


def unescape(body: str) -> str:
    """A MOF string's body with its C escapes (``\\\\``, ``\\"``, ``\\n``, ``\\x41`` …) resolved."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "xX":
                digits = re.match(r"[0-9A-Fa-f]{1,4}", body[i + 2:])
                if digits:
                    out.append(chr(int(digits.group(0), 16)))
                    i += 2 + len(digits.group(0))
                    continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def tokens(text: str) -> tuple[list[Token], MofError | None]:
    """The tokens of ``text`` (no spaces or comments), and the error that stopped it, if any."""
    out: list[Token] = []
    line = 1
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        value = match.group(0)
        if kind in ("open_comment", "open_string"):
            what = "comment" if kind == "open_comment" else "string"
            return out, MofError(line, f"a {what} that does not end on its line or in the file")
        if kind not in ("space", "comment"):
            out.append(Token(kind, value, line))
        line += value.count("\n")
    return out, None


class _Parser:
    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0
        self.namespace: str | None = None
        self.aliases: dict[str, MofInstance] = {}
        self.found: list[MofInstance] = []

    def peek(self, ahead: int = 0) -> Token | None:
        at = self.i + ahead
        return self.toks[at] if at < len(self.toks) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            last = self.toks[-1].line if self.toks else 1
            raise MofError(last, "the text ends inside a declaration")
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.take()
        if tok.text != text:
            raise MofError(tok.line, f"expected {text!r}, found {tok.text[:40]!r}")
        return tok

    def skip_balanced(self, open_: str, close: str) -> None:
        depth = 0
        while True:
            tok = self.take()
            if tok.text == open_:
                depth += 1
            elif tok.text == close:
                depth -= 1
                if depth == 0:
                    return

    def instances(self) -> list[MofInstance]:
        found = self.found
        while (tok := self.peek()) is not None:
            low = tok.text.lower()
            nxt = self.peek(1)
            if tok.kind == "pragma":
                self._pragma(tok)
                self.i += 1
            elif tok.text == "[":
                self.skip_balanced("[", "]")
            elif low == "instance" and nxt is not None and nxt.text.lower() == "of":
                found.append(self._instance())
            elif low == "class" and nxt is not None and nxt.kind == "name":
                while (t := self.peek()) is not None and t.text not in ("{", ";"):
                    self.i += 1
                if self.peek() is not None and self.take().text == "{":
                    self.i -= 1
                    self.skip_balanced("{", "}")
            else:
                self.i += 1  # free text around the declarations (event 5861's "Perm. Consumer:")
        return found

    def _pragma(self, tok: Token) -> None:
        match = re.match(r"#\s*pragma\s+namespace\s*\(\s*(\"(?:[^\"\\]|\\.)*\")\s*\)", tok.text, re.I)
        if match:
            self.namespace = unescape(match.group(1)[1:-1])

    def _instance(self) -> MofInstance:
        start = self.take()  # instance
        self.take()  # of
        name = self.take()
        if name.kind != "name":
            raise MofError(name.line, f"expected a class name after 'instance of', found {name.text[:40]!r}")
        alias = None
        if (tok := self.peek()) is not None and tok.text.lower() == "as":
            self.i += 1
            alias = self.take().text
        instance = MofInstance(name.text, alias, start.line, self.namespace)
        self.expect("{")
        while (tok := self.peek()) is not None and tok.text != "}":
            if tok.text == "[":
                self.skip_balanced("[", "]")
                continue
            prop = self.take()
            if prop.kind != "name":
                raise MofError(prop.line, f"expected a property name, found {prop.text[:40]!r}")
            self.expect("=")
            instance.properties[prop.text] = self._value()
            self.expect(";")
        self.expect("}")
        if (tok := self.peek()) is not None and tok.text == ";":
            self.i += 1
        if alias:
            self.aliases[alias.lower()] = instance
        return instance

    def _value(self) -> MofValue:
        tok = self.take()
        if tok.kind == "string":
            parts = [unescape(tok.text[1:-1])]
            while (nxt := self.peek()) is not None and nxt.kind == "string":
                parts.append(unescape(self.take().text[1:-1]))
            return "".join(parts)
        if tok.kind == "char":
            return unescape(tok.text[1:-1])
        if tok.kind == "number":
            text = tok.text.lower()
            if text.lstrip("+-").startswith("0x"):
                return int(text, 16)
            return float(text) if any(c in text for c in ".e") else int(text)
        if tok.kind == "alias":
            return tok.text  # resolved by the reader of the binding
        if tok.text == "{":
            items: list[MofValue] = []
            while (nxt := self.peek()) is not None and nxt.text != "}":
                items.append(self._value())
                if (sep := self.peek()) is not None and sep.text == ",":
                    self.i += 1
            self.expect("}")
            return tuple(items)
        low = tok.text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low == "null":
            return None
        if low == "instance":  # an embedded object: kept as its class name only
            self.i -= 1
            return f"instance of {self._instance().class_name}"
        raise MofError(tok.line, f"unexpected {tok.text[:40]!r} as a property value")


def parse_mof(text: str) -> tuple[list[MofInstance], dict[str, MofInstance], MofError | None]:
    """The instances of a MOF text, its aliases (lower-case ``$name``), and the error that stopped it."""
    toks, error = tokens(text)
    parser = _Parser(toks)
    try:
        parser.instances()
    except MofError as exc:
        error = error or exc  # a string cut by the tokenizer is the cause; the instances before it are kept
    return parser.found, parser.aliases, error
