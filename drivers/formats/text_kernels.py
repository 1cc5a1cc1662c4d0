"""Numba kernels for the text event format: exact decimal parsing and formatting of ``t x y p`` lines.

Pure array functions (numpy/numba only). Timestamps are parsed as decimal strings, never as
floats, so ``0.000001`` s is exactly 1 us.
"""

import numpy as np
from numba import njit

# error codes returned by parse_lines
OK = 0
TOO_FEW_FIELDS = 1
BAD_NUMBER = 2
SUB_RESOLUTION = 3
TOO_MANY_FIELDS = 4
OUT_OF_RANGE = 5
BAD_POLARITY = 6


@njit(cache=True)
def _is_sep(c):
    return c == 32 or c == 9 or c == 44  # space, tab, comma


@njit(cache=True)
def parse_lines(buf, order, frac_digits, t, x, y, p):
    """Parse ASCII lines of 4 numeric fields from ``buf`` (uint8) into t/x/y/p.

    ``order[j]`` is the field (0=t, 1=x, 2=y, 3=p) in column j. The time column is a decimal
    scaled by 10**frac_digits to integer us; non-zero digits beyond that resolution are an
    error. Lines starting with '#' and blank lines are skipped; p = -1 is read as 0.
    Returns (n_events, error_byte_position or -1, error_code).
    """
    n = 0
    i = 0
    size = buf.shape[0]
    vals = np.zeros(4, np.int64)
    while i < size:
        c = buf[i]
        if c == 10 or c == 13 or c == 32 or c == 9:
            i += 1
            continue
        if c == 35:  # '#': comment line
            while i < size and buf[i] != 10:
                i += 1
            continue
        for col in range(4):
            while i < size and _is_sep(buf[i]):
                i += 1
            if i >= size or buf[i] == 10 or buf[i] == 13:
                return n, i, TOO_FEW_FIELDS
            start = i
            neg = False
            if buf[i] == 45:
                neg = True
                i += 1
            elif buf[i] == 43:
                i += 1
            v = 0
            nd = 0
            while i < size and buf[i] >= 48 and buf[i] <= 57:
                if nd >= 17:
                    return n, start, OUT_OF_RANGE
                v = v * 10 + (buf[i] - 48)
                nd += 1
                i += 1
            field = order[col]
            if field == 0:
                fd = 0
                if i < size and buf[i] == 46:  # '.'
                    i += 1
                    while i < size and buf[i] >= 48 and buf[i] <= 57:
                        if fd < frac_digits:
                            v = v * 10 + (buf[i] - 48)
                            fd += 1
                            nd += 1
                        elif buf[i] != 48:
                            return n, i, SUB_RESOLUTION
                        else:
                            nd += 1
                        i += 1
                while fd < frac_digits:
                    v = v * 10
                    fd += 1
            if nd == 0 or (i < size and not (_is_sep(buf[i]) or buf[i] == 10 or buf[i] == 13)):
                return n, start, BAD_NUMBER
            if field != 0 and v > 32767:
                return n, start, OUT_OF_RANGE
            vals[field] = -v if neg else v
        while i < size and (_is_sep(buf[i]) or buf[i] == 13):
            i += 1
        if i < size and buf[i] != 10:
            return n, i, TOO_MANY_FIELDS
        pv = vals[3]
        if pv == -1:
            pv = 0
        elif pv != 0 and pv != 1:
            return n, i, BAD_POLARITY
        t[n] = vals[0]
        x[n] = vals[1]
        y[n] = vals[2]
        p[n] = pv
        n += 1
    return n, -1, OK


@njit(cache=True)
def _put_uint(out, pos, v, min_digits):
    """Write decimal digits of v >= 0 (zero-padded to min_digits) at pos; return new pos."""
    tmp = np.empty(20, np.uint8)
    k = 0
    while v > 0 or k < min_digits:
        tmp[k] = 48 + v % 10
        v //= 10
        k += 1
    for j in range(k):
        out[pos + j] = tmp[k - 1 - j]
    return pos + k


@njit(cache=True)
def format_lines(t, x, y, p, out):
    """Write ``"<seconds>.<6 digits> x y p\\n"`` per event into ``out`` (uint8, >= 64 bytes/event).

    Returns the number of bytes written. Exact: integer arithmetic only.
    """
    pos = 0
    for i in range(t.shape[0]):
        tv = t[i]
        if tv < 0:
            out[pos] = 45
            pos += 1
            tv = -tv
        pos = _put_uint(out, pos, tv // 1000000, 1)
        out[pos] = 46
        pos += 1
        pos = _put_uint(out, pos, tv % 1000000, 6)
        for v in (np.int64(x[i]), np.int64(y[i]), np.int64(p[i])):
            out[pos] = 32
            pos += 1
            if v < 0:
                out[pos] = 45
                pos += 1
                v = -v
            pos = _put_uint(out, pos, v, 1)
        out[pos] = 10
        pos += 1
    return pos
