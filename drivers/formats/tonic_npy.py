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
memory-mapped). Integer layouts in us (structured, or C-order (N, 4)) go through one numba pass
that converts and validates straight into the final array (``npy_kernels``), from a reused read
buffer, or, for ``read_all`` of a file of MAP_BYTES or more, from the map ``_open`` made while
it had the file open for the header; floats, other units and column-major files field by field.
Detection: the ``\\x93NUMPY`` magic.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import numpy.lib.format as npformat

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import npy_kernels as K
from .checks import check_chunk, check_writable, parse_sensor_size, read_sidecar
from .mapping import map_whole, unmap

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


# The header every numpy writer emits, ``{'descr': ..., 'fortran_order': ..., 'shape': (...), }``,
# with a plain type string or a list of (name, type) pairs: parsed here in ~5 us instead of
# numpy's ~50 us (ast.literal_eval). Anything else goes through numpy's own parser.
_HEADER_RE = re.compile(r"\{'descr': (?P<descr>'[^'\\]*'|\[(?:\('[^'\\]*', '[^'\\]*'\)(?:, )?)*\]), "
                        r"'fortran_order': (?P<fortran>True|False), 'shape': \((?P<shape>|\d+,|\d+(?:, \d+)+)\),? ?\}\s*$")
_PAIR_RE = re.compile(r"\('([^'\\]*)', '([^'\\]*)'\)")


def _fast_header(head: bytes):
    """(shape, fortran, dtype, data offset) from the first bytes of a version 1/2 file, or
    None when numpy's parser must decide (other versions, unusual headers, short reads)."""
    if len(head) < 12 or head[6] not in (1, 2) or head[7] != 0:
        return None
    if head[6] == 1:
        hlen, start = int.from_bytes(head[8:10], "little"), 10
    else:
        hlen, start = int.from_bytes(head[8:12], "little"), 12
    if hlen > 10_000 or len(head) < start + hlen:
        return None
    m = _HEADER_RE.match(head[start:start + hlen].decode("latin1"))
    if m is None:
        return None
    dtype = _descr_dtype(m["descr"])
    if dtype is None:
        return None
    shape = tuple(int(v) for v in m["shape"].split(",") if v.strip())
    return shape, m["fortran"] == "True", dtype, start + hlen


@functools.lru_cache(maxsize=64)
def _descr_dtype(d: str) -> np.dtype | None:
    """The dtype of a header's ``descr`` text (None if numpy refuses it): numpy's
    ``descr_to_dtype`` costs ~30 us for a structured descr; the files of a dataset share one."""
    try:
        return npformat.descr_to_dtype(d[1:-1] if d[0] == "'" else _PAIR_RE.findall(d))
    except (TypeError, ValueError):
        return None


def _read_header(path: Path, head: bytes | None = None):
    if head is not None and head.startswith(MAGIC):
        fast = _fast_header(head)
        if fast is not None:
            return fast
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


@functools.lru_cache(maxsize=64)
def _dtype_str(dtype: np.dtype) -> str:
    """str(dtype) costs ~15 us for a structured dtype; the files of a dataset share one."""
    return str(dtype)


@functools.lru_cache(maxsize=256)
def _fused_mode(dtype: np.dtype, columns: str | None, fortran: bool, scale: int, small: bool) -> str | None:
    """Which one-pass decoder fits the file, if any: ``same`` (our own layout: read in place,
    validate), ``records`` (structured integer fields) or ``rows`` (C-order (N, 4) integers).

    Conditions: t in us; native-order integer or bool fields that cast to int64 (so no
    uint64); x and y cast to int16 or the sensor is ``small`` (at most 32768 wide and high:
    inside the sensor they then fit). Float fields, other units and column-major files take
    the per-field path. Cached: the files of a dataset share one layout."""
    if scale != 1:
        return None
    if columns is None:
        if dtype == EVENT_DTYPE:
            return "same"
        fields = [dtype.fields[k][0] for k in "txyp"]
        if not all(_numba_scalar(f[0]) for f in dtype.fields.values()):
            return None  # numba compiles records of these fields only (no float16, long double, ...)
    elif fortran:
        return None
    else:
        fields = [dtype] * 4
    for k, f in zip("txyp", fields):
        if f.kind not in "iub" or f.shape != () or not f.isnative or not np.can_cast(f, np.int64):
            return None
        if k in "xy" and not (small or np.can_cast(f, np.int16)):
            return None
    return "records" if columns is None else "rows"


