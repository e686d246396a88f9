"""Rule data shipped as YAML beside the detectors (``detect/rules/*.yaml``), loaded once.

Each rule file has a JSON Schema beside it (``detect/rules/schemas/NAME.schema.json``, draft
2020-12). A file is read with a safe loader that also refuses a key given twice in one mapping
(YAML would silently keep the last), then checked against its schema; every problem is
reported at once with the file and line of the value at fault (``check_rule_file``, and
``cranewatch rules lint``). The detectors load a file only through ``rule_data``, which raises
the same located problems: a broken rule file stops a run with exit 3, never a traceback and
never a detector silently working from half its rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from cranewatch.errors import CranewatchError, Location, ProfileError

RULES_DIR = Path(__file__).parent / "rules"
SCHEMA_DIR = RULES_DIR / "schemas"


def rule_names() -> list[str]:
    """The rule files cranewatch ships (by name, without ``.yaml``)."""
    return sorted(p.stem for p in RULES_DIR.glob("*.yaml"))


@cache
def rule_data(name: str) -> dict[str, Any]:
    """The parsed, schema-checked ``rules/<name>.yaml``; a broken file is a located error."""
    path = RULES_DIR / f"{name}.yaml"
    data, problems = check_rule_file(path, name)
    if problems:
        first = problems[0]
        raise ProfileError(f"rule data: {first.message}"
                           + (f" (and {len(problems) - 1} more: cranewatch rules lint)"
                              if len(problems) > 1 else ""),
                           first.location, problems)
    assert isinstance(data, dict)
    return data


def check_rule_file(path: Path, kind: str | None = None) -> tuple[Any, list[CranewatchError]]:
    """Read and check a rule file: (its data, every problem with file and line).

    ``kind`` names the schema (default: the file's name without ``.yaml``).
    """
    kind = kind or path.stem
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ProfileError(f"cannot read rule data: {exc}", Location(file=where))]
    try:
        loader = _UniqueKeyLoader(text)  # a safe loader
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [ProfileError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                                   Location(file=where,
                                            line=None if mark is None else mark.line + 1))]
    if not isinstance(data, dict):
        return data, [ProfileError("rule data is not a mapping", Location(file=where, line=1))]
    schema = _schema(kind)
    if schema is None:
        return data, [ProfileError(f"no schema for rule data {kind!r} (known: "
                                   f"{', '.join(rule_names())})", Location(file=where))]
    problems: list[CranewatchError] = []
    for at, message in sorted(schema_errors(data, schema), key=lambda e: [str(p) for p in e[0]]):
        path_text = "/".join(str(p) for p in at) or "(top)"
        problems.append(ProfileError(f"{path_text}: {message}",
                                     Location(file=where, line=_line_of(node, at))))
    return data, problems


# The JSON Schema keywords the rule schemas use (draft 2020-12 meaning). Checked here rather
# than through the jsonschema package, whose import costs seconds on every run; the test-suite
# holds the two to the same verdicts on the shipped files and on broken ones.
KEYWORDS = frozenset({"$schema", "title", "$defs", "$ref", "type", "enum", "pattern", "minimum",
                      "maximum", "exclusiveMinimum", "minLength", "required", "properties",
                      "additionalProperties", "propertyNames", "minProperties", "items",
                      "minItems", "uniqueItems", "anyOf"})
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),)}


def schema_errors(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None,
                  at: tuple[Any, ...] = ()) -> Iterator[tuple[list[Any], str]]:
    """Every (path, message) where ``value`` breaks ``schema`` (the keywords of ``KEYWORDS``)."""
    root = schema if root is None else root
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"rule schema uses unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        yield from schema_errors(value, target, root, at)
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                   for k in kinds):
            yield list(at), f"{value!r} is not of type {', '.join(repr(k) for k in kinds)}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield list(at), f"{value!r} is not one of {schema['enum']!r}"
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield list(at), f"{value!r} does not match {schema['pattern']!r}"
        if len(value) < schema.get("minLength", 0):
            yield list(at), f"{value!r} is too short"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield list(at), f"{value!r} is less than the minimum of {schema['minimum']!r}"
        if "maximum" in schema and value > schema["maximum"]:
            yield list(at), f"{value!r} is greater than the maximum of {schema['maximum']!r}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            yield list(at), (f"{value!r} is less than or equal to the minimum of "
                             f"{schema['exclusiveMinimum']!r}")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                yield list(at), f"{name!r} is a required property"
        if len(value) < schema.get("minProperties", 0):
            yield list(at), f"{value!r} does not have enough properties"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema:
                for _, message in schema_errors(key, schema["propertyNames"], root, at):
                    yield list(at), f"property name {message}"
            if key in properties:
                yield from schema_errors(item, properties[key], root, (*at, key))
            elif extra is False:
                yield list(at), f"Additional properties are not allowed ({key!r} was unexpected)"
            elif isinstance(extra, dict):
                yield from schema_errors(item, extra, root, (*at, key))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            yield list(at), f"{value!r} should be non-empty" if schema["minItems"] == 1 else \
                f"{value!r} is too short"
        if schema.get("uniqueItems") and len({repr(v) for v in value}) < len(value):
            yield list(at), f"{value!r} has non-unique elements"
        if "items" in schema:
            for index, item in enumerate(value):
                yield from schema_errors(item, schema["items"], root, (*at, index))
    if "anyOf" in schema and not any(
            not list(schema_errors(value, option, root, at)) for option in schema["anyOf"]):
        yield list(at), f"{value!r} is not valid under any of the given schemas"


@cache
def _schema(kind: str) -> dict[str, Any] | None:
    path = SCHEMA_DIR / f"{kind}.schema.json"
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    """A safe loader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"the key {key!r} is given twice (first on line {seen[key]})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(node: Any, path: list[Any]) -> int | None:
    """The 1-based line of the YAML value at ``path`` (keys and list indexes), or of the
    deepest part of it that exists."""
    if node is None:
        return None
    line = int(node.start_mark.line) + 1
    for step in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(step):
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
        if child is None:
            break
        node = child
        line = int(node.start_mark.line) + 1
    return line


def lint(paths: list[Path] | None = None, kind: str | None = None) -> Iterator[tuple[Path, list[CranewatchError]]]:
    """Each rule file (the shipped ones when ``paths`` is None) with its problems."""
    for path in paths if paths is not None else [RULES_DIR / f"{n}.yaml" for n in rule_names()]:
        yield path, check_rule_file(path, kind)[1]
