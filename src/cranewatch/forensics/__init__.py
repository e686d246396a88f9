"""Filesystem-image forensics: safe image access, one check per module, YARA, SBOM."""
