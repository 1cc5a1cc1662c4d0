"""Numba kernels decoding Prophesee EVT 2.0, EVT 3.0 and DAT words, and encoding EVT 3.0.

Pure array functions: the readers/writer in ``evt2.py``, ``evt3.py`` and ``dat.py`` validate,
buffer the file and map status codes to :class:`RecordingError`. Every decoder:

* resumes from ``state`` (an int64 array, layout ``ST_*``), so a recording is decoded in byte
  chunks with the time base, row, vector base and polarity carried across chunk boundaries;
* writes at most ``out.shape[0]`` events into the ``EVENT_DTYPE`` array ``out`` from index
  ``n`` and returns ``(pos, n, status)``: the next word to decode, the events written, and
  ``STATUS_DONE`` (input exhausted), ``STATUS_FULL`` (``out`` is full) or a negative error whose
  word is ``words[pos]`` (the offending value is in ``state[ST_BAD]``).

Time policies for event timestamps that step backwards (not wraps): ``POLICY_MONOTONIC`` clamps
an event to the running maximum of the events before it (time words that carry no event do not
move it), ``POLICY_SPEC`` keeps the raw value, ``POLICY_STRICT`` stops with ERR_BACKWARDS.
"""

from __future__ import annotations

import numpy as np
from numba import njit

STATUS_DONE = 0
STATUS_FULL = 1
ERR_X = -1           # x >= width
ERR_Y = -2           # y >= height
ERR_TYPE = -3        # unknown word/event type
ERR_BACKWARDS = -4   # timestamp went backwards under POLICY_STRICT
ERR_POLARITY = -5    # DAT polarity not in {0, 1}
ERR_SMALL_OUT = -6   # EVT3: ``out`` holds fewer than 12 events, so a VECT_12 word could never fit
MIN_OUT_EVENTS = 12

POLICY_MONOTONIC = 0
POLICY_SPEC = 1
POLICY_STRICT = 2

# decoder state layout (int64 array of STATE_LEN)
ST_HAVE_TIME = 0   # a time base has been seen (words before the first TIME_HIGH are skipped)
ST_TIME_HIGH = 1   # last raw TIME_HIGH payload (EVT3 12 bits, EVT2 28 bits) / DAT: unused
ST_LOOPS = 2       # timestamp wraps seen so far
ST_BASE = 3        # unwrapped time base in µs (EVT3: loops*2^24 + high<<12; EVT2: loops*2^34 + high<<6)
ST_CUR = 4         # current raw ("spec") time in µs
ST_MAX = 5         # running maximum of the emitted events' times in µs
# index 6 is unused
ST_Y = 7           # EVT3 current row
ST_BASE_X = 8      # EVT3 vector base x
ST_POL = 9         # EVT3 vector polarity
ST_POLICY = 10
ST_WIDTH = 11
ST_HEIGHT = 12
ST_SKIPPED = 13    # words skipped before the first time base
ST_TRIGGERS = 14   # external trigger words seen
ST_BACKWARDS = 15  # events whose raw time was below the running maximum
ST_BAD = 16        # offending value of the last error
ST_VERSION = 17    # DAT layout version (1 or 2)
STATE_LEN = 18

EVT3_TIME_LOOP_US = 1 << 24
BIT_INDEX = np.zeros(1 << 12, np.int64)  # BIT_INDEX[1 << b] = b: index of a vector's lowest set bit
BIT_INDEX[1 << np.arange(12)] = np.arange(12)
EVT3_LOOP_MIN_DROP = 4096 - 11  # TIME_HIGH drop >= this is a wrap (OpenEB: max base - 10<<12)
EVT2_TIME_LOOP_US = 1 << 34
EVT2_LOOP_MIN_DROP = 1 << 27    # TIME_HIGH (28 bits) drop over half its range is a wrap
DAT_TIME_LOOP_US = 1 << 32
DAT_LOOP_MIN_DROP = 1 << 31


