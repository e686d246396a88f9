"""``cranewatch scan-image``: forensic scan of a crane computer's filesystem image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cranewatch.commands import OUT_HELP, fail_on_met, write_out
from cranewatch.errors import ExitCode, UsageError
from cranewatch.forensics import GenuineSource, Limits, endpoint_policy, scan_image
from cranewatch.forensics.render import render_html, render_jsonl, render_text
from cranewatch.forensics.result import ScanResult
from cranewatch.forensics.sbom import write_sbom
from cranewatch.model import Severity
from cranewatch.report.terminal import printable

EXAMPLE = """\
Example:
  cranewatch scan-image cms-pc.tar.gz --crane STS-07 --profile profiles/sts-07.toml \\
      --reference cms-pc-golden.squashfs --vulndb osv/ --sbom cms-pc.cdx.json --fail-on high
  cranewatch scan-image cms-pc.tar.gz --db cranewatch.db --crane STS-07 --component CMS
  cranewatch scan-image cms-pc.tar.gz --distro-packages /var/cache/apt/archives   # or --fetch-packages

Inputs: a directory tree, tar (.gz/.xz/.bz2/.zst), zip, cpio (newc/odc), squashfs or a raw
ext2/3/4 partition image (read with debugfs, never mounted), an NTFS volume (libtsk, never
mounted; a copy of C:\\ as a folder or zip is read as a Windows collection too), or a whole disk: raw MBR/GPT
(also .gz/.xz/.zst), qcow2, VMDK, VHD, VHDX (qemu-img) or E01 (ewfexport); each partition is
read by its content and named in the findings (p2:/etc/rc.local). Any other file is taken for
a firmware blob or vendor update package: the filesystems and archives inside are carved by
signature and structure and named by their offset (@512:/etc/init.d/S99x). Nothing from the
image is run, and symlinks resolve inside the image, never on the analysis station.

Trust: the image's package database is the maker's claim. Package files are spared nothing
unless they match the distribution's genuine packages (--distro-packages, --fetch-packages);
a file that differs from its genuine package is reported as a backdoor.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scan-image",
        help="find backdoors, modems, remote access and weak settings in a filesystem image",
        description="Pre-commissioning forensics of one crane computer's filesystem image.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="directory, tar/zip/cpio archive, squashfs or ext2/3/4 image, a whole disk, or a firmware blob")
    parser.add_argument("--crane", help="crane id for the findings (default: the profile's crane id)")
    parser.add_argument("--reference", metavar="PATH", help="golden or previous image: report what was added or changed and suppress findings it has too")
    parser.add_argument("--distro-packages", action="append", default=[], metavar="DIR",
                        help="the distribution's genuine packages (.deb, .rpm, .apk, .ipk files: an apt cache, a mirror's pool; repeatable): "
                        "package files are verified against them, not against the image's own checksums")
    parser.add_argument("--fetch-packages", action="store_true",
                        help="download the installed package versions with this machine's apt (apt-get download) into "
                        "--package-cache and verify against them")
    parser.add_argument("--archive", metavar="URL",
                        help="with or without --fetch-packages: fetch the installed versions from this Debian-layout "
                        "archive (a mirror, or a snapshot: https://snapshot.debian.org/archive/debian/YYYYMMDDTHHMMSSZ) "
                        "instead of this machine's apt")
    parser.add_argument("--package-cache", metavar="DIR", help="where --fetch-packages keeps .deb files (default: ~/.cache/cranewatch/debs)")
    parser.add_argument("--show-suppressed", action="store_true", help="with --reference, keep findings the reference has too")
    parser.add_argument("--profile", metavar="TOML", help="crane profile: its zones and allowed outside endpoints classify addresses")
    parser.add_argument("--zone", action="append", default=[], metavar="CIDR",
                        help="the crane LAN (repeatable), beside or instead of the profile's; without "
                        "--profile or --zone private ranges are judged generically and the warnings say so")
    parser.add_argument("--allow", action="append", default=[], metavar="CIDR|HOST", help="an endpoint that is expected (repeatable)")
    parser.add_argument("--rules", metavar="DIR", help="directory of extra YARA rules (*.yar)")
    parser.add_argument("--vulndb", metavar="PATH", help="OSV JSON file/directory or Debian security tracker JSON (offline)")
    parser.add_argument("--sbom", metavar="FILE", help="write a CycloneDX 1.5 JSON SBOM of the image's packages")
    parser.add_argument("--format", choices=("text", "jsonl", "html"), default="text")
    parser.add_argument("--out", metavar="FILE", help="write the report here instead of stdout" + OUT_HELP)
    parser.add_argument("--min-severity", default="info", help="text output: hide findings below this severity")
    parser.add_argument("--fail-on", metavar="SEVERITY", help="exit 1 when a finding of this severity or worse is found")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default: the available cores)")
    parser.add_argument("--max-bytes", type=int, default=Limits().max_total_bytes, help="read at most this many content bytes; the rest is reported as not scanned (exit 3)")
    parser.add_argument("--max-files", type=int, default=Limits().max_files, help="read at most this many members; the rest is reported as not scanned (exit 3)")
    parser.add_argument("--db", metavar="FILE", help="record the scan (inputs with sha256, findings, SBOM) in this cranewatch database for --crane; without --db nothing is written")
    parser.add_argument("--component", metavar="NAME", help="with --db: the registered part of the crane this image is from (e.g. CMS, OCR)")
    parser.set_defaults(func=run)


