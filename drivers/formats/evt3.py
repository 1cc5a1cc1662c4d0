"""Prophesee EVT 3.0 ``.raw``: streaming reader and the interchange writer.

EVT 3.0 is a stream of little-endian 16-bit words after a '%' text header (see
``prophesee_header``). Time is 24 bits of µs (TIME_HIGH = bits 23..12, TIME_LOW = bits 11..0)
and wraps every 16.777216 s: a TIME_HIGH that drops by >= 4085 (e.g. 4095 -> 0) counts one wrap
and adds 2^24 µs, as OpenEB and the ``evt3`` package do. Words before the first TIME_HIGH have
no time base and are skipped. See docs/formats-prophesee.md for the time policies.

The writer produces EVT 3.0 that every decoder we know reads back bit-exactly: each TIME_HIGH
step is written (so wraps are visible), equal-time runs along a row become VECT_12 words.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import as_events

from ..recording import Format, Writer, register_format
from . import prophesee_kernels as K
from .prophesee_header import PropheseeHeader, sniff_header
from .prophesee_stream import PropheseeReader

KNOWN_TYPES = "0 ADDR_Y, 2 ADDR_X, 3 VECT_BASE_X, 4 VECT_12, 5 VECT_8, 6 TIME_LOW, 7 CONTINUED_4, " \
              "8 TIME_HIGH, A EXT_TRIGGER, E OTHERS, F CONTINUED_12"
MAX_COORD = 2048              # 11-bit x and y
MAX_FIRST_T_US = 1 << 32      # a later first timestamp would need > 1 M leading TIME_HIGH words
WRITE_WORDS = 1 << 18         # encoder output buffer (512 KiB)
SAMPLE_STRIPES = 16           # read_all's output size guess: 16 stripes of 1024 words
SAMPLE_WORDS = 1024
_RESERVED_KEYS = {"evt", "format", "geometry", "end", "Width", "Height", "Version",
                  "evt_version", "data_offset", "time_policy", "sensor_size_source"}  # source-decode details


class Evt3Reader(PropheseeReader):
    """Stream EVT 3.0 events (``time_policy`` and ``sensor_size`` as in PropheseeReader)."""

    format_name = "evt3"
    unit_bytes = 2
    word_dtype = np.dtype("<u2")
    kernel = staticmethod(K.evt3_decode)

    def _check_header(self, hdr: PropheseeHeader) -> int:
        if hdr.evt_version not in (None, "3.0"):
            raise RecordingError(self.path, f"header says EVT {hdr.evt_version}; expected EVT 3.0", 0)
        return hdr.data_offset

    def _capacity_hint(self, n_units: int, words: np.ndarray) -> int:
        """Events expected in ``words``, from the events per word of ``SAMPLE_STRIPES`` stripes
        spread over the file, plus a quarter (an underestimate only costs one grow-and-copy).

        Why not ``n_units`` (enough unless vectors are dense): real streams spend 1.4..3.8 words
        per event, and an output 4x too large goes to fresh pages from the OS on every call,
        where one of the right size is recycled by the allocator across decodes (2 ms of 16 on
        faery's evt3.raw)."""
        if n_units <= SAMPLE_STRIPES * SAMPLE_WORDS:
            starts, length = np.zeros(1, np.int64), n_units
        else:
            starts, length = np.linspace(0, n_units - SAMPLE_WORDS, SAMPLE_STRIPES).astype(np.int64), SAMPLE_WORDS
        per_word = K.evt3_max_events(words, starts, length) / (len(starts) * length)
        return min(int(per_word * 1.25 * n_units) + SAMPLE_WORDS, 12 * n_units)

    def _type_error(self, typ: int) -> str:
        return f"unknown EVT 3.0 word type 0x{typ:X} (expected one of {KNOWN_TYPES})"


class Evt3Writer(Writer):
    """Write events as EVT 3.0 with a header naming the geometry.

    Accepts events sorted by ``t`` (also across ``write`` calls), ``t >= 0``, ``p`` in {0, 1},
    ``0 <= x < width``, ``0 <= y < height``; anything else raises RecordingError (a ValueError)
    naming the event index. The first timestamp must be below 2^32 µs (subtract an offset
    from epoch-based clocks first): EVT 3.0 has no absolute time beyond its 24-bit counter, so
    the writer counts up from TIME_HIGH 0 to reach it.
    """

    format_name = "evt3"

    def __init__(self, path, sensor_size, extra=None):
        super().__init__(path, sensor_size, extra)
        w, h = self.sensor_size.width, self.sensor_size.height
        if not (0 < w <= MAX_COORD and 0 < h <= MAX_COORD):
            raise RecordingError(self.path, f"EVT 3.0 addresses 1..{MAX_COORD} pixels per axis; "
                                            f"cannot encode sensor size {w}x{h}")
        self._state = K.new_encoder_state()
        self._words = np.empty(WRITE_WORDS, np.uint16)
        self._last_t = -1
        self.events_written = 0
        self._f = open(self.path, "wb")
        self._f.write(self._header())

    def _header(self) -> bytes:
        w, h = self.sensor_size.width, self.sensor_size.height
        lines = ["evt 3.0", f"format EVT3;height={h};width={w}", f"geometry {w}x{h}",
                 "integrator_name spikeflow"]
        for key, value in self.extra.items():
            if (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)) and key not in _RESERVED_KEYS
                    and isinstance(value, (str, int, float)) and "\n" not in str(value)):
                lines.append(f"{key} {value}")
        lines.append("end")
        return "".join(f"% {ln}\n" for ln in lines).encode("latin-1", "replace")

    def _validate(self, ev: np.ndarray) -> None:
        t, x, y, p = ev["t"], ev["x"], ev["y"], ev["p"]
        ss = self.sensor_size
        checks = (
            (t < 0, "t must be >= 0 us"),
            (np.r_[t[0] < self._last_t, t[1:] < t[:-1]], "t must be sorted (non-decreasing, also across write calls)"),
            ((x < 0) | (x >= ss.width), f"x must be in [0, {ss.width})"),
            ((y < 0) | (y >= ss.height), f"y must be in [0, {ss.height})"),
            ((p != 0) & (p != 1), "p must be 0 or 1"),
        )
        for bad, what in checks:
            if bad.any():
                i = int(np.argmax(bad))
                raise RecordingError(self.path, f"cannot encode event {self.events_written + i} "
                                                f"(t={int(t[i])}, x={int(x[i])}, y={int(y[i])}, p={int(p[i])}): {what}")
        if self._last_t < 0 and int(t[0]) >= MAX_FIRST_T_US:
            raise RecordingError(self.path, f"cannot encode a first timestamp of {int(t[0])} us (>= 2^32): "
                                            "subtract a time offset first")

    def write(self, events: np.ndarray) -> None:
        if self._f.closed:
            raise RecordingError(self.path, "write after close")
        ev = as_events(np.asarray(events))
        if len(ev) == 0:
            return
        self._validate(ev)
        t = np.ascontiguousarray(ev["t"], dtype=np.int64)
        x = ev["x"].astype(np.int64)
        y = ev["y"].astype(np.int64)
        p = ev["p"].astype(np.int64)
        i = 0
        while True:
            i, nw, status = K.evt3_encode(t, x, y, p, i, self._words, self._state)
            self._f.write(self._words[:nw].astype("<u2", copy=False).tobytes())
            if status == K.STATUS_DONE and i >= len(t):
                break
        self._last_t = int(t[-1])
        self.events_written += len(ev)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _sniff(head: bytes, path: Path) -> bool:
    hdr = sniff_header(head)
    return hdr is not None and hdr.evt_version == "3.0"


FORMAT = register_format(Format(
    name="evt3", description="Prophesee EVT 3.0 .raw (16-bit vectorised words, 24-bit time)",
    extensions=(".raw",), sniff=_sniff, reader=Evt3Reader, writer=Evt3Writer, priority=50))

__all__ = ["FORMAT", "Evt3Reader", "Evt3Writer"]