def new_state(width: int, height: int, policy: int, version: int = 2) -> np.ndarray:
    """A fresh decoder state for a sensor of ``width`` x ``height``."""
    st = np.zeros(STATE_LEN, np.int64)
    st[ST_MAX] = -1
    st[ST_Y] = 0
    st[ST_POLICY] = policy
    st[ST_WIDTH] = width
    st[ST_HEIGHT] = height
    st[ST_VERSION] = version
    return st


NONNEG = 0x7FFF_FFFF_FFFF_FFFF
"""``a[i & NONNEG]``: tells LLVM that ``i >= 0``, which drops numba's negative-index wraparound
(a shift, an and and an add per access) from the hot loops: 15-25 % of their time."""
TIME_WORDS = (1 << 6) | (1 << 8)                 # EVT 3.0 TIME_LOW, TIME_HIGH
SKIPPED_WORDS = (1 << 7) | (1 << 14) | (1 << 15)  # EVT 3.0 CONTINUED_4, OTHERS, CONTINUED_12


@njit(cache=True)
def _evt3_run(words, pos, nw, out, n, cap, y, t24, bx, pol, loops, tmax, width, height):
    """The common EVT 3.0 words in a tight loop with few live variables.

    ``t24`` is the 24-bit time (TIME_HIGH << 12 | TIME_LOW), so an event is at
    ``loops * 2^24 + t24``. Entered only when that is >= ``tmax`` (the latest emitted event);
    an event below ``tmax``, a wrap, an output without room for a whole vector, an impossible
    coordinate, a trigger or an unknown word stops the loop, without consuming the word, for
    ``evt3_decode``'s full logic. TIME_LOW and TIME_HIGH share one branch (both are frequent
    and follow events in no predictable order); which of the two is encoded in the shifts.
    """
    lbase = loops * EVT3_TIME_LOOP_US
    lim = cap - MIN_OUT_EVENTS
    while pos < nw:
        w = np.int64(words[pos & NONNEG])
        typ = w >> 12
        if typ == 2:  # ADDR_X
            x = w & 0x7FF
            t = lbase + t24
            if n > lim or x >= width or t < tmax:
                break
            i = n & NONNEG
            out[i].t = t
            out[i].x = x
            out[i].y = y
            out[i].p = (w >> 11) & 1
            n += 1
            tmax = t
        elif (TIME_WORDS >> typ) & 1:
            k = typ & 8  # 8: TIME_HIGH (t24 = v << 12), 0: TIME_LOW (t24 = high bits | v)
            v = w & 0xFFF
            if k & ~(((t24 >> 12) - v - EVT3_LOOP_MIN_DROP) >> 63):  # TIME_HIGH dropping by a wrap
                break
            t24 = (t24 & (0xFFF000 >> (k * 3))) | (v << (k + (k >> 1)))
        elif typ == 0:  # ADDR_Y
            yy = w & 0x7FF
            if yy >= height:
                break
            y = yy
        elif (SKIPPED_WORDS >> typ) & 1:
            pass
        elif typ == 4 or typ == 5:  # VECT_12, VECT_8
            nbits = 12 if typ == 4 else 8
            t = lbase + t24
            if n > lim or bx + nbits > width or t < tmax:
                break
            m = w & 0xFFF if typ == 4 else w & 0xFF
            if m:
                tmax = t
            while m:  # set bits only: lowest set bit, its index from a table, clear it
                low = m & -m
                i = n & NONNEG
                out[i].t = t
                out[i].x = bx + BIT_INDEX[low]
                out[i].y = y
                out[i].p = pol
                n += 1
                m ^= low
            bx += nbits
        elif typ == 3:  # VECT_BASE_X
            bx = w & 0x7FF
            pol = (w >> 11) & 1
        else:
            break
        pos += 1
    return pos, n, y, t24, bx, pol, tmax


