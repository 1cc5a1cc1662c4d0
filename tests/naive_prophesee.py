"""Slow, obviously-correct twins of ``prophesee_kernels`` and builders of synthetic Prophesee files.

The decoders follow the format specs word by word in plain Python (one ``if`` per word type),
with the same time policies as the kernels: "monotonic" (clamp each event to the largest
time of the events before it), "spec" (raw value), so a mismatch points at the fast kernel.
"""

from __future__ import annotations

import numpy as np

from spikeflow.service.events import EVENT_DTYPE, make_events


def _emit(events, t, x, y, p, tmax, policy):
    """Append one event applying the time policy; returns the new running maximum."""
    if t < tmax and policy == "monotonic":
        t = tmax
    events.append((t, x, y, p))
    return max(tmax, t)


def decode_evt3(words, policy="monotonic"):
    """EVT 3.0 spec decoder: TIME_HIGH sets t = high<<12 (+ wraps), TIME_LOW sets t = base + low."""
    ev, tmax = [], -1
    have, high, loops, base, cur, y, bx, pol = False, 0, 0, 0, 0, 0, 0, 0
    for w in (int(v) for v in words):
        typ, v = w >> 12, w & 0xFFF
        if not have and typ != 8:
            continue
        if typ == 8:
            if have and high - v >= 4085:
                loops += 1
            have, high = True, v
            base = cur = loops * (1 << 24) + (v << 12)
        elif typ == 6:
            cur = base + v
        elif typ == 0:
            y = w & 0x7FF
        elif typ == 2:
            tmax = _emit(ev, cur, w & 0x7FF, y, (w >> 11) & 1, tmax, policy)
        elif typ == 3:
            bx, pol = w & 0x7FF, (w >> 11) & 1
        elif typ in (4, 5):
            nbits = 12 if typ == 4 else 8
            for b in range(nbits):
                if (w >> b) & 1:
                    tmax = _emit(ev, cur, bx + b, y, pol, tmax, policy)
            bx += nbits
    return _array(ev)


def max_events_evt3(words) -> int:
    """Events the EVT 3.0 words could make: 1 per ADDR_X, the set mask bits per VECT_12 / VECT_8."""
    total = 0
    for w in (int(v) for v in words):
        typ = w >> 12
        total += 1 if typ == 2 else (w & 0xFFF).bit_count() if typ == 4 else (w & 0xFF).bit_count() if typ == 5 else 0
    return total


def decode_evt2(words, policy="monotonic"):
    """EVT 2.0 spec decoder: t = (TIME_HIGH << 6 | low6) + wraps * 2^34."""
    ev, tmax = [], -1
    have, high, loops = False, 0, 0
    for w in (int(v) for v in words):
        typ = w >> 28
        if typ == 8:
            h = w & 0xFFFFFFF
            if have and high - h > (1 << 27):
                loops += 1
            have, high = True, h
        elif typ in (0, 1) and have:
            t = loops * (1 << 34) + (high << 6) + ((w >> 22) & 0x3F)
            tmax = _emit(ev, t, (w >> 11) & 0x7FF, w & 0x7FF, typ, tmax, policy)
    return _array(ev)


def decode_dat(pairs, policy="monotonic", version=2):
    """DAT decoder over (t32, data32) pairs: 32-bit time with wraps, v1/v2 bit layouts."""
    ev, tmax, loops = [], -1, 0
    for t32, d in ((int(a), int(b)) for a, b in pairs):
        t = t32 + loops * (1 << 32)
        if t < tmax and tmax - t > (1 << 31):
            loops += 1
            t += 1 << 32
        if version == 1:
            x, y, p = d & 0x1FF, (d >> 9) & 0xFF, (d >> 17) & 0xF
        else:
            x, y, p = d & 0x3FFF, (d >> 14) & 0x3FFF, d >> 28
        tmax = _emit(ev, t, x, y, p, tmax, policy)
    return _array(ev)


def encode_evt3_plain(events) -> np.ndarray:
    """EVT 3.0 words for sorted events, one ADDR_X per event (no vectors): the simplest valid stream."""
    words, high = [], None
    for t, x, y, p in zip(events["t"], events["x"], events["y"], events["p"]):
        h = int(t) >> 12
        if high is None:
            high = 0 if h >= 4096 else h
            words.append(0x8000 | (high & 0xFFF))
        while high < h:
            high += 1
            words.append(0x8000 | (high & 0xFFF))
        words += [0x6000 | (int(t) & 0xFFF), int(y), 0x2000 | (int(p) << 11) | int(x)]
    return np.array(words, dtype="<u2")


