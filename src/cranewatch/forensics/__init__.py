"""Pre-commissioning forensics: scan a crane computer's filesystem image for backdoor access.

``scan_image(path, reference=..., crane=...) -> ScanResult`` is the public API; the CLI
command ``cranewatch scan-image`` wraps it. See ``image`` (safe image access), ``checks``
(one module per check), ``rules`` (YARA), ``packages``/``sbom``/``vulndb`` (inventory, SBOM,
offline vulnerability matching).
"""

from __future__ import annotations

from cranewatch.forensics.api import GenuineSource, endpoint_policy, scan_image
from cranewatch.forensics.image import Entry, Image, Limits, open_image
from cranewatch.forensics.result import ReferenceDiff, ScanResult

__all__ = ["Entry", "GenuineSource", "Image", "Limits", "ReferenceDiff", "ScanResult", "endpoint_policy", "open_image", "scan_image"]