@njit(cache=True)
def evt3_decode(words, pos, out, n, state):
    """Decode EVT 3.0 16-bit ``words[pos:]`` into ``out[n:]``; see the module docstring.

    Word types (bits 15..12): 0 ADDR_Y (y = bits 10..0), 2 ADDR_X (one event; x 10..0, p 11),
    3 VECT_BASE_X (x, p), 4 VECT_12 / 5 VECT_8 (valid mask; events at base_x + bit, then
    base_x += 12 / 8), 6 TIME_LOW (t bits 11..0), 8 TIME_HIGH (t bits 23..12; resets TIME_LOW
    to 0), 10 EXT_TRIGGER, 7/14/15 CONTINUED_4/OTHERS/CONTINUED_12 (skipped).
    ``_evt3_run`` decodes the common words; this loop handles the word it stops at.
    """
    cap = out.shape[0]
    nw = words.shape[0]
    have = state[ST_HAVE_TIME]
    th = state[ST_TIME_HIGH]
    loops = state[ST_LOOPS]
    base = state[ST_BASE]
    cur = state[ST_CUR]
    tmax = state[ST_MAX]  # latest time of the events emitted so far
    y = state[ST_Y]
    bx = state[ST_BASE_X]
    pol = state[ST_POL]
    policy = state[ST_POLICY]
    width = state[ST_WIDTH]
    height = state[ST_HEIGHT]
    skipped = state[ST_SKIPPED]
    triggers = state[ST_TRIGGERS]
    nback = state[ST_BACKWARDS]
    bad = state[ST_BAD]
    if cap < MIN_OUT_EVENTS:
        return pos, n, ERR_SMALL_OUT
    status = STATUS_DONE
    if have == 0:  # no time base yet: skip to the first TIME_HIGH
        while pos < nw and (words[pos] >> 12) != 8:
            pos += 1
            skipped += 1
    while pos < nw:
        if have != 0 and cur >= tmax:
            lbase = loops * EVT3_TIME_LOOP_US
            pos, n, y, t24, bx, pol, tmax = _evt3_run(
                words, pos, nw, out, n, cap, y, cur - lbase, bx, pol, loops, tmax, width, height)
            cur = lbase + t24
            th = t24 >> 12
            base = lbase + (t24 & 0xFFF000)
            if pos >= nw:
                break
        # the word the fast loop stopped at (or every word while time is behind): full logic
        w = np.int64(words[pos])
        typ = w >> 12
        if typ == 2 or typ == 4 or typ == 5:  # ADDR_X / VECT_12 / VECT_8
            if typ == 2:
                x0 = w & 0x7FF
                m = 1
                nbits = 1
            else:
                x0 = bx
                nbits = 12 if typ == 4 else 8
                m = w & 0xFFF if typ == 4 else w & 0xFF
            if m:
                cnt = 0
                mm = m
                while mm:
                    mm &= mm - 1
                    cnt += 1
                if n + cnt > cap:
                    status = STATUS_FULL
                    break
                hb = 0
                mm = m
                while mm > 1:
                    mm >>= 1
                    hb += 1
                if x0 + hb >= width:
                    bad = x0 + hb
                    status = ERR_X
                    break
                teff = cur
                if cur < tmax:
                    if policy == POLICY_STRICT:
                        bad = cur
                        status = ERR_BACKWARDS
                        break
                    nback += cnt
                    if policy == POLICY_MONOTONIC:
                        teff = tmax
                p = (w >> 11) & 1 if typ == 2 else pol
                for b in range(nbits):
                    if (m >> b) & 1:
                        out[n].t = teff
                        out[n].x = x0 + b
                        out[n].y = y
                        out[n].p = p
                        n += 1
                tmax = max(tmax, teff)
            if typ != 2:
                bx += nbits
        elif typ == 0:  # ADDR_Y
            yy = w & 0x7FF
            if yy >= height:
                bad = yy
                status = ERR_Y
                break
            y = yy
        elif typ == 6:  # TIME_LOW
            cur = base + (w & 0xFFF)
        elif typ == 8:  # TIME_HIGH
            h = w & 0xFFF
            if have != 0 and h < th and th - h >= EVT3_LOOP_MIN_DROP:
                loops += 1
            have = 1
            th = h
            base = loops * EVT3_TIME_LOOP_US + (h << 12)
            cur = base
        elif typ == 7 or typ == 14 or typ == 15:  # CONTINUED_4, OTHERS, CONTINUED_12
            pass
        elif typ == 3:  # VECT_BASE_X
            bx = w & 0x7FF
            pol = (w >> 11) & 1
        elif typ == 10:  # EXT_TRIGGER
            triggers += 1
        else:
            bad = typ
            status = ERR_TYPE
            break
        pos += 1
    state[ST_HAVE_TIME] = have
    state[ST_TIME_HIGH] = th
    state[ST_LOOPS] = loops
    state[ST_BASE] = base
    state[ST_CUR] = cur
    state[ST_MAX] = tmax
    state[ST_Y] = y
    state[ST_BASE_X] = bx
    state[ST_POL] = pol
    state[ST_SKIPPED] = skipped
    state[ST_TRIGGERS] = triggers
    state[ST_BACKWARDS] = nback
    state[ST_BAD] = bad
    return pos, n, status


