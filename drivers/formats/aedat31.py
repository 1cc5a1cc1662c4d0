"""AEDAT 3.1 (cAER; the DVS128 Gesture ``user*_*.aedat`` files): reader and writer.

Layout: ``#!AER-DAT3.1`` text header closed by ``#!END-HEADER\\r\\n``, then packets, each a
28-byte little-endian header::

    int16 eventType  int16 eventSource  int32 eventSize  int32 eventTSOffset
    int32 eventTSOverflow  int32 eventCapacity  int32 eventNumber  int32 eventValid

followed by ``eventCapacity * eventSize`` bytes. Polarity events (type 1, 8 bytes): uint32 data
(bit 0 valid, bit 1 polarity, bits 2..16 y, bits 17..31 x) and int32 timestamp at
``eventTSOffset``; t_us = eventTSOverflow << 31 | timestamp, so there is no wrap to guess.
Events past ``eventNumber`` and invalid events (valid bit 0) are dropped; other packet types
(special, frame, IMU...) are skipped and counted in ``info.extra``.

Policy: polarity timestamps must not go backwards (RecordingError with the event's offset;
``strict_time=False`` keeps them). Sensor size: the ``#Source N: <chip>`` line (DVS128 ->
128x128, DAVIS346 -> 346x260, ...), ``dvsSizeX/dvsSizeY`` attributes, or ``sensor_size=``.
A ``<name>_labels.csv`` beside the file is reported as ``info.extra["labels_path"]``
(see :mod:`spikeflow.drivers.gesture_labels`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import aedat_kernels as K
from .aedat_header import chip_size, read_header, size_attributes, sniff_version

PACKET_HEADER = struct.Struct("<hhiiiiii")
POLARITY_TYPE = 1
DEFAULT_PACKET_EVENTS = 4096
MIN_BUFFER_BYTES = 1 << 20


def labels_path_for(path: Path) -> Path:
    """``user01_led.aedat`` -> ``user01_led_labels.csv`` (the DVS128 Gesture naming)."""
    return path.with_name(path.stem + "_labels.csv")


class Aedat31Reader(Reader):
    """Stream an AEDAT 3.1 file: bounded buffer of raw bytes + numba packet walker.

    Options: ``sensor_size=(W, H[, C])``, ``strict_time=True``.
    """

    format_name = "aedat31"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, strict_time: bool = True):
        self._opt_size = sensor_size
        self.strict_time = bool(strict_time)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        hdr = read_header(self.path, "3.1")
        sources = {k: v for k, v in hdr.fields.items() if k.startswith("Source")}
        extra = {"version": "3.1", "format": hdr.fields.get("Format"), "sources": sources,
                 "start_time": hdr.fields.get("Start-Time"), "data_start": hdr.data_start}
        fmt = hdr.fields.get("Format", "RAW")
        if fmt.upper() != "RAW":
            raise RecordingError(self.path, f"unsupported AEDAT 3.1 '#Format: {fmt}' (expected RAW)", 0)
        if self._opt_size is not None:
            size = SensorSize(*[int(v) for v in self._opt_size])
        else:
            size = None
            attrs = size_attributes("\n".join(hdr.lines))
            if attrs:
                size = SensorSize(attrs[0], attrs[1], 2)
            for name in sources.values():
                known = chip_size(name.split()[0]) if name.split() else None
                if size is None and known:
                    size = SensorSize(known[0], known[1], 2)
            if size is None:
                raise RecordingError(self.path, f"no known '#Source' chip in the header ({sources or 'none'}): "
                                                "pass sensor_size=(W, H)", 0)
        lp = labels_path_for(self.path)
        if lp.exists():
            extra["labels_path"] = str(lp)
        self._data_start = hdr.data_start
        self._size = self.path.stat().st_size
        return RecordingInfo(str(self.path), "aedat31", size, extra)

    def _chunks(self) -> Iterator[np.ndarray]:
        ss = self.info.sensor_size
        state = np.zeros(K.S_STATE_LEN, np.int64)
        state[K.S_LAST_T] = -1
        buf = np.empty(max(MIN_BUFFER_BYTES, 8 * self.chunk_events), np.uint8)
        end = pos = 0
        base = self._data_start  # file offset of buf[0]
        eof = False
        with open(self.path, "rb") as f:
            f.seek(self._data_start)
            ev = np.empty(self.chunk_events, EVENT_DTYPE)
            k = 0
            while True:
                pos, k = K.aedat31_decode(buf, end, pos, base, self._size, ss.width, ss.height, self.strict_time,
                                          state, ev["t"], ev["x"], ev["y"], ev["p"], k, self.chunk_events)
                if state[K.S_ERR]:
                    self._publish(state)
                    self._raise(state)
                if k == self.chunk_events:
                    self._publish(state)
                    yield ev
                    ev = np.empty(self.chunk_events, EVENT_DTYPE)
                    k = 0
                    continue
                if eof:
                    break
                # refill: keep the unconsumed tail, read after it
                tail = end - pos
                buf[:tail] = buf[pos:end]
                base += pos
                pos, end = 0, tail
                got = f.readinto(memoryview(buf)[end:])
                if not got:
                    eof = True
                end += got
        if end > pos or state[K.S_IN_PACKET]:
            self._publish(state)
            off = int(state[K.S_PACKET_OFFSET]) if state[K.S_IN_PACKET] else base + pos
            raise RecordingError(self.path, "truncated: file ends inside a packet (expected a 28-byte header "
                                            "and eventCapacity * eventSize bytes)", off)
        self._publish(state)
        yield ev[:k]

    def _publish(self, state: np.ndarray) -> None:
        self.info.extra.update(polarity_packets=int(state[K.S_POL_PACKETS]),
                               skipped_packets=int(state[K.S_OTHER_PACKETS]),
                               skipped_events=int(state[K.S_OTHER_EVENTS]),
                               invalid_events=int(state[K.S_INVALID]))

    def _raise(self, state: np.ndarray) -> None:
        code, off = int(state[K.S_ERR]), int(state[K.S_ERR_OFFSET])
        ss = self.info.sensor_size
        msg = {
            K.ERR_PACKET: "corrupt packet header: expected eventSize in 1..2**24 (8..4096 for polarity), "
                          "0 <= eventTSOffset <= eventSize-4, eventValid <= eventNumber <= eventCapacity, "
                          "eventTSOverflow >= 0",
            K.ERR_TRUNCATED: "truncated: packet body (eventCapacity * eventSize bytes) runs past the end of the file",
            K.ERR_TIMESTAMP: "negative polarity timestamp (expected a 31-bit value)",
            K.ERR_BACKWARDS: f"timestamp goes backwards (previous {int(state[K.S_LAST_T])} µs), expected "
                             "non-decreasing time; strict_time=False keeps it",
            K.ERR_COORD: f"polarity event outside the {ss.width}x{ss.height} sensor",
        }.get(code, f"decoder error {code}")
        raise RecordingError(self.path, msg, off)


class Aedat31Writer(Writer):
    """Write EVENT_DTYPE events as AEDAT 3.1 polarity packets (source 1, all events valid).

    The header names the source ``DVS128`` for a 128x128 sensor and carries
    ``dvsSizeX``/``dvsSizeY`` for any size. A packet never spans two values of ``t >> 31``
    (its eventTSOverflow). Requires t >= 0, 0 <= x < W, 0 <= y < H, t non-decreasing.
    """

    format_name = "aedat31"

    def __init__(self, path, sensor_size, extra=None, packet_events: int = DEFAULT_PACKET_EVENTS):
        super().__init__(path, sensor_size, extra)
        if not 1 <= packet_events <= 1 << 24:
            raise ValueError(f"packet_events must be in 1..2**24, got {packet_events}")
        self.packet_events = int(packet_events)
        w, h = self.sensor_size.width, self.sensor_size.height
        if not (0 < w <= 32768 and 0 < h <= 32768):
            raise RecordingError(self.path, f"AEDAT 3.1 holds at most 32768x32768 pixels, got {w}x{h}")
        source = "DVS128" if (w, h) == (128, 128) else f"spikeflow-{w}x{h}"
        start = str(self.extra.get("start_time") or "1970-01-01 00:00:00 (TZ+0000)").replace("\n", " ")
        header = (f"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: {source}\r\n"
                  f"#-Source 1: <sourceInfo dvsSizeX=\"{w}\" dvsSizeY=\"{h}\"/>\r\n"
                  f"#Start-Time: {start}\r\n#!END-HEADER\r\n")
        self._f = open(self.path, "wb")
        self._f.write(header.encode("latin-1"))
        self._last_t = -1
        self.events_written = 0

    def _write(self, events: np.ndarray) -> None:
        t = events["t"]
        w, h = self.sensor_size.width, self.sensor_size.height
        bad = (t < 0) | (events["x"] < 0) | (events["x"] >= w) | (events["y"] < 0) | (events["y"] >= h)
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordingError(self.path, f"event {self.events_written + i} not writable as AEDAT 3.1 "
                                            f"(t={int(t[i])}, x={int(events['x'][i])}, y={int(events['y'][i])}; "
                                            f"need t >= 0 and a pixel inside {w}x{h})")
        if int(t[0]) < self._last_t or (len(t) > 1 and bool(np.any(t[1:] < t[:-1]))):
            raise RecordingError(self.path, "AEDAT 3.1 needs non-decreasing timestamps")
        self._last_t = int(t[-1])
        overflow = t >> 31
        cuts = np.flatnonzero(overflow[1:] != overflow[:-1]) + 1
        bounds = np.concatenate([[0], cuts, [len(t)]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            for i in range(int(a), int(b), self.packet_events):
                j = min(i + self.packet_events, int(b))
                self._packet(events[i:j], int(overflow[i]))
        self.events_written += len(events)

    def _packet(self, ev: np.ndarray, overflow: int) -> None:
        n = len(ev)
        body = np.empty(8 * n, np.uint8)
        K.aedat31_encode(ev["t"], ev["x"], ev["y"], ev["p"], body)
        self._f.write(PACKET_HEADER.pack(POLARITY_TYPE, 1, 8, 4, overflow, n, n, n))
        self._f.write(body.tobytes())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _sniff(head: bytes, path: Path) -> bool:
    return sniff_version(head) == "3.1"


FORMAT = register_format(Format(
    name="aedat31", description="cAER AEDAT 3.1 (DVS128 Gesture; polarity packets)",
    extensions=(".aedat", ".aedat3"), sniff=_sniff, reader=Aedat31Reader, writer=Aedat31Writer, priority=50))
