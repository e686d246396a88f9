"""The bundled example crane image: a tiny CMS-PC root tree with planted artefacts.

``build_tree(root)`` writes a miniature Debian-like system (os-release, accounts, a dpkg
database whose md5sums match the files, a few ELF programs taken from this machine's ``true``)
and ``artefacts.plant`` adds the backdoors. ``build_demo_image(out)`` packs both as a
reproducible tar.gz (fixed times, sorted members, numeric owners) of a few dozen KB:
``src/cranewatch/data/images/sts07-cms.tar.gz`` is made by

    .venv/bin/python -m cranewatch.forensics.demo_image src/cranewatch/data/images/sts07-cms.tar.gz

(``scripts/make-demo-image.sh`` runs exactly that). Nothing in it is a real secret.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from cranewatch.forensics.artefacts import Planted, plant, sha512_crypt, small_elf

_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed member times make the archive reproducible

# package → {path: content}; each file is recorded in the package's .list and .md5sums.
_PACKAGES: dict[str, tuple[str, dict[str, str | bytes | None]]] = {
    "base-files": ("12.4+deb12u5", {
        "etc/debian_version": "12.5\n",
        "usr/lib/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
    }),
    "coreutils": ("9.1-1", {"usr/bin/true": None, "usr/bin/ls": None, "usr/bin/cat": None}),
    "debianutils": ("5.7-0.5~deb12u1", {
        "usr/bin/which.debianutils": '#!/bin/sh\nset -ef\nprintf "which: %s\\n" "$*"\n',
    }),
    "login": ("1:4.13+dfsg1-1+b1", {"usr/bin/su": None}),
    "cms-hmi": ("3.2.7-1", {
        "opt/cms/bin/cms-hmi": None,
        "opt/cms/share/README": "STS crane management system HMI\n",
    }),
}
_CONFFILES = {"etc/cms/hmi.conf": ("cms-hmi", "# HMI settings\nplc = 10.20.7.10:502\nsyslog = 10.20.0.9\n")}


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def build_tree(root: Path) -> None:
    """A miniature Debian-like CMS-PC system under ``root`` (clean: no artefacts)."""
    elf = small_elf(Path("/nonexistent"))
    status = []
    for package, (version, files) in _PACKAGES.items():
        listing, sums = [], []
        for path, content in files.items():
            data = elf if content is None else content.encode() if isinstance(content, str) else content
            dest = root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            os.chmod(dest, 0o755 if content is None or data.startswith(b"#!") else 0o644)
            listing.append("/" + path)
            sums.append(f"{_md5(data)}  {path}")
        conffiles = ""
        for path, (owner, text) in _CONFFILES.items():
            if owner == package:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
                listing.append("/" + path)
                conffiles += f"\n /{path} {_md5(text.encode())}"
        info = root / "var/lib/dpkg/info"
        info.mkdir(parents=True, exist_ok=True)
        (info / f"{package}.list").write_text("/.\n" + "\n".join(listing) + "\n")
        (info / f"{package}.md5sums").write_text("\n".join(sums) + "\n")
        status.append(
            f"Package: {package}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n"
            f"Maintainer: {'STS Crane Vendor <support@crane-vendor.invalid>' if package == 'cms-hmi' else 'Debian <debian-devel@lists.debian.org>'}\n"
            f"Version: {version}\nDescription: {package}" + (f"\nConffiles:{conffiles}" if conffiles else "") + "\n"
        )
    (root / "var/lib/dpkg/status").write_text("\n".join(status))
    os.chmod(root / "usr/bin/su", 0o4755)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/hostname").write_text("sts07-cms\n")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "cms:x:1000:1000:CMS operator:/home/cms:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (root / "etc/shadow").write_text(
        f"root:{sha512_crypt('Qp7#vT2!sts07-root', 'Rt5mXw8a')}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n"
        f"cms:{sha512_crypt('lV9$e3Zr-operator', 'Cm2sQp0z')}:19700:0:99999:7:::\nnobody:*:19700:0:99999:7:::\n"
    )
    os.chmod(root / "etc/shadow", 0o640)
    (root / "etc/group").write_text("root:x:0:\ndaemon:x:1:\ncms:x:1000:\nnogroup:x:65534:\n")
    for directory in ("bin", "sbin", "lib"):
        (root / directory).symlink_to(f"usr/{directory}")
    for directory in ("usr/sbin", "usr/lib", "home/cms", "root", "tmp", "dev", "proc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "dev/fd").symlink_to("/proc/self/fd")  # as on every Linux root; must not lead to the host


def build_demo_image(out: Path) -> list[Planted]:
    """Write the demo image (tar.gz) to ``out``; returns what a scan must find in it."""
    with tempfile.TemporaryDirectory(prefix="cranewatch-demo-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        build_tree(root)
        planted = plant(root, package_file="usr/bin/which.debianutils")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = _EPOCH, 0, 0, "root", "root"
                if info.isreg():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(buffer.getvalue())
    return planted


def bundled_demo_image() -> Path:
    """The shipped example image (package data)."""
    return Path(str(resources.files("cranewatch").joinpath("data/images/sts07-cms.tar.gz")))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "src/cranewatch/data/images/sts07-cms.tar.gz")
    planted = build_demo_image(out)
    print(f"{out}: {out.stat().st_size} bytes, {len(planted)} planted artefacts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