@njit(cache=True)
def evt2_decode(words, pos, out, n, state):
    """Decode EVT 2.0 32-bit ``words[pos:]`` into ``out[n:]``; see the module docstring.

    Word types (bits 31..28): 0 CD_OFF / 1 CD_ON (t low 6 bits 27..22, x 21..11, y 10..0),
    8 EV_TIME_HIGH (t bits 33..6 in bits 27..0), 10 EXT_TRIGGER, 14 OTHERS, 15 CONTINUED.
    """
    cap = out.shape[0]
    nw = words.shape[0]
    have = state[ST_HAVE_TIME]
    th = state[ST_TIME_HIGH]
    loops = state[ST_LOOPS]
    base = state[ST_BASE]
    tmax = state[ST_MAX]
    policy = state[ST_POLICY]
    width = state[ST_WIDTH]
    height = state[ST_HEIGHT]
    skipped = state[ST_SKIPPED]
    triggers = state[ST_TRIGGERS]
    nback = state[ST_BACKWARDS]
    bad = state[ST_BAD]
    status = STATUS_DONE
    while pos < nw:
        if have != 0:  # fast run: in-sensor events in time order, TIME_HIGH without a wrap, fillers
            while pos < nw:
                w = np.int64(words[pos & NONNEG])
                typ = w >> 28
                if typ <= 1:
                    x = (w >> 11) & 0x7FF
                    y = w & 0x7FF
                    t = base + ((w >> 22) & 0x3F)
                    if n >= cap or x >= width or y >= height or t < tmax:
                        break
                    i = n & NONNEG
                    out[i].t = t
                    out[i].x = x
                    out[i].y = y
                    out[i].p = typ
                    n += 1
                    tmax = t
                elif typ == 8:
                    h = w & 0xFFFFFFF
                    if th - h > EVT2_LOOP_MIN_DROP:
                        break
                    th = h
                    base = loops * EVT2_TIME_LOOP_US + (h << 6)
                elif typ < 14:
                    break
                pos += 1
            if pos >= nw:
                break
        # the word the fast run stopped at (or every word before the first TIME_HIGH): full logic
        w = np.int64(words[pos])
        typ = w >> 28
        if typ <= 1:
            if have == 0:
                skipped += 1
                pos += 1
                continue
            if n >= cap:
                status = STATUS_FULL
                break
            x = (w >> 11) & 0x7FF
            y = w & 0x7FF
            if x >= width:
                bad = x
                status = ERR_X
                break
            if y >= height:
                bad = y
                status = ERR_Y
                break
            t = base + ((w >> 22) & 0x3F)
            if t >= tmax:
                tmax = t
            else:
                if policy == POLICY_STRICT:
                    bad = t
                    status = ERR_BACKWARDS
                    break
                nback += 1
                if policy == POLICY_MONOTONIC:
                    t = tmax
            out[n].t = t
            out[n].x = x
            out[n].y = y
            out[n].p = typ
            n += 1
        elif typ == 8:
            h = w & 0xFFFFFFF
            if have != 0 and h < th and th - h > EVT2_LOOP_MIN_DROP:
                loops += 1
            have = 1
            th = h
            base = loops * EVT2_TIME_LOOP_US + (h << 6)
        elif typ == 10:
            if have == 0:
                skipped += 1
            else:
                triggers += 1
        elif typ == 14 or typ == 15:
            pass
        else:
            bad = typ
            status = ERR_TYPE
            break
        pos += 1
    state[ST_HAVE_TIME] = have
    state[ST_TIME_HIGH] = th
    state[ST_LOOPS] = loops
    state[ST_BASE] = base
    state[ST_MAX] = tmax
    state[ST_SKIPPED] = skipped
    state[ST_TRIGGERS] = triggers
    state[ST_BACKWARDS] = nback
    state[ST_BAD] = bad
    return pos, n, status


