"""Where an ELF file ends by its own headers: bytes past that end are data appended to it.

A compiler and linker never write past the last section or the section header table; a
maker who appends a configuration, an address or a second program to a distribution binary
does. Distribution programs carry no such tail (self-extracting installers and AppImages do).
"""

from __future__ import annotations

import struct

_NOBITS = 8  # SHT_NOBITS: .bss takes no room in the file


def elf_end(data: bytes) -> int | None:
    """The file offset just past everything the ELF headers describe, or ``None`` if the
    headers cannot be read from ``data`` (not ELF, truncated or inconsistent)."""
    if len(data) < 52 or not data.startswith(b"\x7fELF") or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide = data[4] == 2
    order = "<" if data[5] == 1 else ">"
    try:
        if wide:
            phoff, shoff = struct.unpack_from(order + "QQ", data, 0x20)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", data, 0x36)
        else:
            phoff, shoff = struct.unpack_from(order + "II", data, 0x1C)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", data, 0x2A)
        end = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
        for i in range(phnum):
            at = phoff + i * phentsize
            if wide:
                (offset,), (filesz,) = struct.unpack_from(order + "Q", data, at + 8), struct.unpack_from(order + "Q", data, at + 32)
            else:
                (offset,), (filesz,) = struct.unpack_from(order + "I", data, at + 4), struct.unpack_from(order + "I", data, at + 16)
            end = max(end, offset + filesz)
        for i in range(shnum):
            at = shoff + i * shentsize
            (kind,) = struct.unpack_from(order + "I", data, at + 4)
            offset, size = struct.unpack_from(order + ("QQ" if wide else "II"), data, at + (24 if wide else 16))
            if kind != _NOBITS:
                end = max(end, offset + size)
    except struct.error:
        return None
    return end
