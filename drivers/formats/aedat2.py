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

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, register_format
from . import aedat_kernels as K
from .aedat_header import chip_size, parse_header, read_header, sniff_version

WHOLE_FILE_BYTES = 1 << 20
"""Files up to this size are read with one read in ``_open`` (header and records): for the
typical small AEDAT 2.0 sample (MNIST-DVS: 126 KB) the fixed costs of a second open, header
read-ahead and seeks are most of the decode time."""

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
        try:  # os-level calls: the io.open machinery is a visible share of a small file's decode
            fd = os.open(self._path_str, os.O_RDONLY)
            try:
                size_bytes = os.fstat(fd).st_size
                self._data = os.read(fd, size_bytes + 1) if size_bytes <= WHOLE_FILE_BYTES else None
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise   # Reader words it as every format does: "no such file"
        except OSError as e:
            raise RecordingError(self._path_str, f"cannot read: {e.strerror or e}") from None
        if self._data is not None:
            if len(self._data) != size_bytes:
                raise RecordingError(self._path_str, "file changed size while reading", min(len(self._data), size_bytes))
            hdr = parse_header(self._data, self._path_str, "2.0")
        else:
            hdr = read_header(self._path_str, "2.0")
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
            raise RecordingError(self._path_str, f"unknown AEChip {chip!r}: pass sensor_size=(W, H) "
                                            "and family='dvs128'|'davis'", 0)
        family = self._opt_family or (known[2] if known else "dvs128")
        if family not in ("dvs128", "davis"):  # e.g. a DVXplorer class: no AEDAT 2.0 layout known
            raise RecordingError(self._path_str, f"no AEDAT 2.0 address layout for chip {chip!r}: pass family=", 0)
        self._layout = _LAYOUTS[(family, self._layout_name)]
        self._data_start = hdr.data_start
        rest = (size_bytes - hdr.data_start) % 8
        if rest:
            raise RecordingError(self._path_str, f"truncated: {size_bytes - hdr.data_start} data bytes is not a "
                                            "whole number of 8-byte records", size_bytes - rest)
        self._n_records = (size_bytes - hdr.data_start) // 8
        extra.update(family=family, layout=self._layout_name, records=self._n_records,
                     wraps=0, skipped_special=0, skipped_aps_imu=0)
        return RecordingInfo(self._path_str, "aedat2", size, extra)

    def _decode(self, buf, start: int, stop: int, done: int, clock: list, ev: np.ndarray) -> int:
        """Decode records ``buf[start:stop]`` (record ``done`` onwards) into ``ev``; ``clock`` =
        [prev, epoch] carried across calls; counts go to ``info.extra``. Returns the event count."""
        ss = self.info.sensor_size
        k, err, err_i, clock[0], clock[1], wraps, special, aps = K.aedat2_decode(
            buf, start, stop, self._layout, ss.width, ss.height, self.strict_time, clock[0], clock[1],
            ev.view(np.uint8), 0)
        x = self.info.extra
        x["wraps"] += wraps
        x["skipped_special"] += special
        x["skipped_aps_imu"] += aps
        if err:
            self._raise(err, done + err_i, clock[0])
        return k

    def _chunks(self) -> Iterator[np.ndarray]:
        """Chunks of up to ``chunk_events`` records, decoded from the bytes read in ``_open``
        (small files) or read block by block into one reused buffer."""
        self.info.extra.update(wraps=0, skipped_special=0, skipped_aps_imu=0)
        clock = [-1, 0]
        done = 0
        if self._data is not None:
            f, buf = contextlib.nullcontext(), np.frombuffer(self._data, np.uint8)
        else:
            f = open(self._path_str, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
            buf = np.empty(8 * min(self.chunk_events, self._n_records), np.uint8)
            f.seek(self._data_start)
        with f:
            while done < self._n_records:
                n = min(self.chunk_events, self._n_records - done)
                if self._data is None:
                    got = f.readinto(memoryview(buf)[:8 * n]) or 0
                    if got != 8 * n:
                        raise RecordingError(self._path_str, "file shrank while reading", self._data_start + 8 * done + got)
                    start = 0
                else:
                    start = self._data_start + 8 * done
                ev = np.empty(n, EVENT_DTYPE)
                k = self._decode(buf, start, start + 8 * n, done, clock, ev)
                done += n
                yield ev if k == n else ev[:k]

    def read_all(self) -> np.ndarray:
        """Small files (bytes read in ``_open``): every record in one kernel call, straight into
        the returned array; larger files: the chunks joined (base class)."""
        if self._data is None:
            return super().read_all()
        self.info.extra.update(wraps=0, skipped_special=0, skipped_aps_imu=0)
        ev = np.empty(self._n_records, EVENT_DTYPE)
        k = self._decode(np.frombuffer(self._data, np.uint8), self._data_start, len(self._data), 0, [-1, 0], ev)
        return ev if k == len(ev) else ev[:k]

    def _raise(self, err: int, record: int, prev: int) -> None:
        off = self._data_start + 8 * record
        if err == K.ERR_BACKWARDS:
            raise RecordingError(self._path_str, f"timestamp goes backwards (record {record}; previous "
                                            f"{prev} µs), expected non-decreasing "
                                            "time or a 32-bit wrap; strict_time=False keeps it", off)
        ss = self.info.sensor_size
        raise RecordingError(self._path_str, f"event {record} outside the {ss.width}x{ss.height} sensor "
                                        "(address does not fit the chip layout)", off)


def _sniff(head: bytes, path: Path) -> bool:
    return sniff_version(head) == "2.0"


FORMAT = register_format(Format(
    name="aedat2", description="jAER AEDAT 2.0 (DVS128 / DAVIS, big-endian address + timestamp)",
    extensions=(".aedat",), sniff=_sniff, reader=Aedat2Reader, priority=50))
