"""N-MNIST / N-Caltech101 ``.bin`` and SLAYER ``.bs2``: 40-bit big-endian events.

Layout (Orchard et al. 2015; SLAYER's ``.bs2`` is identical), 5 bytes per event::

    byte 0: x (8 bits)   byte 1: y (8 bits)   byte 2: p (bit 7) | t[22:16]   bytes 3-4: t[15:0]

A record with ``y == 240`` is a timestamp-overflow marker, not an event: every later
timestamp gains 2**13 us (the rule of the dataset's own reader and of ``tonic.io``).

There is no magic number: detection is by extension (``.bin``/``.bs2``) plus a size check
(a whole number of 5-byte records). The sensor size is never inferred from the data; first
match wins: ``sensor_size=``; ``dataset="ncaltech101"``/``"dvsgesture"``; a JSON sidecar
(``clip.bs2.json``, written by our writer); 34x34 (N-MNIST) otherwise. An event outside the
sensor raises a RecordingError that says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import nmnist_kernels as K
from .checks import check_chunk, parse_sensor_size, read_sidecar

RECORD_BYTES = 5
OVERFLOW_Y = 240
OVERFLOW_STEP_US = 1 << 13
T_MAX_RAW = (1 << 23) - 1
PRESETS = {  # dataset -> sensor size
    "nmnist": SensorSize(34, 34, 2),
    "ncaltech101": SensorSize(304, 240, 2),  # ATIS; N-Caltech101 samples use up to ~240x180 of it
    "dvsgesture": SensorSize(128, 128, 2),   # SLAYER's DvsGesture .bs2 conversion
}


class NmnistReader(Reader):
    """Stream 5-byte records; overflow markers applied across chunk boundaries."""

    format_name = "nmnist_bin"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, dataset: str | None = None,
                 check_order: bool = True):
        side = read_sidecar(Path(path)) if sensor_size is None and dataset is None else {}
        if sensor_size is not None:
            self._sensor, self._source = parse_sensor_size(sensor_size, path), "option"
        elif dataset is not None:
            if dataset not in PRESETS:
                raise RecordingError(path, f"unknown dataset {dataset!r}; known: {sorted(PRESETS)}")
            self._sensor, self._source = PRESETS[dataset], f"dataset preset {dataset}"
        elif "sensor_size" in side:
            self._sensor = parse_sensor_size(side["sensor_size"], path, "sidecar sensor_size")
            self._source = "sidecar"
        else:
            self._sensor, self._source = PRESETS["nmnist"], "default (N-MNIST 34x34)"
        self._check_order = bool(check_order)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        size = self.path.stat().st_size
        if size % RECORD_BYTES:
            whole = size - size % RECORD_BYTES
            raise RecordingError(self.path, f"truncated record: file size {size} is not a multiple of "
                                            f"{RECORD_BYTES} bytes", whole)
        self._size = size
        return RecordingInfo(str(self.path), "nmnist_bin", self._sensor,
                             {"records": size // RECORD_BYTES, "sensor_size_source": self._source})

    def read_all(self) -> np.ndarray:
        """The whole file goes to memory anyway: decode it as one chunk (no concatenation copy)."""
        self.chunk_events = max(1, self._size // RECORD_BYTES)
        return super().read_all()

    def _chunks(self) -> Iterator[np.ndarray]:
        overflows = 0
        last_t = None
        base = 0
        step = self.chunk_events * RECORD_BYTES
        with open(self.path, "rb") as f:
            while base < self._size:
                buf = f.read(min(step, self._size - base))
                if not buf:
                    break
                if len(buf) % RECORD_BYTES:  # file changed under us
                    raise RecordingError(self.path, "truncated record", base + len(buf) - len(buf) % RECORD_BYTES)
                raw = np.frombuffer(buf, np.uint8)
                ev = np.empty(len(buf) // RECORD_BYTES, EVENT_DTYPE)
                n, overflows = K.decode_records(raw, overflows, ev["t"], ev["x"], ev["y"], ev["p"])
                ev = ev[:n]
                b0 = base
                last_t = check_chunk(self.path, ev, self._sensor, last_t,
                                     lambda i: b0 + RECORD_BYTES * int(K.record_of_event(raw, i)),
                                     self._check_order)
                base += len(buf)
                yield ev


class NmnistWriter(Writer):
    """Write the 40-bit layout, inserting overflow markers for t >= 2**23 us (bit-exact with the reader)."""

    format_name = "nmnist_bin"

    def __init__(self, path, sensor_size, extra=None):
        super().__init__(path, sensor_size, extra)
        if self.sensor_size.width > 256 or self.sensor_size.height > OVERFLOW_Y:
            raise RecordingError(self.path, f"sensor {self.sensor_size.width}x{self.sensor_size.height} does not "
                                            f"fit the 40-bit layout (x < 256, y < {OVERFLOW_Y})")
        self._f = open(self.path, "wb")
        self._overflows = 0
        self._last_t = 0
        self.events_written = 0

    def _write(self, events: np.ndarray) -> None:
        n = len(events)
        t, x, y, p = events["t"], events["x"], events["y"], events["p"]
        w, h = self.sensor_size.width, self.sensor_size.height
        if ((x < 0) | (x >= w) | (y < 0) | (y >= h)).any():
            raise RecordingError(self.path, f"event outside the {w}x{h} sensor cannot be written")
        if ((p != 0) & (p != 1)).any():
            raise RecordingError(self.path, "the 40-bit layout stores polarity 0/1 only")
        if t[0] < self._last_t or (n > 1 and (t[1:] < t[:-1]).any()):
            raise RecordingError(self.path, "the 40-bit layout needs non-decreasing, non-negative timestamps")
        # Minimal overflow count per event; non-decreasing because t is.
        k = np.maximum(-(-(t - T_MAX_RAW) // OVERFLOW_STEP_US), self._overflows).astype(np.int64)
        rows = np.arange(n, dtype=np.int64) + (k - self._overflows)
        out = np.zeros((int(rows[-1]) + 1, RECORD_BYTES), np.uint8)
        out[:, 1] = OVERFLOW_Y  # every row not overwritten below is an overflow marker
        raw_t = t - OVERFLOW_STEP_US * k
        out[rows, 0] = x
        out[rows, 1] = y
        out[rows, 2] = (p.astype(np.int64) << 7 | raw_t >> 16).astype(np.uint8)
        out[rows, 3] = (raw_t >> 8) & 0xFF
        out[rows, 4] = raw_t & 0xFF
        self._f.write(out.tobytes())
        self._overflows = int(k[-1])
        self._last_t = int(t[-1])
        self.events_written += n

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            # the layout has no header: the sensor size travels in a sidecar
            self.path.with_name(self.path.name + ".json").write_text(
                json.dumps({"sensor_size": list(self.sensor_size)}))


def _sniff(head: bytes, path: Path) -> bool:
    if path.suffix.lower() not in (".bin", ".bs2"):
        return False
    return path.stat().st_size % RECORD_BYTES == 0


FORMAT = register_format(Format(
    name="nmnist_bin", description="N-MNIST/N-Caltech101 .bin, SLAYER .bs2 (40-bit big-endian)",
    extensions=(".bin", ".bs2"), sniff=_sniff, reader=NmnistReader, writer=NmnistWriter, priority=-10))
