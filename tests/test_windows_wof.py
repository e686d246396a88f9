"""WOF-compressed files (``compact /exe``, CompactOS): read from an NTFS volume, not seen as zeros.

The independent writer is wimlib: a WIM resource compressed with XPRESS at 4, 8 or 16 KiB chunks,
or with LZX at 32 KiB chunks, has the layout of a ``WofCompressedData`` stream (a chunk table of
offsets counted from its end, then the chunks, each stored as is when it did not shrink) and the
same compressed formats (wimlib's own system-compression reader for NTFS-3G relies on this). The
expected content is always the original bytes given to ``wimlib-imagex capture``.

wimlib writes WOF files only on Windows (``wimapply --compact`` says so in its manual), so the
volume is built by hand: wimlib applies a file symbolic link (an NTFS reparse point), ``ntfscp``
writes the sparse-size unnamed stream and the ``WofCompressedData`` stream, and the reparse
attribute's value is rewritten to the 24-byte WOF buffer of the documentation (tag 0x80000017,
WOF_EXTERNAL_INFO {1, provider 2}, FILE_PROVIDER_EXTERNAL_INFO_V1 {1, algorithm}). No root needed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import mmap
import random
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from cranewatch.forensics import wof
from cranewatch.forensics.api import scan_image
from cranewatch.forensics.image import open_image
from cranewatch.forensics.wof import TAG_WOF, WofError, WofStream, algorithm, decompress, lzx
from test_forensics_ntfs import REVERSE_SHELL, _which, ntfs_volume
from windows_helpers import build_pe

WIM_COMPRESSION = {0: ("xpress", 4096), 1: ("lzx", 32768), 2: ("xpress", 8192), 3: ("xpress", 16384)}
_BENCH = importlib.util.spec_from_file_location("bench_wof", Path(__file__).parents[1] / "benchmarks/bench_wof.py")
assert _BENCH is not None and _BENCH.loader is not None
bench_wof = importlib.util.module_from_spec(_BENCH)
_BENCH.loader.exec_module(bench_wof)
wim_blobs = bench_wof.wim_blobs  # SHA-1 -> (stored bytes, size, flags) from a WIM's blob table, read independently
ALGOS = pytest.mark.parametrize("algo", [0, 1, 2, 3], ids=["XPRESS4K", "LZX", "XPRESS8K", "XPRESS16K"])


@pytest.fixture(params=["python", "wimlib"])
def decoder(request: pytest.FixtureRequest) -> str:
    """Each test so marked runs on the built-in decoder and on wimlib's (libwim15, beside wimtools)."""
    if request.param == "wimlib" and wof.wimlib()[0] is None:
        pytest.skip(f"wimlib's library is not loadable: {wof.wimlib()[1]}")
    return str(request.param)


def wof_streams(work: Path, files: dict[str, bytes], algo: int) -> dict[str, bytes]:
    """Each file's ``WofCompressedData`` content, as wimlib compresses it for ``algo``."""
    src = work / f"src{algo}"
    src.mkdir(parents=True)
    for name, content in files.items():
        (src / name).write_bytes(content)
    wim = work / f"c{algo}.wim"
    method, chunk = WIM_COMPRESSION[algo]
    subprocess.run([_which("wimlib-imagex"), "capture", str(src), str(wim), f"--compress={method}",
                    f"--chunk-size={chunk}", "--no-acls"], check=True, capture_output=True)
    blobs = wim_blobs(wim)
    out = {}
    for name, content in files.items():
        stored, original, flags = blobs[hashlib.sha1(content).digest()]
        assert original == len(content) and flags & 0x04, "wimlib stored it compressed"
        out[name] = stored
    return out


def _files(tmp_path: Path) -> dict[str, bytes]:
    rng = random.Random(7)
    program = build_pe(tmp_path / "svc.exe", "http://198.51.100.23:8080/beacon", company="Crane Vendor GmbH")
    return {
        "svc.exe": program.read_bytes() * 3,  # x86 code: the LZX call translation is exercised
        "update.sh": REVERSE_SHELL.encode() + b"".join(b"# filler %d\n" % rng.randrange(50) for _ in range(9000)),
        "mixed.bin": bytes(rng.randrange(256) for _ in range(20000)) + b"crane " * 9000,  # stored and packed chunks
    }


