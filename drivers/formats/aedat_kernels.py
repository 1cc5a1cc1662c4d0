"""Numba kernels decoding AEDAT 2.0, 3.1 and 4 event payloads into event columns.

Pure array functions (numpy/numba/math only). The format modules wrap them: they read the file
in chunks, pass byte buffers (``uint8``) and the columns of an ``EVENT_DTYPE`` output array
(``ev["t"]``, ``ev["x"]``, ...: strided views, written in place), and turn the error codes the
kernels return into :class:`RecordingError` messages with the byte offset.

Error codes shared by all kernels (``ERR_*``): the kernels stop at the first bad event and
report its index/offset, so the wrapper can name the exact byte.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ERR_NONE = 0
ERR_BACKWARDS = 1      # timestamp smaller than the previous one (not a wrap)
ERR_COORD = 2          # x/y outside the sensor
ERR_PACKET = 3         # AEDAT 3.1 packet header inconsistent
ERR_TRUNCATED = 4      # AEDAT 3.1 packet runs past the end of the file
ERR_POLARITY = 5       # AEDAT 4 polarity byte is neither 0 nor 1
ERR_TIMESTAMP = 6      # negative timestamp field

# AEDAT 2.0 address layouts
LAYOUT_DVS128_JAER = 0  # x = W-1 - bits 1..7, y = bits 8..14, p = 1 - bit 0 (jAER DVS128 extractor)
LAYOUT_DVS128_RAW = 1   # x = bits 1..7, y = bits 8..14, p = bit 0 (bits as stored)
LAYOUT_DAVIS_JAER = 2   # DVS word (bit 31 = 0, bit 10 = 0): x = W-1 - bits 12..21, y = bits 22..30, p = bit 11
LAYOUT_DAVIS_RAW = 3    # same fields, x not mirrored

WRAP_US = np.int64(1) << np.int64(32)
HALF_WRAP_US = np.int64(1) << np.int64(31)

# AEDAT 2.0 state slots
A2_PREV_TS = 0      # last raw 32-bit timestamp (-1 before the first record)
A2_EPOCH = 1        # multiple of 2**32 added for wraps
A2_SPECIAL = 2      # special / sync / external-input records skipped
A2_APS = 3          # DAVIS APS / IMU records skipped
A2_WRAPS = 4        # number of 32-bit wraps seen
A2_ERR = 5
A2_ERR_INDEX = 6    # record index (in this buffer) of the error
A2_STATE_LEN = 7


@njit(cache=True, nogil=True)
def aedat2_decode(buf, layout, width, height, strict_time, state, t, x, y, p):
    """Decode big-endian (int32 address, int32 timestamp) records of ``buf`` into t/x/y/p.

    Timestamps are unsigned 32-bit µs; a backward step of more than 2**31 µs is a wrap
    (+2**32), a smaller one is ERR_BACKWARDS when ``strict_time`` (else kept as is).
    Returns the number of events written; ``state`` carries the clock across calls.
    """
    n = buf.shape[0] // 8
    k = 0
    prev = state[A2_PREV_TS]
    epoch = state[A2_EPOCH]
    for i in range(n):
        b = 8 * i
        addr = (np.int64(buf[b]) << 24) | (np.int64(buf[b + 1]) << 16) | (np.int64(buf[b + 2]) << 8) | np.int64(buf[b + 3])
        ts = (np.int64(buf[b + 4]) << 24) | (np.int64(buf[b + 5]) << 16) | (np.int64(buf[b + 6]) << 8) | np.int64(buf[b + 7])
        if prev >= 0 and ts < prev:
            if prev - ts > HALF_WRAP_US:
                epoch += WRAP_US
                state[A2_WRAPS] += 1
            elif strict_time:
                state[A2_ERR] = ERR_BACKWARDS
                state[A2_ERR_INDEX] = i
                break
        prev = ts
        if layout <= LAYOUT_DVS128_RAW:
            if addr & 0x80008000:
                state[A2_SPECIAL] += 1
                continue
            xr = (addr >> 1) & 0x7F
            yr = (addr >> 8) & 0x7F
            if layout == LAYOUT_DVS128_JAER:
                xv = width - 1 - xr
                pv = 1 - (addr & 1)
            else:
                xv = xr
                pv = addr & 1
        else:
            if addr & 0x80000000:
                state[A2_APS] += 1
                continue
            if addr & 0x400:
                state[A2_SPECIAL] += 1
                continue
            xr = (addr >> 12) & 0x3FF
            yr = (addr >> 22) & 0x1FF
            pv = (addr >> 11) & 1
            xv = width - 1 - xr if layout == LAYOUT_DAVIS_JAER else xr
        if xv < 0 or xv >= width or yr >= height:
            state[A2_ERR] = ERR_COORD
            state[A2_ERR_INDEX] = i
            break
        t[k] = epoch + ts
        x[k] = xv
        y[k] = yr
        p[k] = pv
        k += 1
    state[A2_PREV_TS] = prev
    state[A2_EPOCH] = epoch
    return k


# AEDAT 3.1 state slots
S_IN_PACKET = 0     # 1 while inside a packet body
S_TYPE = 1
S_SIZE = 2          # eventSize (bytes per event)
S_TSOFF = 3         # eventTSOffset (byte offset of the timestamp inside an event)
S_OVERFLOW = 4      # eventTSOverflow
S_CAPACITY = 5
S_NUMBER = 6
S_INDEX = 7         # next event index inside the current polarity packet
S_SKIP = 8          # bytes left to skip in a non-polarity packet
S_LAST_T = 9        # last polarity timestamp written (-1 before the first)
S_ERR = 10
S_ERR_OFFSET = 11   # absolute byte offset of the faulty header / event
S_POL_PACKETS = 12
S_OTHER_PACKETS = 13
S_INVALID = 14      # polarity events with valid bit 0 (dropped)
S_OTHER_EVENTS = 15 # events of other types (skipped)
S_PACKET_OFFSET = 16
S_STATE_LEN = 17

HEADER_BYTES = 28
MAX_EVENT_SIZE = 1 << 24
MAX_POLARITY_SIZE = 4096  # a polarity event always fits the reader's buffer


@njit(cache=True, nogil=True)
def _le_i32(buf, i):
    v = np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16) | (np.int64(buf[i + 3]) << 24)
    if v >= HALF_WRAP_US:
        v -= WRAP_US
    return v


@njit(cache=True, nogil=True)
def _le_u32(buf, i):
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16) | (np.int64(buf[i + 3]) << 24)


@njit(cache=True, nogil=True)
def aedat31_decode(buf, end, pos, base, file_size, width, height, strict_time, state, t, x, y, p, k, kcap):
    """Walk AEDAT 3.1 packets in ``buf[pos:end]`` (file offset of ``buf[0]`` = ``base``).

    Polarity packets (type 1) are decoded into ``t/x/y/p[k:kcap]``: data word bit 0 valid,
    bit 1 polarity, bits 2..16 y, bits 17..31 x; t = eventTSOverflow << 31 | timestamp.
    Other packet types are skipped by byte count. Stops when the output is full, when the next
    header/event is not entirely in ``buf`` (the caller refills), or on error (``state[S_ERR]``).
    Returns ``(pos, k)``.
    """
    while True:
        if state[S_ERR] != ERR_NONE or k >= kcap:
            break
        if state[S_IN_PACKET] == 0:
            if pos + HEADER_BYTES > end:
                break
            ptype = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
            size = _le_i32(buf, pos + 4)
            tsoff = _le_i32(buf, pos + 8)
            overflow = _le_i32(buf, pos + 12)
            capacity = _le_i32(buf, pos + 16)
            number = _le_i32(buf, pos + 20)
            valid = _le_i32(buf, pos + 24)
            state[S_PACKET_OFFSET] = base + pos
            bad = size <= 0 or size > MAX_EVENT_SIZE or capacity < 0 or number < 0 or valid < 0
            bad = bad or number > capacity or valid > number or tsoff < 0 or tsoff + 4 > size or overflow < 0
            if ptype == 1 and (size < 8 or size > MAX_POLARITY_SIZE):
                bad = True
            if bad:
                state[S_ERR] = ERR_PACKET
                state[S_ERR_OFFSET] = base + pos
                break
            body = capacity * size
            if base + pos + HEADER_BYTES + body > file_size:
                state[S_ERR] = ERR_TRUNCATED
                state[S_ERR_OFFSET] = base + pos
                break
            state[S_TYPE] = ptype
            state[S_SIZE] = size
            state[S_TSOFF] = tsoff
            state[S_OVERFLOW] = overflow
            state[S_CAPACITY] = capacity
            state[S_NUMBER] = number
            state[S_INDEX] = 0
            state[S_IN_PACKET] = 1
            if ptype == 1:
                state[S_POL_PACKETS] += 1
                state[S_SKIP] = 0
            else:
                state[S_OTHER_PACKETS] += 1
                state[S_OTHER_EVENTS] += number
                state[S_SKIP] = body
            pos += HEADER_BYTES
        if state[S_TYPE] != 1:
            take = min(state[S_SKIP], end - pos)
            pos += take
            state[S_SKIP] -= take
            if state[S_SKIP] > 0:
                break
            state[S_IN_PACKET] = 0
            continue
        size = state[S_SIZE]
        tsoff = state[S_TSOFF]
        hi = state[S_OVERFLOW] << 31
        cap = state[S_CAPACITY]
        number = state[S_NUMBER]
        i = state[S_INDEX]
        last = state[S_LAST_T]
        while i < cap and k < kcap and pos + size <= end:
            if i < number:
                data = _le_u32(buf, pos)
                if data & 1:
                    ts = _le_i32(buf, pos + tsoff)
                    if ts < 0:
                        state[S_ERR] = ERR_TIMESTAMP
                        state[S_ERR_OFFSET] = base + pos
                        break
                    tv = hi | ts
                    if tv < last and strict_time:
                        state[S_ERR] = ERR_BACKWARDS
                        state[S_ERR_OFFSET] = base + pos
                        break
                    xv = (data >> 17) & 0x7FFF
                    yv = (data >> 2) & 0x7FFF
                    if xv >= width or yv >= height:
                        state[S_ERR] = ERR_COORD
                        state[S_ERR_OFFSET] = base + pos
                        break
                    t[k] = tv
                    x[k] = xv
                    y[k] = yv
                    p[k] = (data >> 1) & 1
                    k += 1
                    last = tv
                else:
                    state[S_INVALID] += 1
            i += 1
            pos += size
        state[S_INDEX] = i
        state[S_LAST_T] = last
        if i >= cap:
            state[S_IN_PACKET] = 0
            continue
        break  # output full, buffer exhausted or error
    return pos, k


@njit(cache=True, nogil=True)
def aedat31_encode(t, x, y, p, out):
    """Encode events as AEDAT 3.1 polarity words (valid bit set) + 31-bit timestamps into ``out``.

    ``out`` is uint8 of length 8*n; the caller writes the packet header (overflow = t >> 31,
    identical for the whole packet).
    """
    n = t.shape[0]
    for i in range(n):
        data = (np.int64(x[i]) << 17) | (np.int64(y[i]) << 2) | (np.int64(p[i] & 1) << 1) | 1
        ts = t[i] & 0x7FFFFFFF
        b = 8 * i
        for j in range(4):
            out[b + j] = (data >> (8 * j)) & 0xFF
            out[b + 4 + j] = (ts >> (8 * j)) & 0xFF


ERR_FB_SIZE = 10       # size prefix larger than the decompressed packet
ERR_FB_IDENT = 11      # file identifier is not EVTS
ERR_FB_BOUNDS = 12     # a flatbuffer offset points outside the packet
ERR_FB_VECTOR = 13     # the Event vector runs past the end of the packet


@njit(cache=True, nogil=True)
def _fb_u32(buf, i):
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16) | (np.int64(buf[i + 3]) << 24)


@njit(cache=True, nogil=True)
def aedat4_event_vector(buf):
    """Locate the ``elements`` vector of a size-prefixed ``EVTS`` flatbuffer (EventPacket).

    Returns ``(data position, n events, err, err position)``; n = 0 when the field is absent.
    """
    n_buf = buf.shape[0]
    if n_buf < 12:
        return 0, 0, ERR_FB_SIZE, 0
    if _fb_u32(buf, 0) + 4 > n_buf:
        return 0, 0, ERR_FB_SIZE, 0
    if buf[8] != 69 or buf[9] != 86 or buf[10] != 84 or buf[11] != 83:  # b"EVTS"
        return 0, 0, ERR_FB_IDENT, 8
    table = 4 + _fb_u32(buf, 4)
    if table + 4 > n_buf:
        return 0, 0, ERR_FB_BOUNDS, 4
    vt = table - _le_i32(buf, table)
    if vt < 0 or vt + 4 > n_buf:
        return 0, 0, ERR_FB_BOUNDS, table
    vt_size = np.int64(buf[vt]) | (np.int64(buf[vt + 1]) << 8)
    if vt_size < 6 or vt + 6 > n_buf:
        return 0, 0, 0, 0  # no elements field: an empty packet
    f0 = np.int64(buf[vt + 4]) | (np.int64(buf[vt + 5]) << 8)
    if f0 == 0:
        return 0, 0, 0, 0
    pos = table + f0
    if pos + 4 > n_buf:
        return 0, 0, ERR_FB_BOUNDS, vt
    vec = pos + _fb_u32(buf, pos)
    if vec + 4 > n_buf:
        return 0, 0, ERR_FB_BOUNDS, pos
    n = _fb_u32(buf, vec)
    if vec + 4 + 16 * n > n_buf:
        return 0, 0, ERR_FB_VECTOR, vec
    return vec + 4, n, 0, 0


@njit(cache=True, nogil=True)
def aedat4_decode(et, ex, ey, eon, i0, i1, width, height, strict_time, last_t, t, x, y, p, k):
    """Copy AEDAT 4 ``Event`` structs ``[i0, i1)`` (columns et/ex/ey/eon) into t/x/y/p[k:].

    Struct layout (16 bytes, little-endian): t int64 µs, x int16, y int16, on bool, 3 padding;
    the caller views the packet's vector with that dtype. Returns ``(k, err, err_index, last_t)``;
    ``err`` is ERR_NONE, ERR_COORD, ERR_POLARITY or ERR_BACKWARDS (only when ``strict_time``).
    """
    for i in range(i0, i1):
        tv = et[i]
        xv = ex[i]
        yv = ey[i]
        on = eon[i]
        if xv < 0 or xv >= width or yv < 0 or yv >= height:
            return k, ERR_COORD, i, last_t
        if on > 1:
            return k, ERR_POLARITY, i, last_t
        if tv < last_t and strict_time:
            return k, ERR_BACKWARDS, i, last_t
        t[k] = tv
        x[k] = xv
        y[k] = yv
        p[k] = on
        last_t = tv
        k += 1
    return k, ERR_NONE, -1, last_t


@njit(cache=True, nogil=True)
def aedat4_encode(t, x, y, p, out, off):
    """Write events as AEDAT 4 ``Event`` structs (16 bytes each) into ``out[off:]``."""
    n = t.shape[0]
    for i in range(n):
        b = off + 16 * i
        tv = t[i]
        for j in range(8):
            out[b + j] = (tv >> (8 * j)) & 0xFF
        xv = np.int64(x[i]) & 0xFFFF
        yv = np.int64(y[i]) & 0xFFFF
        out[b + 8] = xv & 0xFF
        out[b + 9] = xv >> 8
        out[b + 10] = yv & 0xFF
        out[b + 11] = yv >> 8
        out[b + 12] = 1 if p[i] else 0
        out[b + 13] = 0
        out[b + 14] = 0
        out[b + 15] = 0

