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
