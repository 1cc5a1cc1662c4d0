"""Numba kernels decoding AEDAT 2.0, 3.1 and 4 event payloads into event columns.

Pure array functions (numpy/numba/math only). The format modules wrap them: they read the file
in chunks, pass byte buffers (``uint8``) and the columns of an ``EVENT_DTYPE`` output array
(``ev["t"]``, ``ev["x"]``, ...: strided views, written in place), and turn the error codes the
kernels return into :class:`RecordingError` messages with the byte offset.

Error codes shared by all kernels (``ERR_*``): the kernels stop at the first bad event and
report its index/offset, so the wrapper can name the exact byte.

AEDAT 4 has its own LZ4 frame/block decoder and XXH32 here (``lz4_frame_decode``,
``lz4_block_decode``, ``xxh32``) so that ``aedat4_walk`` can decode a whole read block of
packets in one call. The few ``@intrinsic`` helpers (unaligned loads/stores, 8/16-byte copies)
are numba extensions: they compile to single machine instructions.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

ERR_NONE = 0
ERR_BACKWARDS = 1      # timestamp smaller than the previous one (not a wrap)
ERR_COORD = 2          # x/y outside the sensor
ERR_PACKET = 3         # AEDAT 3.1 packet header inconsistent
ERR_TRUNCATED = 4      # AEDAT 3.1 packet runs past the end of the file
ERR_POLARITY = 5       # AEDAT 4 polarity byte is neither 0 nor 1
ERR_TIMESTAMP = 6      # negative timestamp field

# Unaligned loads/stores and fixed-size copies as single machine instructions: numba's
# element-wise access to a uint8 buffer or to record fields costs several times more on
# these byte-packed formats. All assume a little-endian machine (x86-64, ARM64).
def _memcpy_intrinsic(nbytes):
    """An intrinsic ``f(dst, dpos, src, spos)`` copying ``nbytes`` bytes, unchecked (a couple of
    vector moves: LZ4's "wild copy")."""
    @intrinsic
    def copy(typingctx, dst, dpos, src, spos):
        sig = types.void(dst, dpos, src, spos)

        def codegen(context, builder, signature, args):
            d, dp, s, sp = args
            da = context.make_array(signature.args[0])(context, builder, d)
            sa = context.make_array(signature.args[2])(context, builder, s)
            cgutils.raw_memcpy(builder, builder.gep(da.data, [dp]), builder.gep(sa.data, [sp]),
                               context.get_constant(types.intp, nbytes), 1)
            return context.get_dummy_value()
        return sig, codegen
    return copy


def _load_intrinsic(nbits):
    """An intrinsic ``f(src, spos)``: ``src[spos:spos + nbits // 8]`` as one unaligned little-endian
    (native) unsigned load widened to int64; no wraparound/bounds branches."""
    @intrinsic
    def load(typingctx, src, spos):
        sig = types.int64(src, spos)

        def codegen(context, builder, signature, args):
            s, sp = args
            sa = context.make_array(signature.args[0])(context, builder, s)
            ity = context.get_value_type(getattr(types, f"uint{nbits}"))
            v = builder.load(builder.bitcast(builder.gep(sa.data, [sp]), ity.as_pointer()), align=1)
            return v if nbits == 64 else builder.zext(v, context.get_value_type(types.int64))
        return sig, codegen
    return load


def _store_intrinsic(nbits):
    """An intrinsic ``f(dst, dpos, value)`` storing the low ``nbits`` of int64 ``value`` at
    ``dst[dpos:]`` (one unaligned native store; ``dst`` is uint8)."""
    @intrinsic
    def store(typingctx, dst, dpos, value):
        sig = types.void(dst, dpos, value)

        def codegen(context, builder, signature, args):
            d, dp, v = args
            da = context.make_array(signature.args[0])(context, builder, d)
            ity = context.get_value_type(getattr(types, f"int{nbits}"))
            v = context.cast(builder, v, signature.args[2], types.int64)
            if nbits < 64:
                v = builder.trunc(v, ity)
            builder.store(v, builder.bitcast(builder.gep(da.data, [dp]), ity.as_pointer()), align=1)
            return context.get_dummy_value()
        return sig, codegen
    return store


_copy16 = _memcpy_intrinsic(16)
_copy8 = _memcpy_intrinsic(8)
_load_u8 = _load_intrinsic(8)
_load_u16 = _load_intrinsic(16)
_load_u32 = _load_intrinsic(32)
_load_i64 = _load_intrinsic(64)  # 64 bits: the int64 itself (two's complement)
_store_i16 = _store_intrinsic(16)
_store_i64 = _store_intrinsic(64)


# AEDAT 2.0 address layouts
LAYOUT_DVS128_JAER = 0  # x = W-1 - bits 1..7, y = bits 8..14, p = 1 - bit 0 (jAER DVS128 extractor)
LAYOUT_DVS128_RAW = 1   # x = bits 1..7, y = bits 8..14, p = bit 0 (bits as stored)
LAYOUT_DAVIS_JAER = 2   # DVS word (bit 31 = 0, bit 10 = 0): x = W-1 - bits 12..21, y = bits 22..30, p = bit 11
LAYOUT_DAVIS_RAW = 3    # same fields, x not mirrored

WRAP_US = np.int64(1) << np.int64(32)
HALF_WRAP_US = np.int64(1) << np.int64(31)

@njit(cache=True, nogil=True)
def _bswap32(v):
    return ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)


