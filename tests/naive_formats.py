"""Slow, obviously-correct twins of the format and statistics kernels (text_kernels, stats_kernels)."""

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
