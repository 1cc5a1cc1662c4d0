"""tonic's preprocessed ``.npy`` samples (and any ``.npy`` of events), read by memory map.

Two layouts exist in tonic's dataset caches:

* structured arrays with fields ``x``, ``y``, ``t``, ``p`` in any order and of any numeric
  dtypes (DVS-Lip, expelliarmus dumps, our own writer); ``t`` in us unless ``t_unit=``;
* plain 2-D ``(N, 4)`` arrays whose columns the dataset defines: DVSGesture stores
  ``x, y, p, t`` with ``t`` in **ms** (tonic multiplies by 1000 on load), POKER-DVS stores
  ``t, x, y, p``. These need ``dataset=`` (or ``columns=``/``t_unit=``); files under tonic's
  own folder names (``ibmGestureTrain``/``ibmGestureTest``, ``pips_train``/``pips_test``) get
  the matching preset.

Sensor size, first match wins: ``sensor_size=``; a JSON sidecar (``clip.npy.json`` or
``clip.json``, keys ``sensor_size``, optionally ``columns``, ``t_unit``); the dataset preset.
Float timestamps are rounded to the nearest us; float coordinates must be integral. Object
arrays are refused (no pickle). Files are read chunk by chunk (column-major ones
memory-mapped). Detection: the ``\\x93NUMPY`` magic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import numpy.lib.format as npformat

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import npy_kernels as K
from .checks import check_chunk, check_writable, parse_sensor_size, read_sidecar

MAGIC = b"\x93NUMPY"
T_SCALE = {"s": 1_000_000, "ms": 1_000, "us": 1}
PRESETS = {  # dataset -> (columns of a 2-D array, t unit, sensor size); from tonic.datasets
    "dvsgesture": ("xypt", "ms", SensorSize(128, 128, 2)),
    "pokerdvs": ("txyp", "us", SensorSize(35, 35, 2)),
    "dvslip": ("xypt", "us", SensorSize(128, 128, 2)),
}
_FOLDER_PRESETS = {"ibmGestureTrain": "dvsgesture", "ibmGestureTest": "dvsgesture",
                   "pips_train": "pokerdvs", "pips_test": "pokerdvs"}
HEADER_BYTES = 128  # our writer's fixed header size (room for any shape)


def _read_header(path: Path):
    with open(path, "rb") as f:
        if f.read(6) != MAGIC:
            raise RecordingError(path, f"not a .npy file: expected magic {MAGIC!r}", 0)
        f.seek(0)
        try:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except Exception as e:  # numpy's header parser raises many types (ValueError, TokenError...)
            raise RecordingError(path, f"corrupt .npy header: {type(e).__name__}: {e}", 6) from None
        return shape, fortran, dtype, f.tell()


class NpyReader(Reader):
    """Memory-map the array and convert it chunk by chunk to EVENT_DTYPE."""

    format_name = "tonic_npy"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, dataset: str | None = None,
                 columns: str | None = None, t_unit: str | None = None, check_order: bool = True):
        self._opt = {"sensor_size": sensor_size, "dataset": dataset, "columns": columns, "t_unit": t_unit}
        self._check_order = bool(check_order)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        shape, fortran, dtype, offset = _read_header(self.path)
        size = self.path.stat().st_size
        if dtype.hasobject:
            raise RecordingError(self.path, "object arrays are refused (they need pickle)", 6)
        side = read_sidecar(self.path)
        dataset = self._opt["dataset"] or side.get("dataset") or _FOLDER_PRESETS.get(self.path.parent.parent.name) \
            or _FOLDER_PRESETS.get(self.path.parent.name)
        if dataset is not None and dataset not in PRESETS:
            raise RecordingError(self.path, f"unknown dataset {dataset!r}; known: {sorted(PRESETS)}")
        preset = PRESETS.get(dataset, (None, None, None))
        structured = dtype.names is not None
        if structured:
            missing = [k for k in "txyp" if k not in dtype.names]
            if missing or len(shape) != 1:
                raise RecordingError(self.path, f"structured array needs 1-D fields t, x, y, p; has "
                                                f"{list(dtype.names)} with shape {shape}", offset)
            columns = None
            n = shape[0]
        else:
            if len(shape) != 2 or shape[1] != 4 or dtype.kind not in "iufb":
                raise RecordingError(self.path, f"expected a structured event array or a numeric (N, 4) array, "
                                                f"got shape {shape} dtype {dtype}", offset)
            columns = self._opt["columns"] or side.get("columns") or preset[0]
            if columns is None:
                raise RecordingError(self.path, "plain (N, 4) array: pass dataset= (" + ", ".join(PRESETS)
                                     + ") or columns= (e.g. 'xypt') to say what the columns are", offset)
            if sorted(columns) != sorted("txyp"):
                raise RecordingError(self.path, f"columns must be a permutation of 'txyp', got {columns!r}")
            n = shape[0]
        t_unit = self._opt["t_unit"] or side.get("t_unit") or (preset[1] if not structured else None) or "us"
        if t_unit not in T_SCALE:
            raise RecordingError(self.path, f"t_unit must be one of {sorted(T_SCALE)}, got {t_unit!r}")
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size != need:
            raise RecordingError(self.path, f"data size mismatch: header describes {need - offset} bytes, "
                                            f"file holds {size - offset}", min(size, need))
        if self._opt["sensor_size"] is not None:
            sensor, source = parse_sensor_size(self._opt["sensor_size"], self.path), "option"
        elif "sensor_size" in side:
            sensor, source = parse_sensor_size(side["sensor_size"], self.path, "sidecar sensor_size"), "sidecar"
        elif preset[2] is not None:
            sensor, source = preset[2], f"dataset preset {dataset}"
        else:
            raise RecordingError(self.path, "sensor size unknown: pass sensor_size=(W, H) or write a sidecar "
                                            f"{self.path.name}.json with {{\"sensor_size\": [W, H, 2]}}")
        self._layout = (shape, fortran, dtype, offset, n, columns, T_SCALE[t_unit])
        return RecordingInfo(str(self.path), "tonic_npy", sensor,
                             {"dataset": dataset, "columns": columns or "".join(dtype.names),
                              "t_unit": t_unit, "sensor_size_source": source, "dtype": str(dtype)})

    def read_all(self) -> np.ndarray:
        """The whole file goes to memory anyway: decode it as one chunk (no concatenation copy)."""
        self.chunk_events = max(1, self._layout[4])
        return super().read_all()

    def _chunks(self) -> Iterator[np.ndarray]:
        shape, fortran, dtype, offset, n, columns, scale = self._layout
        if n == 0:
            return
        last_t = None
        if fortran and columns is not None:  # column-major (N, 4): columns are contiguous runs
            yield from self._chunks_fortran()
            return
        row_bytes = dtype.itemsize * (1 if columns is None else 4)
        rows_dtype = dtype if columns is None else np.dtype((dtype, (4,)))
        with open(self.path, "rb") as f:
            f.seek(offset)
            for i0 in range(0, n, self.chunk_events):
                part = np.fromfile(f, rows_dtype, min(self.chunk_events, n - i0))
                base = offset + i0 * row_bytes
                if dtype == EVENT_DTYPE and scale == 1:
                    ev = part  # our own layout: read straight into place
                else:
                    cols = {k: (part[k] if columns is None else part[:, columns.index(k)]) for k in "txyp"}
                    ev = self._convert(cols, scale, lambda i, b=base: b + i * row_bytes)
                last_t = check_chunk(self.path, ev, self.info.sensor_size, last_t,
                                     lambda i, b=base: b + i * row_bytes, self._check_order)
                yield ev

    def _chunks_fortran(self) -> Iterator[np.ndarray]:
        shape, _, dtype, offset, n, columns, scale = self._layout
        mm = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")
        last_t = None
        try:
            for i0 in range(0, n, self.chunk_events):
                part = mm[i0:i0 + self.chunk_events]
                cols = {k: np.asarray(part[:, columns.index(k)]) for k in "txyp"}
                t_col = columns.index("t")  # report the offset of the event's timestamp
                at = lambda i, b=i0: offset + (t_col * n + b + i) * dtype.itemsize  # noqa: E731
                ev = self._convert(cols, scale, at)
                last_t = check_chunk(self.path, ev, self.info.sensor_size, last_t, at, self._check_order)
                yield ev
        finally:
            del mm

    def _convert(self, cols, scale, offset_of) -> np.ndarray:
        ev = np.empty(len(cols["t"]), EVENT_DTYPE)
        if scale == 1 and all(v.dtype.kind in "iub" and np.can_cast(v.dtype, EVENT_DTYPE[k])
                              for k, v in cols.items()):
            K.copy_columns(cols["t"], cols["x"], cols["y"], cols["p"], ev["t"], ev["x"], ev["y"], ev["p"])
            return ev  # every value fits: nothing to check
        for k in "txyp":
            v = cols[k]
            if v.dtype.kind in "iub" and (k != "t" or scale == 1) and np.can_cast(v.dtype, EVENT_DTYPE[k]):
                ev[k] = v  # fast path: every value fits, no check needed
                continue
            limit = 2.0 ** 62 / scale if k == "t" else 32767
            if v.dtype.kind == "f":
                if k == "t":
                    v = v * scale
                bad = ~np.isfinite(v) | (np.abs(v) > (2.0 ** 62 if k == "t" else 32767))
                if k != "t":
                    bad |= v != np.floor(v)
                what = "a non-integral, non-finite or out-of-range"
            else:
                bad = (v > limit) | ((v < -limit - 1) if v.dtype.kind == "i" else False)
                what = "an out-of-range"
            if np.any(bad):
                i = int(np.flatnonzero(bad)[0])
                raise RecordingError(self.path, f"field {k} holds {what} value {v[i]!r}", offset_of(i))
            if v.dtype.kind == "f":
                ev[k] = np.rint(v)
            else:
                ev[k] = v.astype(np.int64) * scale if k == "t" else v
        return ev


class NpyWriter(Writer):
    """Stream a structured EVENT_DTYPE ``.npy`` (fixed 128-byte header rewritten on close)
    plus a ``<name>.json`` sidecar holding the sensor size."""

    format_name = "tonic_npy"

    def __init__(self, path, sensor_size, extra=None):
        super().__init__(path, sensor_size, extra)
        self._f = open(self.path, "wb")
        self._f.write(self._header(0))
        self.events_written = 0

    def _header(self, n: int) -> bytes:
        d = {"descr": npformat.dtype_to_descr(EVENT_DTYPE), "fortran_order": False, "shape": (n,)}
        body = repr(d).encode("latin1")
        pad = HEADER_BYTES - 10 - len(body) - 1
        return MAGIC + b"\x01\x00" + (HEADER_BYTES - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"

    def _write(self, events: np.ndarray) -> None:
        check_writable(self.path, events, self.sensor_size)
        self._f.write(np.ascontiguousarray(events).tobytes())
        self.events_written += len(events)

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.seek(0)
        self._f.write(self._header(self.events_written))
        self._f.close()
        side = {"sensor_size": list(self.sensor_size), **({"extra": self.extra} if self.extra else {})}
        self.path.with_name(self.path.name + ".json").write_text(json.dumps(side))


def _sniff(head: bytes, path: Path) -> bool:
    return head.startswith(MAGIC)


FORMAT = register_format(Format(
    name="tonic_npy", description="tonic preprocessed .npy (structured x/y/t/p or dataset (N,4) layouts)",
    extensions=(".npy",), sniff=_sniff, reader=NpyReader, writer=NpyWriter, priority=50))