@njit(cache=True)
def dat_decode(words, pos, out, n, state):
    """Decode DAT events (pairs of 32-bit words: t, data) from pair ``pos`` into ``out[n:]``.

    ``data`` layout v2: x bits 13..0, y 27..14, p 31..28; v1: x 8..0, y 16..9, p 20..17.
    t is 32-bit µs: a drop of more than 2^31 is a wrap (+2^32). ``pos`` counts 8-byte events.
    """
    cap = out.shape[0]
    npairs = words.shape[0] // 2
    loops = state[ST_LOOPS]
    tmax = state[ST_MAX]
    policy = state[ST_POLICY]
    width = state[ST_WIDTH]
    height = state[ST_HEIGHT]
    v1 = state[ST_VERSION] == 1
    nback = state[ST_BACKWARDS]
    bad = state[ST_BAD]
    status = STATUS_DONE
    while pos < npairs:
        if not v1:  # fast run: v2 layout, in range, in order, room left; else one full step
            off = loops * DAT_TIME_LOOP_US
            while pos < npairs and n < cap:
                j = (2 * pos) & NONNEG
                t = np.int64(words[j]) + off
                d = np.int64(words[j + 1])
                x = d & 0x3FFF
                y = (d >> 14) & 0x3FFF
                p = d >> 28
                if x >= width or y >= height or p > 1 or t < tmax:
                    break
                tmax = t
                i = n & NONNEG
                out[i].t = t
                out[i].x = x
                out[i].y = y
                out[i].p = p
                n += 1
                pos += 1
            if pos >= npairs:
                break
        if n >= cap:
            status = STATUS_FULL
            break
        t = np.int64(words[2 * pos]) + loops * DAT_TIME_LOOP_US
        d = np.int64(words[2 * pos + 1])
        if v1:
            x = d & 0x1FF
            y = (d >> 9) & 0xFF
            p = (d >> 17) & 0xF
        else:
            x = d & 0x3FFF
            y = (d >> 14) & 0x3FFF
            p = d >> 28
        if x >= width:
            bad = x
            status = ERR_X
            break
        if y >= height:
            bad = y
            status = ERR_Y
            break
        if p > 1:
            bad = p
            status = ERR_POLARITY
            break
        if t < tmax and tmax - t > DAT_LOOP_MIN_DROP:
            loops += 1
            t += DAT_TIME_LOOP_US
        if t >= tmax:
            tmax = t
        else:
            if policy == POLICY_STRICT:
                bad = t
                status = ERR_BACKWARDS
                break
            nback += 1
            if policy == POLICY_MONOTONIC:
                t = tmax
        out[n].t = t
        out[n].x = x
        out[n].y = y
        out[n].p = p
        n += 1
        pos += 1
    state[ST_LOOPS] = loops
    state[ST_MAX] = tmax
    state[ST_BACKWARDS] = nback
    state[ST_BAD] = bad
    return pos, n, status


@njit(cache=True)
def evt3_max_events(words, starts, length):
    """Most events ``words[s:s + length]`` (for ``s`` in ``starts``) can make: 1 per ADDR_X, the
    set mask bits of each VECT_12 / VECT_8 (words before the first TIME_HIGH would make none).
    read_all sizes its output from this on a sample; arithmetic only (a lookup table would miss
    the cache on every sample word)."""
    total = 0
    nw = words.shape[0]
    for s in starts:
        for i in range(max(s, 0), min(s + length, nw)):
            w = np.int64(words[i & NONNEG])
            typ = w >> 12
            m = (w & 0xFFF) * (typ == 4) + (w & 0xFF) * (typ == 5)
            m = m - ((m >> 1) & 0x555)  # popcount of the 12-bit mask (SWAR)
            m = (m & 0x333) + ((m >> 2) & 0x333)
            m = (m + (m >> 4)) & 0x0F0F
            total += ((m + (m >> 8)) & 0x1F) + (typ == 2)
    return total


