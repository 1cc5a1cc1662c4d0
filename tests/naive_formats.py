"""Slow, obviously-correct twins of the format and statistics kernels (text_kernels, stats_kernels,
npy_kernels, hdf5_kernels)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np


def parse_text(text: str, columns: str = "txyp", frac_digits: int = 6) -> list[tuple[int, int, int, int]]:
    """Parse ``t x y p`` lines with Python's Decimal: exact by construction."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        toks = s.replace(",", " ").split()
        assert len(toks) == 4, line
        vals = dict(zip(columns, toks))
        t = Decimal(vals["t"]) * (Decimal(10) ** frac_digits)
        assert t == t.to_integral_value(), f"sub-resolution time in {line!r}"
        p = int(vals["p"])
        out.append((int(t), int(vals["x"]), int(vals["y"]), 0 if p == -1 else p))
    return out


def format_text(t, x, y, p) -> str:
    """``seconds.micro x y p`` lines with integer arithmetic in Python."""
    lines = []
    for tv, xv, yv, pv in zip(t.tolist(), x.tolist(), y.tolist(), p.tolist()):
        sign = "-" if tv < 0 else ""
        a = abs(tv)
        lines.append(f"{sign}{a // 1_000_000}.{a % 1_000_000:06d} {xv} {yv} {pv}\n")
    return "".join(lines)


def window_peak(t: np.ndarray, window_us: int) -> int:
    """Max over events i of #events with t[i] <= t < t[i] + window_us (brute force)."""
    best = 0
    for ti in t.tolist():
        best = max(best, int(np.count_nonzero((t >= ti) & (t < ti + window_us))))
    return best


def lzf_decompress(src: bytes, out_size: int) -> bytes | None:
    """liblzf's format, one token at a time with Python bytes: None if the stream is corrupt."""
    out = bytearray()
    ip = 0
    while ip < len(src):
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:
            run = src[ip:ip + ctrl + 1]
            if len(run) != ctrl + 1:
                return None
            out += run
            ip += ctrl + 1
        else:
            length = ctrl >> 5
            if length == 7:
                if ip >= len(src):
                    return None
                length += src[ip]
                ip += 1
            if ip >= len(src):
                return None
            start = len(out) - ((ctrl & 31) << 8) - src[ip] - 1
            ip += 1
            if start < 0:
                return None
            for k in range(length + 2):
                out.append(out[start + k])
        if len(out) > out_size:
            return None
    return bytes(out)


def events_or_first_bad(t, x, y, p, width, height, last_t, check_order, t_offset=0):
    """(events as tuples, (index, code)) for columns of Python ints: the converted events before
    the first bad one, and that event's index and code (1 outside the sensor, 2 backwards,
    3 p beyond int16), or (-1, 0) when all are good."""
    good = []
    prev = last_t
    for i, (tv, xv, yv, pv) in enumerate(zip(t, x, y, p)):
        tv += t_offset
        if not (0 <= xv < width and 0 <= yv < height):
            return good, (i, 1)
        if check_order and tv < prev:
            return good, (i, 2)
        if check_order:
            prev = tv
        if not -32768 <= pv <= 32767:
            return good, (i, 3)
        good.append((tv, xv, yv, pv))
    return good, (-1, 0)
