"""Numba kernel for the N-MNIST/SLAYER 40-bit layout: one pass from bytes to event columns.

Pure array function (numpy/numba only).
"""

from numba import njit

OVERFLOW_Y = 240
OVERFLOW_STEP_US = 1 << 13


@njit(cache=True)
def decode_records(raw, overflows, t, x, y, p):
    """Decode ``raw`` (uint8, a whole number of 5-byte records) into t/x/y/p.

    A record with y == 240 is an overflow marker: every later timestamp gains 2**13 us.
    ``overflows`` is the marker count before this chunk. Returns (n_events, overflows).
    Byte 0 x; byte 1 y; byte 2 bit 7 p, bits 6..0 t[22:16]; bytes 3-4 t[15:0] (big-endian).
    """
    n = 0
    for r in range(raw.shape[0] // 5):
        b = 5 * r
        yy = raw[b + 1]
        if yy == OVERFLOW_Y:
            overflows += 1
            continue
        x[n] = raw[b]
        y[n] = yy
        b2 = raw[b + 2]
        p[n] = b2 >> 7
        t[n] = ((b2 & 0x7F) << 16 | raw[b + 3] << 8 | raw[b + 4]) + OVERFLOW_STEP_US * overflows
        n += 1
    return n, overflows


@njit(cache=True)
def record_of_event(raw, k):
    """Index of the record holding the k-th (0-based) non-overflow event (for error offsets)."""
    seen = 0
    for r in range(raw.shape[0] // 5):
        if raw[5 * r + 1] != OVERFLOW_Y:
            if seen == k:
                return r
            seen += 1
    return -1
