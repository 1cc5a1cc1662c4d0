"""AEDAT 2.0 (jAER): ``#!AER-DAT2.0`` text header, then big-endian (int32 address, int32 t_us).

Address layouts, chosen from the header's ``# AEChip:`` class (or ``layout=``):

* DVS128 (``DVS128``, ``Tmpdiff128``; also assumed when the header names no chip, as in
  2008-era files such as MNIST-DVS): p = bit 0, x = bits 1..7, y = bits 8..14. Default
  ``layout="jaer"`` reproduces jAER's DVS128 extractor: x mirrored (x = 127 - bits 1..7) and
  polarity inverted (raw 0 = ON -> p = 1). ``layout="raw"`` gives the stored bits unchanged.
  Addresses with bit 15 (sync) or bit 31 (special) set are skipped and counted.
  tonic's ``read_dvs_128`` differs from both: it swaps x and y and keeps the raw polarity.
* DAVIS (``Davis346*``, ``Davis240*``...): DVS words have bit 31 = 0; bit 10 marks external
  input (skipped, counted); p = bit 11, x = bits 12..21 (mirrored in ``jaer``), y = bits 22..30.
  APS/IMU words (bit 31 = 1) are skipped and counted.

y is jAER's row number (row 0 at the bottom of jAER's display) in both layouts.

Sensor size comes from the chip class (DVS128 128x128, Davis346 346x260, ...) or the
``sensor_size=`` option; never from the data. Timestamps: unsigned 32-bit µs. A backward step
of more than 2**31 µs is a counter wrap and adds 2**32 (``info.extra["wraps"]``); a smaller step
is a reset/corruption: RecordingError naming the record's byte offset (``strict_time=False``
keeps such events as they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, register_format
from . import aedat_kernels as K
from .aedat_header import chip_size, read_header, sniff_version

_LAYOUTS = {("dvs128", "jaer"): K.LAYOUT_DVS128_JAER, ("dvs128", "raw"): K.LAYOUT_DVS128_RAW,
            ("davis", "jaer"): K.LAYOUT_DAVIS_JAER, ("davis", "raw"): K.LAYOUT_DAVIS_RAW}


class Aedat2Reader(Reader):
    """Stream a jAER AEDAT 2.0 file in chunks of ``chunk_events`` records (8 bytes each).

    Options: ``sensor_size=(W, H[, C])`` (overrides the chip), ``family="dvs128"|"davis"``,
    ``layout="jaer"|"raw"``, ``strict_time=True``.
    """

    format_name = "aedat2"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, family: str | None = None,
                 layout: str = "jaer", strict_time: bool = True):
        if layout not in ("jaer", "raw"):
            raise ValueError(f"layout must be 'jaer' or 'raw', got {layout!r}")
        if family not in (None, "dvs128", "davis"):
            raise ValueError(f"family must be 'dvs128' or 'davis', got {family!r}")
        self._opt_size, self._opt_family, self._layout_name = sensor_size, family, layout
        self.strict_time = bool(strict_time)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        hdr = read_header(self.path, "2.0")
        chip = hdr.fields.get("AEChip", "")
        known = chip_size(chip) if chip else (128, 128, "dvs128")
        extra = {"version": "2.0", "chip": chip or None, "chip_assumed": not chip,
                 "header_lines": len(hdr.lines), "data_start": hdr.data_start}
        ct = hdr.fields.get("Creation time", "")
        if "currentTimeMillis()" in ct:
            try:
                extra["start_time_ms"] = int(ct.split()[-1])
            except ValueError:
                pass
        if self._opt_size is not None:
            size = SensorSize(*[int(v) for v in self._opt_size])
        elif known is not None:
            size = SensorSize(known[0], known[1], 2)
        else:
            raise RecordingError(self.path, f"unknown AEChip {chip!r}: pass sensor_size=(W, H) "
                                            "and family='dvs128'|'davis'", 0)
        family = self._opt_family or (known[2] if known else "dvs128")
        if family not in ("dvs128", "davis"):  # e.g. a DVXplorer class: no AEDAT 2.0 layout known
            raise RecordingError(self.path, f"no AEDAT 2.0 address layout for chip {chip!r}: pass family=", 0)
        self._layout = _LAYOUTS[(family, self._layout_name)]
        self._data_start = hdr.data_start
        size_bytes = self.path.stat().st_size
        rest = (size_bytes - hdr.data_start) % 8
        if rest:
            raise RecordingError(self.path, f"truncated: {size_bytes - hdr.data_start} data bytes is not a "
                                            "whole number of 8-byte records", size_bytes - rest)
        self._n_records = (size_bytes - hdr.data_start) // 8
        extra.update(family=family, layout=self._layout_name, records=self._n_records)
        return RecordingInfo(str(self.path), "aedat2", size, extra)

    def _chunks(self) -> Iterator[np.ndarray]:
        ss = self.info.sensor_size
        state = np.zeros(K.A2_STATE_LEN, np.int64)
        state[K.A2_PREV_TS] = -1
        done = 0
        with open(self.path, "rb") as f:
            f.seek(self._data_start)
            while done < self._n_records:
                n = min(self.chunk_events, self._n_records - done)
                buf = np.frombuffer(f.read(8 * n), np.uint8)
                if buf.shape[0] != 8 * n:
                    raise RecordingError(self.path, "file shrank while reading", self._data_start + 8 * done)
                ev = np.empty(n, EVENT_DTYPE)
                k = K.aedat2_decode(buf, self._layout, ss.width, ss.height, self.strict_time, state,
                                    ev["t"], ev["x"], ev["y"], ev["p"])
                if state[K.A2_ERR]:
                    self._raise(state, done)
                done += n
                self._publish(state)
                yield ev[:k]
        self._publish(state)

    def _publish(self, state: np.ndarray) -> None:
        self.info.extra.update(wraps=int(state[K.A2_WRAPS]), skipped_special=int(state[K.A2_SPECIAL]),
                               skipped_aps_imu=int(state[K.A2_APS]))

    def _raise(self, state: np.ndarray, done: int) -> None:
        i = int(state[K.A2_ERR_INDEX])
        off = self._data_start + 8 * (done + i)
        if state[K.A2_ERR] == K.ERR_BACKWARDS:
            raise RecordingError(self.path, f"timestamp goes backwards (record {done + i}; previous "
                                            f"{int(state[K.A2_PREV_TS])} µs), expected non-decreasing "
                                            "time or a 32-bit wrap; strict_time=False keeps it", off)
        ss = self.info.sensor_size
        raise RecordingError(self.path, f"event {done + i} outside the {ss.width}x{ss.height} sensor "
                                        "(address does not fit the chip layout)", off)


def _sniff(head: bytes, path: Path) -> bool:
    return sniff_version(head) == "2.0"


FORMAT = register_format(Format(
    name="aedat2", description="jAER AEDAT 2.0 (DVS128 / DAVIS, big-endian address + timestamp)",
    extensions=(".aedat",), sniff=_sniff, reader=Aedat2Reader, priority=50))
