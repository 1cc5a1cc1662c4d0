"""Event Camera Dataset ``events.txt``: one ``t x y p`` line per event, t in seconds.

Timestamps are parsed as decimal strings by a numba kernel (never through floats), so the
1 us resolution is exact; digits beyond it must be zeros (``0.003811000`` is fine,
``0.0038115`` is an error rather than a silent rounding). ``t_unit="ms"``/``"us"`` and
``columns="xytp"`` (any order of t, x, y, p) cover other text dumps. Lines starting with
``#`` and blank lines are skipped; ``p = -1`` reads as 0.

Sensor size, first match wins: the ``sensor_size=`` option; a first line ``W H`` (rpg_e2vid
convention) or ``# sensor_size W H [C]`` (what our writer emits); a ``calib.txt`` beside the
file, which marks an Event Camera Dataset sequence (all recorded with a DAVIS240C: 240x180).
Otherwise a RecordingError asks for the option: the size is never guessed from max(x).

Detection has no magic to rely on: the first data line must parse as four numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import text_kernels as K
from .checks import check_chunk, check_writable, parse_sensor_size

BLOCK_BYTES = 1 << 22
ECD_SENSOR = SensorSize(240, 180, 2)  # DAVIS240C, every Event Camera Dataset sequence
T_UNITS = {"s": 6, "ms": 3, "us": 0}
_ERRORS = {
    K.TOO_FEW_FIELDS: "expected 4 fields (t x y p)",
    K.BAD_NUMBER: "not a number",
    K.SUB_RESOLUTION: "timestamp finer than 1 us (non-zero digit beyond the microsecond)",
    K.TOO_MANY_FIELDS: "more than 4 fields",
    K.OUT_OF_RANGE: "number out of range",
    K.BAD_POLARITY: "polarity must be 0, 1 or -1",
}
_HEADER_WH = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")
_HEADER_COMMENT = re.compile(rb"^\s*#\s*sensor_size\s*[:=]?\s*(\d+)[\sx,]+(\d+)(?:[\sx,]+(\d+))?\s*$")


def _order(columns: str, path) -> np.ndarray:
    cols = columns.lower()
    if sorted(cols) != sorted("txyp"):
        raise RecordingError(path, f"columns must be a permutation of 'txyp', got {columns!r}")
    return np.array(["txyp".index(c) for c in cols], np.int64)


def _header_size(first_line: bytes) -> SensorSize | None:
    m = _HEADER_COMMENT.match(first_line)
    if m:
        return SensorSize(int(m[1]), int(m[2]), int(m[3] or 2))
    m = _HEADER_WH.match(first_line)
    if m:
        return SensorSize(int(m[1]), int(m[2]), 2)
    return None


class TextReader(Reader):
    """Stream ``events.txt`` in 4 MiB blocks cut at line ends."""

    format_name = "text"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, t_unit: str = "s",
                 columns: str = "txyp", check_order: bool = True):
        self._opt_sensor = None if sensor_size is None else parse_sensor_size(sensor_size, path)
        if t_unit not in T_UNITS:
            raise RecordingError(path, f"t_unit must be one of {sorted(T_UNITS)}, got {t_unit!r}")
        self._frac = T_UNITS[t_unit]
        self._order = _order(columns, path)
        self._check_order = bool(check_order)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        with open(self.path, "rb") as f:
            first = f.readline(4096)
        header = _header_size(first)
        self._skip = len(first) if header is not None else 0
        if self._opt_sensor is not None:
            sensor, source = self._opt_sensor, "option"
        elif header is not None:
            sensor, source = header, "header"
        elif (self.path.parent / "calib.txt").is_file():
            sensor, source = ECD_SENSOR, "calib.txt (Event Camera Dataset, DAVIS240C)"
        else:
            raise RecordingError(self.path, "sensor size unknown: pass sensor_size=(W, H), or start the file "
                                            "with a '# sensor_size W H' line", 0)
        return RecordingInfo(str(self.path), "text", sensor, {"sensor_size_source": source})

    def _parse(self, buf: bytes, base: int, line0: int):
        arr = np.frombuffer(buf, np.uint8)
        cap = buf.count(b"\n") + 1
        t = np.empty(cap, np.int64)
        x = np.empty(cap, np.int16)
        y = np.empty(cap, np.int16)
        p = np.empty(cap, np.int16)
        n, pos, code = K.parse_lines(arr, self._order, self._frac, t, x, y, p)
        if code != K.OK:
            line = line0 + buf.count(b"\n", 0, pos) + 1
            raise RecordingError(self.path, f"line {line}: {_ERRORS[code]}", base + pos)
        ev = np.empty(n, EVENT_DTYPE)
        ev["t"], ev["x"], ev["y"], ev["p"] = t[:n], x[:n], y[:n], p[:n]
        # byte offset of event i = start of its line: the i-th data line
        return ev, arr

    def _chunks(self) -> Iterator[np.ndarray]:
        last_t = None
        line0 = 1 if self._skip else 0
        with open(self.path, "rb") as f:
            f.seek(self._skip)
            base = self._skip
            carry = b""
            while True:
                block = f.read(BLOCK_BYTES)
                data = carry + block
                if not block:
                    cut = len(data)
                else:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:
                        if len(data) > 16 * BLOCK_BYTES:
                            raise RecordingError(self.path, "line longer than 64 MiB", base)
                        carry = data
                        continue
                buf, carry = data[:cut], data[cut:]
                if buf:
                    ev, arr = self._parse(buf, base, line0)
                    starts = None

                    def offset_of(i, arr=arr, b0=base):
                        nonlocal starts
                        if starts is None:  # only computed on error
                            starts = _data_line_starts(arr)
                        return b0 + int(starts[i])

                    last_t = check_chunk(self.path, ev, self.info.sensor_size, last_t, offset_of,
                                         self._check_order)
                    line0 += buf.count(b"\n")
                    base += len(buf)
                    for i in range(0, len(ev), self.chunk_events):
                        yield ev[i:i + self.chunk_events]
                if not block:
                    break


def _data_line_starts(arr: np.ndarray) -> np.ndarray:
    """Start offsets of non-blank, non-comment lines (used only to locate an error)."""
    starts = np.concatenate([[0], np.flatnonzero(arr == 10) + 1])
    starts = starts[starts < len(arr)]
    keep = [s for s in starts if arr[s] not in (10, 13, 35) and bytes(arr[s:s + 64]).strip()[:1] not in (b"", b"#")]
    return np.asarray(keep, np.int64)


class TextWriter(Writer):
    """Write ``# sensor_size W H C`` then ``t x y p`` lines, t as exact decimal seconds."""

    format_name = "text"

    def __init__(self, path, sensor_size, extra=None):
        super().__init__(path, sensor_size, extra)
        self._f = open(self.path, "wb")
        w, h, c = self.sensor_size
        self._f.write(f"# sensor_size {w} {h} {c}\n".encode())
        self.events_written = 0

    def _write(self, events: np.ndarray) -> None:
        check_writable(self.path, events, self.sensor_size)
        if ((events["p"] != 0) & (events["p"] != 1)).any():
            raise RecordingError(self.path, "text format stores polarity 0/1 only")
        for i in range(0, len(events), 1 << 18):
            ev = events[i:i + (1 << 18)]
            out = np.empty(64 * len(ev), np.uint8)
            n = K.format_lines(np.ascontiguousarray(ev["t"]), np.ascontiguousarray(ev["x"]),
                               np.ascontiguousarray(ev["y"]), np.ascontiguousarray(ev["p"]), out)
            self._f.write(out[:n].tobytes())
        self.events_written += len(events)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _sniff(head: bytes, path: Path) -> bool:
    lines = head.split(b"\n")
    if len(lines) < 2 and len(head) >= 4096:
        return False
    body = lines[:-1] if len(lines) > 1 else lines
    if body and _header_size(body[0]) is not None:
        if _HEADER_COMMENT.match(body[0]) and not any(ln.strip() for ln in lines[1:]):
            return True  # our writer's header and no events: an empty recording
        body = body[1:]
    data = [ln for ln in body if ln.strip() and not ln.lstrip().startswith(b"#")]
    if not data:
        return False
    toks = data[0].replace(b",", b" ").split()
    return len(toks) == 4 and all(re.fullmatch(rb"[-+]?\d+(\.\d*)?", tok) for tok in toks)


FORMAT = register_format(Format(
    name="text", description="Event Camera Dataset events.txt (t[s] x y p per line)",
    extensions=(".txt", ".csv"), sniff=_sniff, reader=TextReader, writer=TextWriter, priority=-20))