# encoder state layout
EN_STARTED = 0   # a TIME_HIGH has been written
EN_HIGH = 1      # unwrapped t >> 12 of the last TIME_HIGH written
EN_LOW = 2       # TIME_LOW value the decoder holds
EN_Y = 3         # row the decoder holds (-1: none yet)
EN_BASE_X = 4    # vector base x the decoder holds (-1: none)
EN_POL = 5       # vector polarity the decoder holds
ENC_STATE_LEN = 6


def new_encoder_state() -> np.ndarray:
    st = np.zeros(ENC_STATE_LEN, np.int64)
    st[EN_Y] = -1
    st[EN_BASE_X] = -1
    return st


@njit(cache=True)
def evt3_encode(t, x, y, p, i, out, state):
    """Encode events ``i..`` (sorted ``t`` >= 0, validated x/y/p) as EVT 3.0 words into ``out``.

    Returns ``(i, n_words, status)``: the next event to encode, the words written, and
    STATUS_DONE or STATUS_FULL (call again with a fresh ``out``; ``state`` carries over).
    Every TIME_HIGH step is written (as a camera does), so any decoder sees each 24-bit wrap
    as a 4095 -> 0 drop; the first TIME_HIGH starts at 0 when t[0] >= 2^24 for the same reason.
    Runs of >= 2 events with equal t, y, p and rising x within 12 pixels become VECT_12 words.
    """
    cap = out.shape[0]
    ne = t.shape[0]
    started = state[EN_STARTED]
    high = state[EN_HIGH]
    low = state[EN_LOW]
    cy = state[EN_Y]
    bx = state[EN_BASE_X]
    bpol = state[EN_POL]
    nw = 0
    status = STATUS_DONE
    while i < ne:
        tt = t[i]
        h = tt >> 12
        lo = tt & 0xFFF
        if started == 0:
            if nw >= cap:
                status = STATUS_FULL
                break
            high = h if h < 4096 else 0
            out[nw] = 0x8000 | (high & 0xFFF)
            nw += 1
            started = 1
            low = 0
        full = False
        while high < h:
            if nw >= cap:
                full = True
                break
            high += 1
            out[nw] = 0x8000 | (high & 0xFFF)
            nw += 1
            low = 0
        if full or nw + 4 > cap:
            status = STATUS_FULL
            break
        if lo != low:
            out[nw] = 0x6000 | lo
            nw += 1
            low = lo
        yy = y[i]
        if yy != cy:
            out[nw] = yy
            nw += 1
            cy = yy
        xi = x[i]
        pi = p[i]
        # continue the decoder's vector base, or start a new one, when a run follows
        if bx >= 0 and pi == bpol and xi >= bx and xi < bx + 12:
            start = bx
        else:
            start = xi
        j = i + 1
        last = xi
        while j < ne and t[j] == tt and y[j] == yy and p[j] == pi and x[j] > last and x[j] < start + 12:
            last = x[j]
            j += 1
        if j - i >= 2 or start != xi:
            if start == xi and not (bx == xi and bpol == pi):
                out[nw] = 0x3000 | (pi << 11) | xi
                nw += 1
            m = 0
            for k in range(i, j):
                m |= 1 << (x[k] - start)
            out[nw] = 0x4000 | m
            nw += 1
            bx = start + 12
            bpol = pi
        else:
            out[nw] = 0x2000 | (pi << 11) | xi
            nw += 1
            bx = -1  # some decoders (faery) let ADDR_X overwrite the vector base and polarity
        i = j
    state[EN_STARTED] = started
    state[EN_HIGH] = high
    state[EN_LOW] = low
    state[EN_Y] = cy
    state[EN_BASE_X] = bx
    state[EN_POL] = bpol
    return i, nw, status
