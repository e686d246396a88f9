"""The forensic checks, one module each; ``FILE_CHECKS`` and ``IMAGE_CHECKS`` list them.

Adding a check is one module plus one line here (see ``checks.base`` for the interface).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cranewatch.forensics.checks import (
    accounts,
    endpoints,
    integrity,
    oob,
    persistence,
    remote_access,
    weak_config,
    yara_rules,
)
from cranewatch.forensics.checks.base import FileView, ScanContext
from cranewatch.forensics.image import Image
from cranewatch.model import Finding

FileCheck = Callable[[FileView, ScanContext], Iterator[Finding]]
ImageCheck = Callable[[Image, ScanContext], Iterator[Finding]]

FILE_CHECKS: tuple[tuple[str, FileCheck], ...] = (
    (oob.NAME, oob.check_file),
    (remote_access.NAME, remote_access.check_file),
    (persistence.NAME, persistence.check_file),
    (accounts.NAME, accounts.check_file),
    (weak_config.NAME, weak_config.check_file),
    (integrity.NAME, integrity.check_file),
    (endpoints.NAME, endpoints.check_file),
    (yara_rules.NAME, yara_rules.check_file),
)
IMAGE_CHECKS: tuple[tuple[str, ImageCheck], ...] = (
    (accounts.NAME, accounts.check_image),
    (weak_config.NAME, weak_config.check_image),
    (integrity.NAME, integrity.check_image),
    (oob.NAME, oob.check_image),
)