def _numba_scalar(f: np.dtype) -> bool:
    return f.shape == () and f.isnative and (f.kind in "iub" or (f.kind == "f" and f.itemsize in (4, 8)))


READ_BLOCK = 1 << 16  # records per read in read_all: the raw buffer stays in the core's L2 cache
MAP_BYTES = 1 << 18  # files from this size are mapped by _open and converted from the map by read_all;
# smaller ones are read: below ~256 KB reading is up to 15 % faster warm, mapping 8 % faster cold
_INT64_MIN = int(np.iinfo(np.int64).min)


def _readinto(path: Path, f, dst: np.ndarray, at: int) -> None:
    """Fill ``dst`` (bytes) from ``f``; a short file is a RecordingError naming the offset."""
    view, got = memoryview(dst), 0
    while got < len(view):
        k = f.readinto(view[got:])
        if not k:
            raise RecordingError(path, f"file ends early: expected {len(view)} bytes of events, got {got}", at + got)
        got += k


class NpyReader(Reader):
    """Memory-map the array and convert it chunk by chunk to EVENT_DTYPE."""

    format_name = "tonic_npy"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, dataset: str | None = None,
                 columns: str | None = None, t_unit: str | None = None, check_order: bool = True):
        self._opt = {"sensor_size": sensor_size, "dataset": dataset, "columns": columns, "t_unit": t_unit}
        self._check_order = bool(check_order)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        path = self._path_str  # (str, not Path: see Reader.path)
        self._map = None
        try:  # os-level calls: the io.open machinery is a visible share of a small file's read
            fd = os.open(path, os.O_RDONLY)
            try:
                size, head = os.fstat(fd).st_size, os.read(fd, 4096)
                shape, fortran, dtype, offset = _read_header(path, head)
                if size >= MAP_BYTES and dtype != EVENT_DTYPE:  # read_all converts from this map
                    self._map = map_whole(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise   # Reader words it as every format does: "no such file"
        except OSError as e:
            raise RecordingError(path, f"cannot open: {e.strerror or e}") from None
        if dtype.hasobject:
            raise RecordingError(path, "object arrays are refused (they need pickle)", 6)
        side = read_sidecar(path)
        dataset = self._opt["dataset"] or side.get("dataset") or None
        if dataset is None and any(k in path for k in _FOLDER_PRESETS):  # (Path only when it may match)
            dataset = _FOLDER_PRESETS.get(self.path.parent.parent.name) or _FOLDER_PRESETS.get(self.path.parent.name)
        if dataset is not None and dataset not in PRESETS:
            raise RecordingError(self._path_str, f"unknown dataset {dataset!r}; known: {sorted(PRESETS)}")
        preset = PRESETS.get(dataset, (None, None, None))
        structured = dtype.names is not None
        if structured:
            missing = [k for k in "txyp" if k not in dtype.names]
            if missing or len(shape) != 1:
                raise RecordingError(self._path_str, f"structured array needs 1-D fields t, x, y, p; has "
                                                f"{list(dtype.names)} with shape {shape}", offset)
            columns = None
            n = shape[0]
        else:
            if len(shape) != 2 or shape[1] != 4 or dtype.kind not in "iufb":
                raise RecordingError(self._path_str, f"expected a structured event array or a numeric (N, 4) array, "
                                                f"got shape {shape} dtype {dtype}", offset)
            columns = self._opt["columns"] or side.get("columns") or preset[0]
            if columns is None:
                raise RecordingError(self._path_str, "plain (N, 4) array: pass dataset= (" + ", ".join(PRESETS)
                                     + ") or columns= (e.g. 'xypt') to say what the columns are", offset)
            if sorted(columns) != sorted("txyp"):
                raise RecordingError(self._path_str, f"columns must be a permutation of 'txyp', got {columns!r}")
            n = shape[0]
        t_unit = self._opt["t_unit"] or side.get("t_unit") or (preset[1] if not structured else None) or "us"
        if t_unit not in T_SCALE:
            raise RecordingError(self._path_str, f"t_unit must be one of {sorted(T_SCALE)}, got {t_unit!r}")
        need = offset + math.prod(shape) * dtype.itemsize
        if size != need:
            raise RecordingError(self._path_str, f"data size mismatch: header describes {need - offset} bytes, "
                                            f"file holds {size - offset}", min(size, need))
        if self._opt["sensor_size"] is not None:
            sensor, source = parse_sensor_size(self._opt["sensor_size"], path), "option"
        elif "sensor_size" in side:
            sensor, source = parse_sensor_size(side["sensor_size"], path, "sidecar sensor_size"), "sidecar"
        elif preset[2] is not None:
            sensor, source = preset[2], f"dataset preset {dataset}"
        else:
            raise RecordingError(self._path_str, "sensor size unknown: pass sensor_size=(W, H) or write a sidecar "
                                            f"{self.path.name}.json with {{\"sensor_size\": [W, H, 2]}}")
        self._layout = (shape, fortran, dtype, offset, n, columns, T_SCALE[t_unit])
        self._mode = _fused_mode(dtype, columns, fortran, T_SCALE[t_unit],
                                 sensor.width <= 32768 and sensor.height <= 32768)
        return RecordingInfo(path, "tonic_npy", sensor,
                             {"dataset": dataset, "columns": columns or "".join(dtype.names),
                              "t_unit": t_unit, "sensor_size_source": source, "dtype": _dtype_str(dtype)})

    def read_all(self) -> np.ndarray:
        """The whole file goes to memory anyway: decode it into one pre-sized array (no
        concatenation copy) with one kernel pass over the records mapped by ``_open``, or
        through a small reused read buffer (files under MAP_BYTES, our own layout, a file that
        could not be mapped or whose data is bad)."""
        n = self._layout[4]
        mm, self._map = self._map, None
        if mm is not None:
            out = self._read_mapped(mm, n) if self._mode in ("records", "rows") and n else None
            unmap(mm)
            if out is not None:
                return out
        if self._mode is None or n == 0:
            self.chunk_events = max(1, n)
            return super().read_all()
        out = np.empty(n, EVENT_DTYPE)
        buf = self._buffer(min(n, READ_BLOCK))
        last_t = None
        with open(self._path_str, "rb", buffering=0) as f:
            f.seek(self._layout[3])
            for i0 in range(0, n, READ_BLOCK):
                last_t = self._decode_fused(f, out[i0:i0 + READ_BLOCK], i0, buf, last_t)
        return out

    def _read_mapped(self, mm, n: int) -> np.ndarray | None:
        """Every event, converted straight from the page cache (the map ``_open`` made): the
        read path's copy of the file into a buffer costs as much as the conversion. None when
        the file lost bytes since ``_open`` mapped it (``mm.size()`` is the file's size now;
        touching the lost pages would raise SIGBUS) or an event is invalid: the read path then
        decodes it and words the error. (A file truncated by another process during the
        conversion still raises SIGBUS, as with ``np.memmap``/``np.load(mmap_mode=...)``.)"""
        _, _, dtype, offset, _, columns, _ = self._layout
        count = n * (4 if columns else 1)
        if mm.size() < offset + count * dtype.itemsize:
            return None
        out = np.empty(n, EVENT_DTYPE)
        ss = self.info.sensor_size
        if columns is None:
            code = K.records_to_events_(np.frombuffer(mm, dtype, count, offset), out, 0, ss.width, ss.height,
                                        _INT64_MIN, self._check_order)[1]
        else:
            c = columns.index
            code = K.rows_to_events_(np.frombuffer(mm, dtype, count, offset).reshape(n, 4), c("t"), c("x"),
                                     c("y"), c("p"), out, 0, ss.width, ss.height, _INT64_MIN,
                                     self._check_order)[1]
        return out if code == K.OK else None

    def close(self) -> None:
        if self._map is not None:
            mm, self._map = self._map, None
            unmap(mm)

    def _buffer(self, m: int) -> np.ndarray | None:
        """The raw read buffer of ``m`` records (none for our own layout: read in place)."""
        dtype = self._layout[2]
        if self._mode == "same":
            return None
        return np.empty(m, dtype) if self._mode == "records" else np.empty((m, 4), dtype)

    def _decode_fused(self, f, ev: np.ndarray, i0: int, buf: np.ndarray | None, last_t: int | None) -> int:
        """Read the next ``len(ev)`` records of ``f`` (record ``i0`` on) and decode them into
        ``ev`` in one validated pass; returns the last timestamp (as ``check_chunk`` does)."""
        _, _, dtype, offset, _, columns, scale = self._layout
        m = len(ev)
        sensor = self.info.sensor_size
        lo = _INT64_MIN if last_t is None else last_t
        row_bytes = dtype.itemsize * (4 if self._mode == "rows" else 1)
        if self._mode == "same":
            _readinto(self._path_str, f, ev.view(np.uint8), offset + i0 * row_bytes)
            i, code = K.first_invalid_event(ev, sensor.width, sensor.height, lo, self._check_order)
        else:
            raw = buf[:m]
            _readinto(self._path_str, f, raw.reshape(-1).view(np.uint8), offset + i0 * row_bytes)
            if self._mode == "records":
                i, code = K.records_to_events_(raw, ev, 0, sensor.width, sensor.height, lo, self._check_order)
            else:
                c = columns.index
                i, code = K.rows_to_events_(raw, c("t"), c("x"), c("y"), c("p"), ev, 0, sensor.width,
                                            sensor.height, lo, self._check_order)
        if code != K.OK:  # decode the block the per-field way: it words the error as ever
            base = offset + i0 * row_bytes
            at = lambda j: base + j * row_bytes
            if self._mode != "same":
                c = columns.index if columns else None
                ev = self._convert({k: (raw[k] if c is None else raw[:, c(k)]) for k in "txyp"}, scale, at)
            check_chunk(self._path_str, ev, sensor, last_t, at, self._check_order)
            raise RecordingError(self._path_str, f"invalid event (code {code})", at(i))  # kernel and check disagree
        return int(ev["t"][m - 1])

    def _chunks(self) -> Iterator[np.ndarray]:
        shape, fortran, dtype, offset, n, columns, scale = self._layout
        if n == 0:
            return
        last_t = None
        if fortran and columns is not None:  # column-major (N, 4): columns are contiguous runs
            yield from self._chunks_fortran()
            return
        if self._mode is not None:
            buf = self._buffer(min(n, self.chunk_events))
            with open(self._path_str, "rb", buffering=0) as f:
                f.seek(offset)
                for i0 in range(0, n, self.chunk_events):
                    ev = np.empty(min(self.chunk_events, n - i0), EVENT_DTYPE)
                    last_t = self._decode_fused(f, ev, i0, buf, last_t)
                    yield ev
            return
        row_bytes = dtype.itemsize * (1 if columns is None else 4)
        rows_dtype = dtype if columns is None else np.dtype((dtype, (4,)))
        with open(self._path_str, "rb") as f:
            f.seek(offset)
            for i0 in range(0, n, self.chunk_events):
                part = np.fromfile(f, rows_dtype, min(self.chunk_events, n - i0))
                base = offset + i0 * row_bytes
                if dtype == EVENT_DTYPE and scale == 1:
                    ev = part  # our own layout: read straight into place
                else:
                    cols = {k: (part[k] if columns is None else part[:, columns.index(k)]) for k in "txyp"}
                    ev = self._convert(cols, scale, lambda i, b=base: b + i * row_bytes)
                last_t = check_chunk(self._path_str, ev, self.info.sensor_size, last_t,
                                     lambda i, b=base: b + i * row_bytes, self._check_order)
                yield ev

    def _chunks_fortran(self) -> Iterator[np.ndarray]:
        shape, _, dtype, offset, n, columns, scale = self._layout
        mm = np.memmap(self._path_str, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")
        last_t = None
        try:
            for i0 in range(0, n, self.chunk_events):
                part = mm[i0:i0 + self.chunk_events]
                cols = {k: np.asarray(part[:, columns.index(k)]) for k in "txyp"}
                t_col = columns.index("t")  # report the offset of the event's timestamp
                at = lambda i, b=i0: offset + (t_col * n + b + i) * dtype.itemsize  # noqa: E731
                ev = self._convert(cols, scale, at)
                last_t = check_chunk(self._path_str, ev, self.info.sensor_size, last_t, at, self._check_order)
                yield ev
        finally:
            del mm

    def _convert(self, cols, scale, offset_of) -> np.ndarray:
        ev = np.empty(len(cols["t"]), EVENT_DTYPE)
        if scale == 1 and all(v.dtype.kind in "iub" and v.dtype.isnative and np.can_cast(v.dtype, EVENT_DTYPE[k])
                              for k, v in cols.items()):  # (numba refuses non-native byte order)
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
                raise RecordingError(self._path_str, f"field {k} holds {what} value {v[i]!r}", offset_of(i))
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
