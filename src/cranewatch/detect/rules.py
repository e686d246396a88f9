"""Rule data shipped as YAML beside the detectors (``detect/rules/*.yaml``), loaded once."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from cranewatch.errors import Location, ProfileError

RULES_DIR = Path(__file__).parent / "rules"


@cache
def rule_data(name: str) -> dict[str, Any]:
    """The parsed ``rules/<name>.yaml``; a broken file is a located error, not a crash."""
    path = RULES_DIR / f"{name}.yaml"
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is 10x faster
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # a safe loader
    except (OSError, yaml.YAMLError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ProfileError(f"cannot read rule data: {exc}",
                           Location(file=str(path), line=None if line is None else line + 1)) from None
    if not isinstance(data, dict):
        raise ProfileError("rule data is not a mapping", Location(file=str(path)))
    return data