@ALGOS
def test_each_algorithm_gives_back_the_original_bytes(tmp_path: Path, algo: int, decoder: str) -> None:
    files = _files(tmp_path)
    for name, stream in wof_streams(tmp_path, files, algo).items():
        assert len(stream) < len(files[name])
        assert decompress(stream, len(files[name]), algo, decoder) == files[name], name


def wof_reparse(algo: int) -> bytes:
    return struct.pack("<IHHIIII", TAG_WOF, 16, 0, 1, 2, 1, algo)


def put_wof_streams(volume: Path, work: Path, path: str, size: int, stream: bytes) -> None:
    """Give ``path`` (a file symbolic link wimlib applied) a ``size``-byte unnamed stream of zeros
    and ``stream`` as its ``WofCompressedData`` stream, with ntfscp."""
    zeros, packed = work / "zeros", work / "packed"
    with open(zeros, "wb") as out:
        out.truncate(size)
    packed.write_bytes(stream)
    ntfscp = _which("ntfscp")
    subprocess.run([ntfscp, "-f", str(volume), str(zeros), "/" + path], check=True, capture_output=True)
    subprocess.run([ntfscp, "-f", "-N", "WofCompressedData", str(volume), str(packed), "/" + path], check=True,
                   capture_output=True)


def mark_wof(image: bytearray | mmap.mmap, targets: dict[str, int]) -> None:
    """Rewrite the reparse value of each symbolic link whose target is ``/<name>`` of ``targets``
    into the 24-byte WOF buffer of its algorithm, in one pass over the volume's bytes."""
    found = dict.fromkeys(targets, 0)
    for m in re.finditer(re.escape(b"\x0c\x00\x00\xa0"), image):
        window = bytes(image[m.start() : m.start() + 200])
        names = [name for name in targets if ("/" + name).encode("utf-16-le") in window
                 or ("\\" + name).encode("utf-16-le") in window]
        if not names:
            continue
        assert len(names) == 1, names
        found[names[0]] += 1
        value = m.start()
        header = value - 0x18
        assert struct.unpack_from("<I", image, header)[0] == 0xC0 and struct.unpack_from("<H", image, header + 0x14)[0] == 0x18
        assert value % 512 + 24 <= 510, "the new value does not cross a sector's update-sequence bytes"
        struct.pack_into("<I", image, header + 0x10, 24)
        image[value : value + 24] = wof_reparse(targets[names[0]])
    assert set(found.values()) == {1}, "each symbolic link's reparse attribute is found once"


def make_wof_file(volume: Path, work: Path, path: str, content: bytes, stream: bytes, algo: int) -> None:
    """Turn ``path`` (a file symbolic link wimlib applied, target ``/wof-<name>``) into a WOF file."""
    put_wof_streams(volume, work, path, len(content), stream)
    image = bytearray(volume.read_bytes())
    mark_wof(image, {"wof-" + path.rsplit("/", 1)[-1]: algo})
    volume.write_bytes(image)


@pytest.fixture(scope="module")
def wof_volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    work = tmp_path_factory.mktemp("wof")
    files = _files(work)
    tree = work / "tree"
    (tree / "ProgramData/Vendor").mkdir(parents=True)
    (tree / "Users/cms").mkdir(parents=True)
    (tree / "Users/cms/notes.txt").write_text("shift handover\n")
    layout = {0: "ProgramData/Vendor/svc.exe", 1: "Users/cms/update.sh", 2: "ProgramData/Vendor/mixed.bin",
              3: "ProgramData/Vendor/svc16.exe"}
    for path in layout.values():
        (tree / path).symlink_to("/wof-" + path.rsplit("/", 1)[-1])
    volume = ntfs_volume(tree, work / "v.ntfs")
    expected = {}
    for algo, path in layout.items():
        name = {3: "svc.exe"}.get(algo, path.rsplit("/", 1)[-1])
        stream = wof_streams(work / f"w{algo}", {name: files[name]}, algo)[name]
        make_wof_file(volume, work, path, files[name], stream, algo)
        expected[path] = files[name]
    return volume, expected


