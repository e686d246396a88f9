"""XML from an image, parsed without trusting it: no DTDs, no entities, no external fetches.

defusedxml when it is installed; otherwise the standard library's parser after refusing any
document that declares a DTD (which is where entity expansion bombs and external entities live).
Windows writes task and profile XML in UTF-16 with a BOM; both encodings are accepted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

try:  # optional: the hardened parser
    from defusedxml import ElementTree as _defused
    from defusedxml.common import DefusedXmlException
except ImportError:  # pragma: no cover - depends on the environment
    _defused = None
    DefusedXmlException = ValueError

_DOCTYPE = re.compile(r"<!DOCTYPE|<!ENTITY", re.I)


class UnsafeXml(ValueError):
    """The document is not well-formed or declares a DTD."""


def decode_xml(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if len(data) > 1 and data[1:2] == b"\x00":
        return data.decode("utf-16-le", "replace")
    return data.decode("utf-8-sig", "replace")


def parse_xml(data: bytes) -> ElementTree.Element:
    """The root element of ``data``; ``UnsafeXml`` for a DTD or a document that does not parse."""
    text = decode_xml(data)
    # The encoding declaration would contradict the already-decoded text.
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    if _DOCTYPE.search(text):
        raise UnsafeXml("declares a DTD or entities (refused)")
    try:
        if _defused is not None:
            return _defused.fromstring(text)
        return ElementTree.fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise UnsafeXml(str(exc)) from exc


def local(tag: str) -> str:
    """A tag without its namespace: ``{http://...}Command`` → ``Command``."""
    return tag.rsplit("}", 1)[-1]


def texts(root: ElementTree.Element, name: str) -> list[str]:
    """The text of every element called ``name`` (any namespace), stripped."""
    return [(el.text or "").strip() for el in root.iter() if local(el.tag) == name]
