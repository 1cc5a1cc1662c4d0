"""Numba kernels for HDF5 event columns (pure array functions, numpy/numba only).

``lzf_decompress`` decodes one LZF-compressed HDF5 chunk (h5py's filter 32000, the writer's
default), read raw from the file: h5py's own filter pipeline decompresses into a temporary
buffer, then copies it through the chunk cache, which costs more than the decompression.
``columns_to_events_`` converts four decoded columns into the EVENT_DTYPE array and validates
them in the same pass. Codes as in ``check_kernels`` (OK 0, OUTSIDE 1, BACKWARDS 2; repeated
because kernel modules import only numpy/numba/math) plus P_RANGE 3; the reader re-decodes a
failed block through h5py and the per-field path, which words the error.
"""

import numpy as np
from numba import njit

OK = 0
OUTSIDE = 1
BACKWARDS = 2
P_RANGE = 3


@njit(cache=True)
def lzf_decompress(src, dst):
    """Decode the LZF stream ``src`` (uint8) into ``dst`` (uint8); return the number of bytes
    written, or -1 if the stream is corrupt (a run or reference outside ``src``/``dst``).

    Format (liblzf): a control byte c < 32 starts a literal run of c + 1 bytes; otherwise
    a back reference of length (c >> 5) + 2 (7 + 2 plus a following length byte when
    c >> 5 == 7) at distance ((c & 31) << 8) + next byte + 1, copied byte by byte (overlap
    repeats a pattern).
    """
    ip = 0
    op = 0
    n = src.shape[0]
    m = dst.shape[0]
    while ip < n:
        ctrl = np.int64(src[ip])
        ip += 1
        if ctrl < 32:
            ln = ctrl + 1
            if ip + ln > n or op + ln > m:
                return -1
            for k in range(ln):
                dst[op + k] = src[ip + k]
            ip += ln
            op += ln
        else:
            ln = ctrl >> 5
            ref = op - ((ctrl & 31) << 8) - 1
            if ln == 7:
                if ip >= n:
                    return -1
                ln += np.int64(src[ip])
                ip += 1
            if ip >= n:
                return -1
            ref -= np.int64(src[ip])
            ip += 1
            ln += 2
            if ref < 0 or op + ln > m:
                return -1
            for k in range(ln):
                dst[op + k] = dst[ref + k]
            op += ln
    return op


@njit(cache=True)
def columns_to_events_(t, x, y, p, t_offset, out, o0, width, height, last_t, check_order):
    """out[o0 + i] = (t[i] + t_offset, x[i], y[i], p[i]) for contiguous integer columns.

    Stops at the first event outside the sensor, earlier than its predecessor (when
    ``check_order``; ``last_t`` before the first) or whose p does not fit int16. The caller
    guarantees t casts to int64 and x, y fit int16 once inside the sensor.
    """
    prev = np.int64(last_t)
    w, h = np.uint64(width), np.uint64(height)
    dst = out[o0:]  # (indexed by i, which numba knows is >= 0: no wraparound per event)
    for i in range(t.shape[0]):
        tv = np.int64(t[i]) + t_offset
        xv = np.int64(x[i])
        yv = np.int64(y[i])
        pv = np.int64(p[i])
        if np.uint64(xv) >= w or np.uint64(yv) >= h:  # (a negative value wraps above any width)
            return i, OUTSIDE
        if check_order:
            if tv < prev:
                return i, BACKWARDS
            prev = tv
        if pv < -32768 or pv > 32767:
            return i, P_RANGE
        o = dst[i]
        o.t = tv
        o.x = xv
        o.y = yv
        o.p = pv
    return -1, OK