def _array(ev):
    if not ev:
        return np.zeros(0, EVENT_DTYPE)
    a = np.array(ev, dtype=np.int64)
    return make_events(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


# -- synthetic files -----------------------------------------------------------------------

def header(*lines: str) -> bytes:
    return "".join(f"% {ln}\n" for ln in lines).encode()


def evt3_file(path, words, lines=("evt 3.0", "geometry 64x48")):
    path.write_bytes(header(*lines) + np.asarray(words, dtype="<u2").tobytes())
    return path


def evt2_file(path, words, lines=("evt 2.0", "geometry 64x48")):
    path.write_bytes(header(*lines) + np.asarray(words, dtype="<u4").tobytes())
    return path


def dat_file(path, pairs, lines=("Data file containing CD events.", "Version 2", "Width 64", "Height 48"),
             ev_type=0x0C, ev_size=8):
    body = np.asarray(pairs, dtype="<u4").reshape(-1, 2).tobytes()
    path.write_bytes(header(*lines) + bytes([ev_type, ev_size]) + body)
    return path


def evt2_cd(t_low, x, y, p):
    return (p << 28) | ((t_low & 0x3F) << 22) | (x << 11) | y


def dat_data(x, y, p):
    return x | (y << 14) | (p << 28)


# -- random valid word streams (for kernel-vs-twin tests) -------------------------------------

def random_evt3_words(rng, n_words: int, width: int = 2048, height: int = 2048) -> np.ndarray:
    """Valid EVT 3.0 words: rows, single events, vectors (after a base), time steps back and forth
    (including 4095 -> 0 wraps), triggers and filler words."""
    words = [0x8000 | int(rng.integers(0, 4096))]
    vec_left = 0
    while len(words) < n_words:
        k = int(rng.integers(0, 10))
        if k == 0:
            words.append(int(rng.integers(0, height)))
        elif k in (1, 2, 3):
            words.append(0x2000 | (int(rng.integers(0, 2)) << 11) | int(rng.integers(0, width)))
        elif k == 4:
            if vec_left == 0:
                words.append(0x3000 | (int(rng.integers(0, 2)) << 11) | int(rng.integers(0, max(width - 60, 1))))
                vec_left = 4
            vec_left -= 1
            words.append((0x4000 | int(rng.integers(0, 4096))) if rng.integers(0, 2) else (0x5000 | int(rng.integers(0, 256))))
        elif k == 5:
            words.append(0x6000 | int(rng.integers(0, 4096)))
        elif k == 6:
            prev = max((w & 0xFFF for w in words if w >> 12 == 8), default=0)
            step = int(rng.choice([0, 1, 1, 2, -3, 4095]))
            words.append(0x8000 | ((prev + step) & 0xFFF))
        else:
            words.append(int(rng.choice([0x7000, 0xA001, 0xE000, 0xF000])) | int(rng.integers(0, 256)))
        if words[-1] >> 12 not in (4, 5):
            vec_left = 0
    return np.array(words[:n_words], dtype="<u2")


def random_evt2_words(rng, n_words: int, width: int = 2048, height: int = 2048) -> np.ndarray:
    """Valid EVT 2.0 words: CD events (low time bits mostly rising, some steps back), TIME_HIGH
    steps forward, back a little and over the 2^28 wrap, triggers and filler words; a few events
    before the first TIME_HIGH."""
    words = [int(evt2_cd(int(rng.integers(0, 64)), 1, 1, 0)) for _ in range(3)]
    high = int(rng.integers((1 << 28) - 40, 1 << 28))
    words.append((8 << 28) | high)
    low = 0
    while len(words) < n_words:
        k = int(rng.integers(0, 12))
        if k < 8:
            low = min(max(low + int(rng.choice([0, 1, 2, 5, -3])), 0), 63)
            words.append(evt2_cd(low, int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(0, 2))))
        elif k < 10:
            high = (high + int(rng.choice([1, 1, 2, 0, -1, 3]))) % (1 << 28)
            words.append((8 << 28) | high)
            low = int(rng.integers(0, 8))
        elif k == 10:
            words.append((0xA << 28) | int(rng.integers(0, 1 << 20)))
        else:
            words.append((int(rng.choice([0xE, 0xF])) << 28) | int(rng.integers(0, 1 << 20)))
    return np.array(words[:n_words], dtype="<u4")


def random_dat_pairs(rng, n_events: int, width: int = 2048, height: int = 2048) -> np.ndarray:
    """Valid DAT v2 (t32, data32) pairs: time mostly rising, sometimes a step back, crossing the
    2^32 wrap twice."""
    steps = rng.choice([0, 1, 3, 40, -5, -200], n_events, p=[.2, .3, .2, .2, .05, .05])
    t = ((1 << 32) - 3000 + np.cumsum(steps) * 7) % (1 << 32)
    t[n_events // 2:] = (t[n_events // 2:] + (1 << 31) + 12345) % (1 << 32)  # a forward jump, then a wrap
    data = dat_data(rng.integers(0, width, n_events), rng.integers(0, height, n_events), rng.integers(0, 2, n_events))
    return np.stack([t, data], axis=1).astype("<u4")
