"""One module per CLI command; each exposes ``register(subparsers)`` (see ``cranewatch.cli``)."""

from __future__ import annotations

import argparse

from cranewatch.model import Severity


def severity_option(text: str) -> Severity:
    """argparse ``type=`` for severity options (``--fail-on``, ``--min-severity``)."""
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
