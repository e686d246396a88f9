#!/usr/bin/env bash
# Build (once) the clean Debian minbase root filesystem that the forensics tests scan.
#
# The tree is cached under ${CRANEWATCH_CACHE:-<repo>/.cache}/rootfs/bookworm-minbase and reused
# while its stamp file exists; the .deb files are kept in .../debs so a rebuild needs no download.
# Needs root (debootstrap creates device nodes and chowns files). Prints the tree's path.
# Usage: scripts/build-test-rootfs.sh [--force]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${CRANEWATCH_CACHE:-$repo/.cache}
suite=${CRANEWATCH_ROOTFS_SUITE:-bookworm}
mirror=${CRANEWATCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
target=$cache/rootfs/$suite-minbase
stamp=$target.ok  # beside the tree, never inside: the scanner must see a pristine image

if [ "${1:-}" = "--force" ]; then
  rm -rf "$target" "$stamp"
fi
if [ -f "$stamp" ]; then
  echo "$target"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "build-test-rootfs: needs root for debootstrap" >&2
  exit 4
fi
command -v debootstrap >/dev/null || { echo "build-test-rootfs: debootstrap missing (scripts/install-deps.sh)" >&2; exit 4; }

mkdir -p "$cache/rootfs/debs"
work=$(mktemp -d "$cache/rootfs/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --cache-dir="$cache/rootfs/debs" "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 || {
  tail -n 30 "$work/log" >&2
  echo "build-test-rootfs: debootstrap failed" >&2
  exit 4
}
# A scanned image carries no apt lists or caches worth time; keep the tree small and stable.
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* "$work/root/var/log/"*
rm -rf "$target"
mv "$work/root" "$target"
date -u +%FT%TZ >"$stamp"
echo "$target"