def _severity(text: str | None, option: str) -> Severity | None:
    if text is None:
        return None
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    fail_on = _severity(args.fail_on, "--fail-on")
    min_severity = _severity(args.min_severity, "--min-severity") or Severity.INFO
    policy, profile_crane = endpoint_policy(profile=args.profile, allow=args.allow, zone=args.zone)
    if args.component and not args.db:
        raise UsageError("--component needs --db (it names the part the recorded scan is of)")
    from cranewatch.gate import open_recording_store, record_image_scan, recording_crane

    # checked before the scan, which may take minutes: the crane must be registered to record for
    store = open_recording_store(args.db) if args.db else None
    try:
        crane = (recording_crane(store, args.crane or profile_crane, component=args.component)
                 if store else args.crane or profile_crane)
        result = scan_image(
            args.image,
            reference=args.reference,
            crane=crane,
            rules=args.rules,
            vulndb=args.vulndb,
            policy=policy,
            limits=Limits(max_total_bytes=args.max_bytes, max_files=args.max_files),
            workers=args.workers or None,
            show_suppressed=args.show_suppressed,
            genuine=GenuineSource(
                tuple(args.distro_packages), args.fetch_packages or bool(args.archive),
                Path(args.package_cache) if args.package_cache else None, args.archive,
            ),
        )
        _write_report(args, result, min_severity)
        if store is not None and crane is not None:
            run_id = record_image_scan(store, crane, result, component=args.component)
            print(f"cranewatch: recorded as run {run_id} of {crane} in {store.where}", file=sys.stderr)
    finally:
        if store is not None:
            store.close()
    if not result.complete:
        # What could be read was scanned and reported; the exit code says it was not all.
        print(f"cranewatch: error: {printable(args.image)}: scan incomplete, {len(result.problems)} problem(s):",
              file=sys.stderr)
        for problem in result.problems[:10]:
            print(f"  {printable(problem)}", file=sys.stderr)
        return int(ExitCode.INPUT)
    if fail_on_met(result.findings, fail_on):
        return int(ExitCode.FINDINGS)
    return int(ExitCode.OK)


def _write_report(args: argparse.Namespace, result: ScanResult, min_severity: Severity) -> None:
    if args.format == "text":
        output = render_text(result, min_severity=min_severity)
    elif args.format == "jsonl":
        output = "".join(line + "\n" for line in render_jsonl(result))
    else:
        output = render_html(result)
    # Image file names need not be valid UTF-8: undecodable bytes are written as escapes.
    write_out(output, args.out, errors="backslashreplace")
    if args.sbom:
        write_sbom(result, Path(args.sbom))