def test_wof_files_on_an_ntfs_volume_are_read_decompressed(wof_volume: tuple[Path, dict[str, bytes]]) -> None:
    volume, expected = wof_volume
    with open_image(volume) as image:
        for path, content in expected.items():
            assert image.entries[path].type == "file"
            assert image.disk_path(path).read_bytes() == content, path
            assert f"{path}:WofCompressedData" not in image.entries  # the packed stream is not scanned twice
        assert image.read_text("Users/cms/notes.txt") == "shift handover\n"
        assert not image.problems


def test_a_wof_compressed_backdoor_is_found(wof_volume: tuple[Path, dict[str, bytes]]) -> None:
    volume, _ = wof_volume
    found = scan_image(volume, workers=1)
    paths = {e.path for f in found.findings for e in f.evidence}
    assert "Users/cms/update.sh" in paths  # the reverse shell, LZX-compressed


def test_a_corrupt_chunk_table_is_a_located_problem(tmp_path: Path, wof_volume: tuple[Path, dict[str, bytes]]) -> None:
    volume, expected = wof_volume
    broken = tmp_path / "broken.ntfs"
    image = bytearray(volume.read_bytes())
    content = expected["Users/cms/update.sh"]
    stream = wof_streams(tmp_path, {"update.sh": content}, 1)["update.sh"]
    at = image.find(stream[:64])
    assert at > 0 and image.find(stream[:64], at + 1) < 0
    struct.pack_into("<I", image, at + 4, 0x7FFFFFF0)  # the second chunk's end far beyond the stream
    broken.write_bytes(image)
    with open_image(broken) as result:
        problems = [p for p in result.problems if p.startswith("Users/cms/update.sh")]
        assert len(problems) == 1, result.problems
        assert "WOF-compressed (LZX)" in problems[0] and "chunk table entry" in problems[0]
        assert "Users/cms/update.sh:WofCompressedData" in result.entries  # scanned as is instead
        assert result.disk_path("ProgramData/Vendor/svc.exe").read_bytes() == expected["ProgramData/Vendor/svc.exe"]