@njit(cache=True, nogil=True)
def aedat2_decode(buf, start, stop, layout, width, height, strict_time, prev, epoch, out, k):
    """Decode the big-endian (int32 address, int32 timestamp) records of ``buf[start:stop]``
    into events ``k...`` of ``out`` (an EVENT_DTYPE array viewed as bytes, 14 per event).

    Timestamps are unsigned 32-bit µs; a backward step of more than 2**31 µs is a wrap
    (+2**32), a smaller one is ERR_BACKWARDS when ``strict_time`` (else kept as is). ``prev``
    (last raw timestamp, -1 before the first record) and ``epoch`` (wraps x 2**32) carry the
    clock across calls. Returns ``(k, err, err_record, prev, epoch, wraps, special, aps)``:
    ``err_record`` counts from ``start``; special = sync/special/external-input records skipped,
    aps = DAVIS APS/IMU records skipped. Plain scalars in and out: a state array would cost
    more than the decoding itself on small files.
    """
    n = (stop - start) // 8
    err = ERR_NONE
    err_i = -1
    wraps = 0
    special = 0
    aps = 0
    for i in range(n):
        b = start + 8 * i
        addr = _bswap32(_load_u32(buf, b))
        ts = _bswap32(_load_u32(buf, b + 4))
        if ts < prev:  # prev is -1 before the first record
            if prev - ts > HALF_WRAP_US:
                epoch += WRAP_US
                wraps += 1
            elif strict_time:
                err, err_i = ERR_BACKWARDS, i
                break
        prev = ts
        if layout <= LAYOUT_DVS128_RAW:
            if addr & 0x80008000:
                special += 1
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
                aps += 1
                continue
            if addr & 0x400:
                special += 1
                continue
            xr = (addr >> 12) & 0x3FF
            yr = (addr >> 22) & 0x1FF
            pv = (addr >> 11) & 1
            xv = width - 1 - xr if layout == LAYOUT_DAVIS_JAER else xr
        if xv < 0 or xv >= width or yr >= height:
            err, err_i = ERR_COORD, i
            break
        o = 14 * k
        _store_i64(out, o, epoch + ts)
        _store_i16(out, o + 8, xv)
        _store_i16(out, o + 10, yr)
        _store_i16(out, o + 12, pv)
        k += 1
    return k, err, err_i, prev, epoch, wraps, special, aps


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
def aedat4_event_vector(buf, n_buf):
    """Locate the ``elements`` vector of the size-prefixed ``EVTS`` flatbuffer ``buf[:n_buf]``.

    Returns ``(data position, n events, err, err position)``; n = 0 when the field is absent.
    """
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
def aedat4_events(raw, data, i0, n, width, height, strict_time, state, out, k):
    """Convert ``Event`` structs ``[i0, n)`` at ``raw[data:]`` into events ``k...`` of ``out``.

    ``out`` is an EVENT_DTYPE array viewed as bytes (14 per event). DV's struct (16 bytes,
    little-endian: t int64 µs, x int16, y int16, on bool, 3 padding) has our field order, so
    each event is one 16-byte copy (the 2 bytes spilled into the next slot are rewritten with
    it) plus p's high byte; record-field stores in numba cost 8x more. Validates in the same pass:
    coordinates inside the sensor, polarity byte 0/1, time non-decreasing (``strict_time``;
    ``state[P4_LAST_T]`` carries the last time across packets). Stops when ``out`` is full.
    Returns ``(k, i, err)``: ``i`` the next struct, ``err`` ERR_NONE, ERR_COORD, ERR_POLARITY
    or ERR_BACKWARDS (then ``i`` is the faulty struct).
    """
    last = state[P4_LAST_T]
    n_out = out.shape[0]
    m = min(n, i0 + n_out // 14 - k)
    err = ERR_NONE
    i = i0
    while i < m:
        b = data + 16 * i
        tv = _load_i64(raw, b)
        w = _load_i64(raw, b + 8)
        xv = w & 0xFFFF  # x, y read unsigned: a negative int16 is >= width too
        yv = (w >> 16) & 0xFFFF
        on = (w >> 32) & 0xFF
        if xv >= width or yv >= height:
            err = ERR_COORD
            break
        if on > 1:
            err = ERR_POLARITY
            break
        if tv < last and strict_time:
            err = ERR_BACKWARDS
            break
        o = 14 * k
        if o + 16 <= n_out:
            _copy16(out, o, raw, b)
        else:  # the array's last event: no room for the spill
            for j in range(13):
                out[o + j] = raw[b + j]
        out[o + 13] = 0
        last = tv
        k += 1
        i += 1
    state[P4_LAST_T] = last
    return k, i, err


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



# ------------------------------------------------------------------ AEDAT 4: LZ4 frames + packets
# Our own LZ4 frame decoder, so that one kernel call walks many packets (header, decompression,
# flatbuffer, event conversion) without a Python round trip per packet: with python-lz4 the
# per-packet Python work (allocating the output, views, dispatch) cost as much as the
# decompression itself. Wild copies of 16 bytes (the trick of the C library) need LZ4_SLACK
# spare bytes after the usable end of both the input and the output buffers.
LZ4_SLACK = 64
LZ4_OK = 0
LZ4_BAD_MAGIC = 1       # not 0x184D2204
LZ4_BAD_HEADER = 2      # version / reserved bits / block size id
LZ4_BAD_HC = 3          # frame header checksum
LZ4_BAD_BLOCK_SIZE = 4  # block larger than the frame's block maximum
LZ4_CORRUPT = 5         # block data does not decode (offset out of range, runs past its end)
LZ4_BAD_BLOCK_SUM = 6   # block checksum
LZ4_BAD_CONTENT_SIZE = 7
LZ4_BAD_CONTENT_SUM = 8
LZ4_TRUNCATED = 9       # frame ends before its end mark / checksum
LZ4_TRAILING = 10       # bytes after the end of the frame (detail: how many)
LZ4_LIMIT = 11          # output larger than the allowed maximum
LZ4_NEED_SCRATCH = 12   # output buffer too small: detail = bytes needed (caller grows, retries)

# XXH32 in uint64 arithmetic: a product of two 32-bit values fits, so one multiply and a mask
# give the 32-bit wrap (numba would turn uint64 mixed with int64 into float64: keep every operand
# uint64). 2.6x faster than emulating the wrap in int64, and faster than the xxhash C library.
_M32 = np.uint64(0xFFFFFFFF)
_P1 = np.uint64(2654435761)
_P2 = np.uint64(2246822519)
_P3 = np.uint64(3266489917)
_P4 = np.uint64(668265263)
_P5 = np.uint64(374761393)


@njit(cache=True, nogil=True)
def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@njit(cache=True, nogil=True)
def _xxh_round(v, w):
    return (_rotl32((v + w * _P2) & _M32, 13) * _P1) & _M32


@njit(cache=True, nogil=True)
def xxh32(buf, start, n, seed):
    """XXH32 of ``buf[start:start+n]`` (the checksum of LZ4 frames), as an int64."""
    i = start
    stop = start + n
    s = np.uint64(seed)
    if n >= 16:
        v1 = (s + _P1 + _P2) & _M32
        v2 = (s + _P2) & _M32
        v3 = s
        v4 = (s - _P1) & _M32
        while i + 16 <= stop:
            v1 = _xxh_round(v1, np.uint64(_load_u32(buf, i)))
            v2 = _xxh_round(v2, np.uint64(_load_u32(buf, i + 4)))
            v3 = _xxh_round(v3, np.uint64(_load_u32(buf, i + 8)))
            v4 = _xxh_round(v4, np.uint64(_load_u32(buf, i + 12)))
            i += 16
        h = (_rotl32(v1, 1) + _rotl32(v2, 7) + _rotl32(v3, 12) + _rotl32(v4, 18)) & _M32
    else:
        h = (s + _P5) & _M32
    h = (h + np.uint64(n)) & _M32
    while i + 4 <= stop:
        h = (_rotl32((h + np.uint64(_load_u32(buf, i)) * _P3) & _M32, 17) * _P4) & _M32
        i += 4
    while i < stop:
        h = (_rotl32((h + np.uint64(buf[i]) * _P5) & _M32, 11) * _P1) & _M32
        i += 1
    h ^= h >> np.uint64(15)
    h = (h * _P2) & _M32
    h ^= h >> np.uint64(13)
    h = (h * _P3) & _M32
    h ^= h >> np.uint64(16)
    return np.int64(h)


@njit(cache=True, nogil=True)
def _lz4_extend(src, ip, iend, length):
    """An LZ4 length of 15 continues in bytes that add up until one is not 255: ``(length,
    position after them)``, or ``(length, -1)`` when the block ends first."""
    while True:
        if ip >= iend:
            return length, -1
        b = _load_u8(src, ip)
        ip += 1
        length += b
        if b != 255:
            return length, ip


@njit(cache=True, nogil=True)
def lz4_block_decode(src, ip, iend, dst, op, oend, lo):
    """Decode the LZ4 block ``src[ip:iend]`` into ``dst[op:oend]``; matches may reach back to ``lo``.

    Returns the new output position, -1 when the block is corrupt, -2 when its output would
    pass ``oend``. ``dst`` must have LZ4_SLACK bytes beyond ``oend``; literals are copied 16
    bytes at a time while 16 bytes of ``src`` remain, byte by byte at its very end.

    Why a fast path: event packets are ~640k sequences of ~1 literal and ~7 match bytes per
    5 MB, so the cost is per sequence. A sequence with short lengths (no extension bytes), far
    from both ends and with an offset of at least 16 is one 16-byte literal copy and one or two
    match copies with no other bounds checks (they cannot fail there): ~14 % faster on
    DV recordings. Everything else takes the checked path below.
    """
    slen = src.shape[0]
    fast_iend = iend - 19  # ip below: 16 literal bytes, the offset and a next token are in the block
    fast_oend = oend - 32  # op up to here: 14 literals + an 18-byte match fit
    while ip < iend:
        token = _load_u8(src, ip)
        ip += 1
        lit = token >> 4
        if lit != 15 and (token & 15) != 15 and ip < fast_iend and op <= fast_oend:
            _copy16(dst, op, src, ip)
            ip += lit
            op += lit
            off = _load_u16(src, ip)
            ip += 2
            m = op - off
            if off >= 16 and m >= lo:
                ml = (token & 15) + 4
                _copy16(dst, op, dst, m)
                if ml > 16:
                    _copy8(dst, op + 16, dst, m + 16)
                op += ml
                continue
            ml = token & 15  # a short or invalid offset: the checked match copy below
        else:
            if lit == 15:
                lit, ip = _lz4_extend(src, ip, iend, lit)
                if ip < 0:
                    return -1
            if ip + lit > iend:
                return -1
            if op + lit > oend:
                return -2
            if ip + lit + 16 <= slen:
                _copy16(dst, op, src, ip)
                j = 16
                while j < lit:
                    _copy16(dst, op + j, src, ip + j)
                    j += 16
            else:
                for j in range(lit):
                    dst[op + j] = src[ip + j]
            ip += lit
            op += lit
            if ip >= iend:
                break  # the last sequence has literals only
            if ip + 2 > iend:
                return -1
            off = _load_u16(src, ip)
            ip += 2
            ml = token & 15
            if ml == 15:
                ml, ip = _lz4_extend(src, ip, iend, ml)
                if ip < 0:
                    return -1
        ml += 4
        m = op - off
        if off == 0 or m < lo:
            return -1
        if op + ml > oend:
            return -2
        if off >= 16:  # 16-byte steps never read bytes this match has not written yet
            _copy16(dst, op, dst, m)
            j = 16
            while j < ml:
                _copy16(dst, op + j, dst, m + j)
                j += 16
        elif off >= 8:
            j = 0
            while j < ml:
                _copy8(dst, op + j, dst, m + j)
                j += 8
        else:  # a repeat of fewer than 8 bytes: byte by byte
            for j in range(ml):
                dst[op + j] = dst[m + j]
        op += ml
    return op


@njit(cache=True, nogil=True)
def lz4_frame_decode(src, ip, iend, dst, dcap, limit):
    """Decode the LZ4 frame ``src[ip:iend]`` (exactly one frame) into ``dst[0:]``.

    ``dcap``: usable bytes of ``dst`` (which has LZ4_SLACK more); ``limit``: the largest output
    allowed. Checks what liblz4 checks: magic, header checksum, block sizes, block/content
    checksums and content size when present. Returns ``(n bytes, LZ4_* code, detail)``;
    LZ4_NEED_SCRATCH asks for a ``dst`` of at least ``detail`` usable bytes.
    """
    if iend - ip < 7:
        return 0, LZ4_TRUNCATED, 0
    if _fb_u32(src, ip) != 0x184D2204:
        return 0, LZ4_BAD_MAGIC, 0
    flg = np.int64(src[ip + 4])
    bd = np.int64(src[ip + 5])
    bid = (bd >> 4) & 7
    if (flg >> 6) != 1 or (flg & 0x02) or (bd & 0x8F) or bid < 4:
        return 0, LZ4_BAD_HEADER, 0
    bmax = np.int64(1) << (8 + 2 * bid)
    has_size = (flg >> 3) & 1
    hsize = 7 + 8 * has_size + 4 * (flg & 1)
    if iend - ip < hsize:
        return 0, LZ4_TRUNCATED, 0
    if ((xxh32(src, ip + 4, hsize - 5, 0) >> 8) & 0xFF) != src[ip + hsize - 1]:
        return 0, LZ4_BAD_HC, 0
    csize = np.int64(-1)
    if has_size:
        hi = _fb_u32(src, ip + 10)
        if hi >= 0x80000000:
            return 0, LZ4_LIMIT, 0
        csize = _fb_u32(src, ip + 6) | (hi << 32)
        if csize > limit:
            return 0, LZ4_LIMIT, 0
    linked = (flg & 0x20) == 0
    block_sum = (flg >> 4) & 1
    content_sum = (flg >> 2) & 1
    ip += hsize
    op = 0
    while True:
        if iend - ip < 4:
            return op, LZ4_TRUNCATED, 0
        bsz = _fb_u32(src, ip)
        ip += 4
        if bsz == 0:
            break
        stored = bsz >= 0x80000000
        bsz &= 0x7FFFFFFF
        if bsz > bmax:
            return op, LZ4_BAD_BLOCK_SIZE, 0
        if iend - ip < bsz + 4 * block_sum:
            return op, LZ4_TRUNCATED, 0
        if block_sum and xxh32(src, ip, bsz, 0) != _fb_u32(src, ip + bsz):
            return op, LZ4_BAD_BLOCK_SUM, 0
        grow = bsz if stored else min(bmax, 255 * bsz + 64)  # LZ4 expands at most ~255x
        if op + grow > dcap:
            if dcap < limit:
                return op, LZ4_NEED_SCRATCH, min(op + grow, limit)
            oend = dcap
        else:
            oend = op + grow
        if stored:
            if op + bsz > oend:
                return op, LZ4_LIMIT, 0
            dst[op:op + bsz] = src[ip:ip + bsz]
            op += bsz
        else:
            r = lz4_block_decode(src, ip, ip + bsz, dst, op, oend, 0 if linked else op)
            if r == -1 or (r == -2 and oend < dcap):
                return op, LZ4_CORRUPT, 0
            if r == -2:
                return op, LZ4_LIMIT, 0
            op = r
        ip += bsz + 4 * block_sum
    if content_sum:
        if iend - ip < 4:
            return op, LZ4_TRUNCATED, 0
        if xxh32(dst, 0, op, 0) != _fb_u32(src, ip):
            return op, LZ4_BAD_CONTENT_SUM, 0
        ip += 4
    if has_size and op != csize:
        return op, LZ4_BAD_CONTENT_SIZE, 0
    if ip != iend:
        return op, LZ4_TRAILING, iend - ip
    return op, LZ4_OK, 0


# AEDAT 4 walker state slots
P4_LAST_T = 0        # last event time written (int64 min before the first)
P4_PENDING = 1       # 1 while the scratch buffer holds a packet with events left to convert
P4_DATA = 2          # position of its Event vector in the scratch buffer
P4_N = 3             # its number of events
P4_I = 4             # next event to convert
P4_BODY_OFF = 5      # file offset of the current packet's (compressed) body
P4_SKIP = 6          # bytes of a foreign packet still to skip (past the end of the buffer)
P4_EVENT_PACKETS = 7
P4_ERR = 8
P4_ERR_OFF = 9       # file offset the error is reported at
P4_ERR_A = 10        # error details (size, stream id, LZ4 code, byte/event index...)
P4_ERR_B = 11
P4_NEED = 12         # bytes of scratch asked for (ST4_SCRATCH)
P4_STATE_LEN = 13

# AEDAT 4 walker: why it returned
ST4_DONE = 0         # reached the end of the data
ST4_INPUT = 1        # the next packet is not entirely in the buffer: refill and call again
ST4_FULL = 2         # the output is full: hand it out and call again with a new one
ST4_ERROR = 3        # state[P4_ERR*] say what
ST4_EXTERNAL = 4     # a ZSTD packet at ``pos``: the caller decompresses it (aedat4_begin)
ST4_SCRATCH = 5      # the scratch buffer must grow to state[P4_NEED] usable bytes

ERR_PKT_HEADER = 20  # fewer than 8 bytes left for a packet header
ERR_PKT_SIZE = 21    # packet size <= 0 or past the end of the data (A: size, B: bytes left)
ERR_PKT_STREAM = 22  # stream id not declared in the header (A: id)
ERR_LZ4 = 23         # body is not a valid LZ4 frame (A: LZ4_* code, B: detail)
ERR_PKT_LIMIT = 24   # decompressed packet larger than the limit


@njit(cache=True, nogil=True)
def _fail4(state, err, off, a, b):
    state[P4_ERR] = err
    state[P4_ERR_OFF] = off
    state[P4_ERR_A] = a
    state[P4_ERR_B] = b
    return ST4_ERROR


@njit(cache=True, nogil=True)
def aedat4_begin(raw, n_raw, state):
    """Start converting the decompressed EVTS packet ``raw[:n_raw]``; returns ERR_NONE or ERR_FB_*."""
    data, n, err, at = aedat4_event_vector(raw, n_raw)
    if err != ERR_NONE:
        _fail4(state, err, state[P4_BODY_OFF], at, n_raw)
        return err
    state[P4_PENDING] = 1
    state[P4_DATA] = data
    state[P4_N] = n
    state[P4_I] = 0
    state[P4_EVENT_PACKETS] += 1
    return ERR_NONE


@njit(cache=True, nogil=True)
def aedat4_walk(buf, pos, end, limit, base, stream, ids, skipped, compression, max_packet,
                width, height, strict_time, scratch, state, out, k):
    """Walk AEDAT 4 packets of ``buf[pos:end]`` (file offset of ``buf[0]`` = ``base``; the data
    ends at ``buf`` position ``limit``), converting the events of stream ``stream`` into ``out[k:]``.

    Per packet: ``i32 stream id, i32 size, body``. Packets of other declared streams (``ids``)
    are skipped and counted in ``skipped``; bodies of ``stream`` are decompressed (none, LZ4:
    in here; ZSTD: by the caller) into ``scratch`` and converted by ``aedat4_events``. ``buf``
    and ``scratch`` need LZ4_SLACK spare bytes. Returns ``(pos, k, ST4_*)``.
    """
    dcap = scratch.shape[0] - LZ4_SLACK
    kcap = out.shape[0] // 14
    while True:
        if state[P4_PENDING]:
            k, i, err = aedat4_events(scratch, state[P4_DATA], state[P4_I], state[P4_N], width, height,
                                      strict_time, state, out, k)
            state[P4_I] = i
            if err != ERR_NONE:
                return pos, k, _fail4(state, err, state[P4_BODY_OFF], i, 0)
            if i < state[P4_N]:
                return pos, k, ST4_FULL
            state[P4_PENDING] = 0
        if k >= kcap:
            return pos, k, ST4_FULL
        skip = state[P4_SKIP]
        if skip > 0:
            take = min(skip, end - pos)
            pos += take
            state[P4_SKIP] = skip - take
            if skip > take:
                return pos, k, ST4_INPUT
        if pos >= limit:
            return pos, k, ST4_DONE
        if end - pos < 8:
            if limit - pos < 8:
                return pos, k, _fail4(state, ERR_PKT_HEADER, base + pos, 0, 0)
            return pos, k, ST4_INPUT
        sid = _le_i32(buf, pos)
        size = _le_i32(buf, pos + 4)
        if size <= 0 or pos + 8 + size > limit:
            return pos, k, _fail4(state, ERR_PKT_SIZE, base + pos, size, limit - pos - 8)
        j = -1
        for q in range(ids.shape[0]):
            if ids[q] == sid:
                j = q
                break
        if j < 0:
            return pos, k, _fail4(state, ERR_PKT_STREAM, base + pos, sid, 0)
        if sid != stream:
            skipped[j] += 1
            take = min(size, end - pos - 8)
            state[P4_SKIP] = size - take
            pos += 8 + take
            continue
        if end - pos - 8 < size:
            return pos, k, ST4_INPUT
        body = pos + 8
        state[P4_BODY_OFF] = base + body
        if compression == 0:
            if size > dcap:
                if dcap < max_packet:
                    state[P4_NEED] = size
                    return pos, k, ST4_SCRATCH
                return pos, k, _fail4(state, ERR_PKT_LIMIT, base + body, 0, 0)
            scratch[:size] = buf[body:body + size]
            n_raw = size
        elif compression <= 2:
            n_raw, code, detail = lz4_frame_decode(buf, body, body + size, scratch, dcap, max_packet)
            if code == LZ4_NEED_SCRATCH:
                state[P4_NEED] = detail
                return pos, k, ST4_SCRATCH
            if code == LZ4_LIMIT:
                return pos, k, _fail4(state, ERR_PKT_LIMIT, base + body, 0, 0)
            if code != LZ4_OK:
                return pos, k, _fail4(state, ERR_LZ4, base + body, code, detail)
        else:
            return pos, k, ST4_EXTERNAL
        if aedat4_begin(scratch, n_raw, state) != ERR_NONE:
            return pos, k, ST4_ERROR
        pos += 8 + size
