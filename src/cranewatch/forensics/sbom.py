"""CycloneDX 1.5 JSON SBOM of an image's package inventory.

One component per installed package (with its package URL), the scanned image as the
metadata component, and the vulnerable-component findings as CycloneDX vulnerabilities that
point at the affected components. The serial number is derived from the image digest, so the
same image gives the same SBOM apart from the timestamp.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cranewatch import __version__
from cranewatch.forensics.result import ScanResult


def cyclonedx(result: ScanResult) -> dict[str, Any]:
    """The SBOM document (a dict ready for ``json.dumps``)."""
    image = result.inputs[0]
    components = []
    refs: dict[tuple[str, str], str] = {}
    for package in result.inventory.packages:
        ref: str = package.purl
        if ref in refs.values():
            ref = f"{ref}#{package.path}"
        refs[(package.name, package.version)] = ref
        component: dict[str, Any] = {
            "type": "library" if package.manager in ("python", "npm") else "application",
            "bom-ref": ref, "name": package.name, "version": package.version, "purl": package.purl,
            "properties": [{"name": "cranewatch:manager", "value": package.manager}, {"name": "cranewatch:path", "value": package.path}],
        }
        if package.maintainer:
            component["supplier"] = {"name": package.maintainer}
        components.append(component)
    vulnerabilities = []
    for finding in result.findings:
        if finding.category != "vulnerable-component" or not finding.evidence:
            continue
        values = finding.evidence[0].values
        affected = refs.get((str(values.get("package")), str(values.get("version"))))
        if affected is None:
            continue
        vulnerabilities.append({
            "bom-ref": finding.id, "id": values.get("advisory"), "description": finding.title,
            "ratings": [{"severity": str(finding.severity), "method": "other"}],
            "affects": [{"ref": affected}],
            "recommendation": finding.remedy,
        })
    doc: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'cranewatch:' + image.sha256)}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "cranewatch", "version": __version__}]},
            "component": {
                "type": "operating-system" if result.inventory.os_release else "file",
                "bom-ref": "image", "name": Path(image.path).name or image.path,
                "version": result.inventory.os_release.get("VERSION_ID", image.sha256[:12]),
                "hashes": [{"alg": "SHA-256", "content": image.sha256}],
                "description": result.inventory.os_release.get("PRETTY_NAME", f"{image.format} image"),
            },
        },
        "components": components,
    }
    if vulnerabilities:
        doc["vulnerabilities"] = vulnerabilities
    return doc


def write_sbom(result: ScanResult, path: Path) -> None:
    path.write_text(json.dumps(cyclonedx(result), indent=2) + "\n", encoding="utf-8")