def test_corrupt_chunks_and_reparse_data_raise_located_errors(tmp_path: Path, decoder: str) -> None:
    content = _files(tmp_path)["update.sh"]
    stream = bytearray(wof_streams(tmp_path, {"update.sh": content}, 0)["update.sh"])
    chunks = -(-len(content) // 4096)
    table = 4 * (chunks - 1)
    second = table + struct.unpack_from("<I", stream, 0)[0]
    stream[second : second + 256] = b"\xff" * 256  # chunk 1's Huffman table: every length 15, over-subscribed
    with pytest.raises(WofError) as caught:
        decompress(bytes(stream), len(content), 0, decoder)
    assert f"chunk 1 at byte {second} (XPRESS4K)" in str(caught.value)
    with pytest.raises(WofError, match="provider 1 is not the file provider"):
        algorithm(struct.pack("<IHHIIII", TAG_WOF, 16, 0, 1, 1, 1, 0))
    with pytest.raises(WofError, match="unknown WOF compression algorithm 9"):
        algorithm(wof_reparse(9))
    assert algorithm(wof_reparse(1)) == 1


def test_an_lzx_uncompressed_block_built_by_hand() -> None:
    """wimlib never writes LZX's uncompressed block; built from the format: block type 3, a 16-bit
    size, padding to a 16-bit word, the three recent offsets, the bytes; then the x86 call
    translation is undone (an absolute target 100 at position 3 is the relative 97)."""
    body = b"abc\xe8" + struct.pack("<i", 100) + b"0123456789" * 3
    header = "011" + "0" + format(len(body), "016b")  # 20 bits, padded to 32
    header += "0" * (32 - len(header))
    words = [int(header[i : i + 16], 2) for i in (0, 16)]
    chunk = struct.pack("<HH", *words) + struct.pack("<III", 1, 1, 1) + body + b"\0" * (len(body) & 1)
    expected = b"abc\xe8" + struct.pack("<i", 97) + b"0123456789" * 3
    assert lzx(chunk, len(body)) == expected  # one chunk (as a stream it would be stored: it did not shrink)


@pytest.mark.parametrize("algo", [0, 1])
def test_damaged_streams_raise_wof_errors_only(tmp_path: Path, algo: int, decoder: str) -> None:
    """Bounded fuzz (fixed seed): a damaged stream decodes to something or raises ``WofError``."""
    content = _files(tmp_path)["update.sh"][:40000]
    stream = wof_streams(tmp_path, {"update.sh": content}, algo)["update.sh"]
    rng = random.Random(algo)
    errors = 0
    for _ in range(150):
        damaged = bytearray(stream)
        for _ in range(rng.randrange(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            out = decompress(bytes(damaged), len(content), algo, decoder)
        except WofError:
            errors += 1
        else:
            assert len(out) == len(content)
    assert errors  # some damage is noticed


def _call_heavy(rng: random.Random, size: int) -> bytes:
    """x86-like bytes dense in CALL (0xE8) opcodes, also in the last 10 bytes of every 32 KiB chunk
    (where the translation must stop) and with targets on both sides of the translation's limits."""
    targets = [0, 5, 100, -3, -40000, 11_999_999, 12_000_000, 0x7FFFFFFF, -0x80000000, 32767]
    words = [b"\xe8" + struct.pack("<i", t) for t in targets] + [b"\x48\x89\xe5", b"\x90" * 3, b"\xe8\xe8"]
    data = bytearray(b"".join(rng.choice(words) for _ in range(size // 3)))[:size]
    for end in range(32768, size + 1, 32768):
        data[end - 10 : end] = b"\xe8\x01\x00\x00\x00\xe8\xff\xff\xff\xff"
    return bytes(data)


@ALGOS
def test_both_decoders_give_identical_bytes_on_wimlib_data(tmp_path: Path, algo: int) -> None:
    """wimlib compresses; the built-in decoder and wimlib's give the original back, byte for byte,
    on CALL-dense code (LZX's translation at chunk ends), text, and random bytes (stored chunks)."""
    if wof.wimlib()[0] is None:
        pytest.skip(f"wimlib's library is not loadable: {wof.wimlib()[1]}")
    rng = random.Random(16)
    files = {"calls.bin": _call_heavy(rng, 5 * 32768 + 777), "text.ini": b"".join(
        b"Setting%d=%d\r\n" % (rng.randrange(90), rng.randrange(10**6)) for _ in range(12000)),
        "mixed.bin": rng.randbytes(40000) + b"crane " * 20000 + rng.randbytes(5000)}
    for name, stream in wof_streams(tmp_path, files, algo).items():
        python = decompress(stream, len(files[name]), algo, "python")
        assert python == files[name], name
        assert decompress(stream, len(files[name]), algo, "wimlib") == python, name


def test_wimlib_reads_the_hand_built_lzx_uncompressed_block_too() -> None:
    fast = wof.wimlib()[0]
    if fast is None:
        pytest.skip(f"wimlib's library is not loadable: {wof.wimlib()[1]}")
    body = b"abc\xe8" + struct.pack("<i", 100) + b"0123456789" * 3
    header = "011" + "0" + format(len(body), "016b") + "0" * 12
    chunk = struct.pack("<HH", int(header[:16], 2), int(header[16:], 2)) + struct.pack("<III", 1, 1, 1) + body
    assert fast.decode(chunk, len(body), 1) == lzx(chunk, len(body)) == b"abc\xe8" + struct.pack("<i", 97) + body[8:]


def test_a_truncated_chunk_table_is_a_located_error(tmp_path: Path, decoder: str) -> None:
    """A stream whose reader gives less than the chunk table (a short read from a damaged volume)
    is a WofError, not struct.error's traceback (regression: it was unpacked unchecked)."""
    content = _files(tmp_path)["update.sh"]
    stream = wof_streams(tmp_path, {"update.sh": content}, 1)["update.sh"]
    table = 4 * (-(-len(content) // 32768) - 1)
    with pytest.raises(WofError, match=f"chunk table of {table} bytes cannot be read whole"):
        WofStream(lambda off, n: stream[off : off + n][:-2], len(stream), len(content), 1, decoder)
    with pytest.raises(WofError, match=r"chunk table of \d+ chunks \(\d+ bytes\) is longer than the 8-byte stream"):
        decompress(stream[:8], len(content), 1, decoder)


def test_chunk_sizes_that_lie_are_located_errors(tmp_path: Path, decoder: str) -> None:
    content = _files(tmp_path)["update.sh"]
    stream = bytearray(wof_streams(tmp_path, {"update.sh": content}, 0)["update.sh"])
    chunks = -(-len(content) // 4096)
    table = 4 * (chunks - 1)
    # chunk 0 claims all but the last byte of the stream: more than the 4096 bytes it can hold
    struct.pack_into("<I", stream, 0, len(stream) - table - 1)
    for k in range(1, chunks - 1):
        struct.pack_into("<I", stream, 4 * k, len(stream) - table - 1)
    with pytest.raises(WofError, match=f"chunk 0 at byte {table} is {len(stream) - table - 1} bytes, more than its 4096"):
        decompress(bytes(stream), len(content), 0, decoder)
    # the file size says one chunk more than the table holds: the last chunk is then empty
    real = bytes(wof_streams(tmp_path / "again", {"update.sh": content}, 0)["update.sh"])
    with pytest.raises(WofError, match="chunk table entry"):
        decompress(real, len(content) + 4096 * 40, 0, decoder)


def test_damaged_streams_end_quickly_and_the_decoders_agree_where_both_read(tmp_path: Path) -> None:
    """Bounded fuzz (fixed seeds, all four algorithms, code and text): every damaged stream ends
    within a second, and wherever both decoders give bytes, they give the same bytes. (The one
    difference: wimlib reads past a chunk's end as zeros, where the built-in decoder stops after
    8 bytes and reports where; the wimlib path then reports that same error.)"""
    if wof.wimlib()[0] is None:
        pytest.skip(f"wimlib's library is not loadable: {wof.wimlib()[1]}")
    files = _files(tmp_path)
    both = 0
    for algo in (0, 1, 2, 3):
        for name in ("svc.exe", "update.sh"):
            content = files[name][:40000]
            stream = wof_streams(tmp_path / f"{algo}{name}", {name: content}, algo)[name]
            rng = random.Random(algo)
            for _ in range(40):
                damaged = bytearray(stream)
                for _ in range(rng.randrange(1, 6)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
                outs = []
                for decoder in ("python", "wimlib"):
                    started = time.process_time()
                    try:
                        outs.append(decompress(bytes(damaged), len(content), algo, decoder))
                    except WofError as exc:
                        assert re.search(r"WofCompressedData: chunk \d+ at byte \d+", str(exc)), exc
                        outs.append(None)
                    assert time.process_time() - started < 1.0
                if None not in outs:
                    both += 1
                    assert outs[0] == outs[1]
                if outs[1] is None:
                    assert outs[0] is None  # wimlib's path refuses only what the built-in decoder refuses
    assert both > 50


def test_without_wimlib_the_built_in_decoder_reads_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                                  wof_volume: tuple[Path, dict[str, bytes]]) -> None:
    """The NTFS child with no loadable wimlib gives the same bytes and one warning that names the
    package; an empty CRANEWATCH_LIBWIM chooses the built-in decoder and gives no warning."""
    volume, expected = wof_volume
    for value, warned in (("/nonexistent/libwim.so.15", True), ("", False)):
        monkeypatch.setenv(wof.LIBWIM_ENV, value)
        wof.wimlib.cache_clear()
        try:
            with open_image(volume) as image:
                for path, content in expected.items():
                    assert image.disk_path(path).read_bytes() == content, path
                notes = [w for w in image.warnings if "WOF-compressed files are decoded by the built-in" in w]
                assert len(notes) == (1 if warned else 0), image.warnings
                if warned:
                    assert "/nonexistent/libwim.so.15 cannot be loaded" in notes[0] and "libwim15" in notes[0]
                assert not image.problems
        finally:
            wof.wimlib.cache_clear()


def test_xpress_long_match_lengths_from_their_bytes() -> None:
    """[MS-XCA] 2.2.4: a 4-bit match length of 15 continues in a byte (added to 15), a byte of 255
    in a 16-bit length, and a 16-bit 0 in a 32-bit length (both whole, at least 15)."""
    long_match = wof._xpress_long_match
    assert long_match(b"\x07", 0) == (22, 1)
    assert long_match(b"\xff" + struct.pack("<H", 300), 0) == (300, 3)
    assert long_match(b"\xff\x00\x00" + struct.pack("<I", 70000), 0) == (70000, 7)
    for damaged, message in ((b"", "truncated at byte 0"), (b"\xff\x01", "truncated at byte 1"),
                             (b"\xff\x00\x00\x01", "truncated at byte 3"), (b"\xff\x03\x00", "bad match length at byte 0")):
        with pytest.raises(WofError, match=message):
            long_match(damaged, 0)
