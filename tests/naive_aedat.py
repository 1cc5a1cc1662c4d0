"""Slow, obviously-correct twins of the AEDAT kernels (drivers/formats/aedat_kernels.py).

One record, packet or struct at a time with ``struct.unpack``; the test files compare the
kernels with these over parametrised random inputs.
"""

from __future__ import annotations

import struct

import numpy as np


def naive_aedat2(data: bytes, family: str, width: int):
    """Slow twin of the kernel (jAER layout, no errors expected): one record at a time."""
    out, epoch, prev = [], 0, None
    for i in range(len(data) // 8):
        a, ts = struct.unpack_from(">II", data, 8 * i)
        if prev is not None and ts < prev and prev - ts > 2**31:
            epoch += 2**32
        prev = ts
        if family == "dvs128":
            if a & 0x80008000:
                continue
            out.append((epoch + ts, width - 1 - ((a >> 1) & 127), (a >> 8) & 127, 1 - (a & 1)))
        else:
            if a & 0x80000000 or a & 0x400:
                continue
            out.append((epoch + ts, width - 1 - ((a >> 12) & 1023), (a >> 22) & 511, (a >> 11) & 1))
    return np.array(out, np.int64).reshape(-1, 4)


def naive_aedat31(data: bytes):
    """Slow twin of the packet walker: struct.unpack per header and per event."""
    pos, out = 0, []
    while pos < len(data):
        ptype, _, size, tsoff, ovf, cap, num, _ = struct.unpack_from("<hhiiiiii", data, pos)
        pos += 28
        if ptype == 1:
            for i in range(num):
                d, = struct.unpack_from("<I", data, pos + i * size)
                ts, = struct.unpack_from("<i", data, pos + i * size + tsoff)
                if d & 1:
                    out.append(((ovf << 31) | ts, (d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, (d >> 1) & 1))
        pos += cap * size
    return np.array(out, np.int64).reshape(-1, 4)


def naive_aedat4_events(buf: bytes, off: int, n: int):
    """(t, x, y, on) of ``n`` 16-byte Event structs at ``buf[off:]``."""
    return np.array([struct.unpack_from("<qhhB", buf, off + 16 * i) for i in range(n)], np.int64).reshape(-1, 4)


def naive_xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32, straight from the specification (Python ints, masked to 32 bits)."""
    p1, p2, p3, p4, p5, m = 2654435761, 2246822519, 3266489917, 668265263, 374761393, 0xFFFFFFFF

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & m

    n, i = len(data), 0
    if n >= 16:
        v = [(seed + p1 + p2) & m, (seed + p2) & m, seed & m, (seed - p1) & m]
        while i + 16 <= n:
            for j in range(4):
                lane, = struct.unpack_from("<I", data, i + 4 * j)
                v[j] = (rotl((v[j] + lane * p2) & m, 13) * p1) & m
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & m
    else:
        h = (seed + p5) & m
    h = (h + n) & m
    while i + 4 <= n:
        w, = struct.unpack_from("<I", data, i)
        h = (rotl((h + w * p3) & m, 17) * p4) & m
        i += 4
    while i < n:
        h = (rotl((h + data[i] * p5) & m, 11) * p1) & m
        i += 1
    h = ((h ^ (h >> 15)) * p2) & m
    h = ((h ^ (h >> 13)) * p3) & m
    return h ^ (h >> 16)


def naive_lz4_block(block: bytes, strict: bool = False) -> bytes:
    """Decode one LZ4 block one byte at a time, as the block format specification describes it.

    ``strict``: raise ValueError where the specification says the block is invalid (a length,
    literal run or offset cut short by the end of the block, an offset of 0 or reaching before
    the start of the output), instead of failing however Python happens to fail."""
    out, i = bytearray(), 0
    while i < len(block):
        token = block[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                if strict and i >= len(block):
                    raise ValueError("literal length cut short")
                lit += block[i]
                i += 1
                if block[i - 1] != 255:
                    break
        if strict and i + lit > len(block):
            raise ValueError("literals cut short")
        out += block[i:i + lit]
        i += lit
        if i >= len(block):
            break
        if strict and i + 2 > len(block):
            raise ValueError("offset cut short")
        off = block[i] | (block[i + 1] << 8)
        i += 2
        ml = token & 15
        if ml == 15:
            while True:
                if strict and i >= len(block):
                    raise ValueError("match length cut short")
                ml += block[i]
                i += 1
                if block[i - 1] != 255:
                    break
        if strict and (off == 0 or off > len(out)):
            raise ValueError(f"offset {off} with {len(out)} bytes out")
        for _ in range(ml + 4):
            out.append(out[-off])
    return bytes(out)
