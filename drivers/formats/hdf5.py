"""HDF5 event files (h5py, the optional ``hdf5`` extra), read slice by slice.

Layouts found, in this order (or name one with ``key=``):

* a group of 1-D datasets ``events/{t,x,y,p}`` (DSEC; also ``ts``/``timestamp``,
  ``polarity``/``pol``), with DSEC's root ``t_offset`` added to ``t``;
* one structured dataset ``events`` with fields t, x, y, p (any order and dtypes);
* tonic's disk cache (``tonic.DiskCachedDataset``): a structured dataset ``data/0``;
* the root group itself holding ``t, x, y, p`` datasets.

Sensor size, first match wins: ``sensor_size=``; attributes ``sensor_size`` or
``width``/``height`` (``sensor_width``/``sensor_height``) on the events node or the root;
DSEC files (``ms_to_idx`` + ``t_offset``) are 640x480. Otherwise a RecordingError asks
for the option. Detection: the ``\\x89HDF`` signature. The writer emits the first layout
(int64 t, int16 x/y/p, lzf-compressed, ``sensor_size`` attribute).

``read_all`` (``read_recording``) reads integer columns chunked alike without h5py's filter
pipeline: the raw chunk bytes come straight from the file, LZF chunks are decompressed by
``hdf5_kernels.lzf_decompress`` and four decoded chunks at a time are converted and validated
in one pass. Streaming iteration takes the same path, one output chunk at a time. A chunk whose
LZF stream decodes to the wrong size is refused (h5py would return the rest of the chunk
uninitialised). Other layouts (structured datasets, floats, other filters) read through h5py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import hdf5_kernels as K
from .checks import check_chunk, check_writable, parse_sensor_size

MAGIC = b"\x89HDF\r\n\x1a\n"
ALIASES = {"t": ("t", "ts", "timestamp", "timestamps"), "x": ("x",), "y": ("y",),
           "p": ("p", "pol", "polarity")}
DSEC_SENSOR = SensorSize(640, 480, 2)
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError)
LZF_FILTER = 32000  # h5py's LZF filter id
_INT64_MIN = int(np.iinfo(np.int64).min)
_MAX_CHUNK_BYTES = 64 << 20  # larger chunks (or corrupt chunk shapes) take h5py's path


def _h5py(path):
    try:
        import h5py
    except ImportError:
        raise RecordingError(path, "HDF5 support needs h5py: pip install 'spikeflow[hdf5]'") from None
    return h5py


def _columns_of(node, h5py) -> dict | None:
    """{field: (dataset, dataset field or None)} for a group of columns or a structured dataset."""
    if isinstance(node, h5py.Group):
        cols = {}
        for k, names in ALIASES.items():
            hit = [n for n in names if n in node and isinstance(node[n], h5py.Dataset)]
            if not hit:
                return None
            cols[k] = (node[hit[0]], None)
        return cols
    if isinstance(node, h5py.Dataset) and node.dtype.names and all(k in node.dtype.names for k in "txyp"):
        return {k: (node, k) for k in "txyp"}
    return None


class Hdf5Reader(Reader):
    """Read ``chunk_events`` rows per step from the columns found by ``_open``."""

    format_name = "hdf5"

    def __init__(self, path, chunk_events: int = 1 << 20, sensor_size=None, key: str | None = None,
                 check_order: bool = True):
        self._opt_sensor = sensor_size
        self._key = key
        self._check_order = bool(check_order)
        self._file = None
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        h5py = _h5py(self.path)
        try:
            self._file = f = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise   # Reader words it as every format does: "no such file"
        except _H5_ERRORS as e:
            raise RecordingError(self.path, f"not a readable HDF5 file: {e}", 0) from None
        try:
            return self._layout(f, h5py)
        except RecordingError:
            self.close()
            raise
        except _H5_ERRORS as e:
            self.close()
            raise RecordingError(self.path, f"corrupt HDF5 structure: {e}") from None

    def _layout(self, f, h5py) -> RecordingInfo:
        keys = [self._key] if self._key else ["events", "data/0", "/"]
        cols = key = None
        for k in keys:
            if k in f:
                cols = _columns_of(f[k], h5py)
                if cols is not None:
                    key = k
                    break
        if cols is None:
            raise RecordingError(self.path, f"no event layout found under {keys}: expected a group with "
                                            f"t/x/y/p datasets or a structured dataset with those fields")
        lens = {k: ds.shape for k, (ds, _) in cols.items()}
        if any(len(s) != 1 for s in lens.values()) or len({s[0] for s in lens.values()}) != 1:
            raise RecordingError(self.path, f"{key}: event columns must be 1-D of equal length, got {lens}")
        self._n = next(iter(lens.values()))[0]
        self._cols, self._where = cols, key
        t_offset = int(f["t_offset"][()]) if "t_offset" in f and f["t_offset"].shape == () else 0
        self._t_offset = t_offset
        node = f[key]
        sensor, source = None, None
        if self._opt_sensor is not None:
            sensor, source = parse_sensor_size(self._opt_sensor, self.path), "option"
        else:
            for obj in (node, f):
                a = obj.attrs
                if "sensor_size" in a:
                    sensor = parse_sensor_size(list(np.ravel(a["sensor_size"])), self.path, "sensor_size attribute")
                elif "width" in a and "height" in a:
                    sensor = parse_sensor_size([a["width"], a["height"]], self.path, "width/height attributes")
                elif "sensor_width" in a and "sensor_height" in a:
                    sensor = parse_sensor_size([a["sensor_width"], a["sensor_height"]], self.path)
                if sensor is not None:
                    source = f"attribute of {obj.name}"
                    break
            if sensor is None and "ms_to_idx" in f and "t_offset" in f:
                sensor, source = DSEC_SENSOR, "DSEC layout (640x480)"
        if sensor is None:
            raise RecordingError(self.path, f"{key}: sensor size unknown: pass sensor_size=(W, H) or add a "
                                            f"'sensor_size' attribute")
        return RecordingInfo(str(self.path), "hdf5", sensor,
                             {"key": key, "t_offset_us": t_offset, "sensor_size_source": source})

    def read_all(self) -> np.ndarray:
        """The whole file goes to memory anyway: decode it into one pre-sized array.

        Columns of integers go through one fused convert-and-validate pass; LZF-compressed
        columns with a common chunk length are decompressed chunk by chunk from the raw file
        bytes (four chunks at a time, so the decoded columns stay in cache)."""
        plan = self._plan() if self._n else None
        if plan is None:
            self.chunk_events = max(1, self._n)
            return super().read_all()
        out = np.empty(self._n, EVENT_DTYPE)
        if plan[0] == "chunks":
            last_t = None
            for j0, cols in self._decoded_chunks(*plan[1:]):
                last_t = self._fused(out, j0, cols, j0, last_t)
        else:
            cols = []
            try:
                for ds, _ in self._cols.values():
                    a = np.empty(self._n, ds.dtype)
                    ds.read_direct(a)
                    cols.append(a)
            except _H5_ERRORS:  # the per-field path words the error
                self._slow_range(out, 0, 0, self._n, None)
                return out
            self._fused(out, 0, cols, 0, None)
        return out

    def _plan(self):
        """How read_all reads the columns: ("chunks", chunk length, per column [(file offset,
        size, stored raw)] per chunk) for LZF or unfiltered columns chunked alike, ("direct",)
        for other unfiltered columns, None for h5py's path (structured datasets, floats,
        uint64 t, other filters, missing chunks)."""
        sensor = self.info.sensor_size
        small = sensor.width <= 32768 and sensor.height <= 32768
        if not -2 ** 63 <= self._t_offset < 2 ** 63:
            return None
        try:
            dsets = []
            for k, (ds, field) in self._cols.items():
                dt = ds.dtype
                if field is not None or dt.kind not in "iub" or not dt.isnative or not np.can_cast(dt, np.int64):
                    return None
                if k in "xy" and not (small or np.can_cast(dt, np.int16)):
                    return None
                dsets.append(ds)
            chunk = {ds.chunks for ds in dsets}
            plists = [ds.id.get_create_plist() for ds in dsets]
            filters = {tuple(pl.get_filter(i)[0] for i in range(pl.get_nfilters())) for pl in plists}
            lzf = filters == {(LZF_FILTER,)}
            if filters == {()} and (len(chunk) != 1 or None in chunk):  # one read per column, if the file holds it
                if all(ds.id.get_storage_size() >= self._n * ds.dtype.itemsize for ds in dsets):
                    return ("direct",)
                return None
            if len(chunk) != 1 or None in chunk or not (lzf or filters == {()}):
                return None
            length = next(iter(chunk))[0]
            if length * max(ds.dtype.itemsize for ds in dsets) > _MAX_CHUNK_BYTES:
                return None
            count = -(-self._n // length)
            if self._file.userblock_size:  # chunk addresses are absolute or not, depending on the HDF5 version
                return None
            size = self.path.stat().st_size
            lists = []
            for ds in dsets:
                infos = []
                ds.id.chunk_iter(infos.append)
                infos.sort(key=lambda c: c.chunk_offset)
                if [c.chunk_offset[0] for c in infos] != list(range(0, count * length, length)) or any(
                        c.filter_mask & ~1 or c.size <= 0 or c.byte_offset + c.size > size for c in infos):
                    return None
                lists.append([(c.byte_offset, c.size, (c.filter_mask & 1) if lzf else 1) for c in infos])
            return ("chunks", length, lists)
        except (*_H5_ERRORS, NotImplementedError):  # (chunk_iter needs HDF5 >= 1.12.3)
            return None

    def _decoded_chunks(self, length: int, lists) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(first event, columns)`` of chunk j = 0, 1, ...: chunk j of every column read (and
        decompressed) from the raw file bytes into scratch columns that are reused for the next
        chunk, so a consumer converts them at once while they are in cache.

        Every chunk, the last one too, holds ``length`` values: a stream that decodes to any
        other size is corrupt. (h5py accepts a short one and leaves the rest of the chunk
        uninitialised.)"""
        dsets = [ds for ds, _ in self._cols.values()]
        names = [ds.name.lstrip("/") for ds in dsets]
        scratch = [np.empty(length, ds.dtype) for ds in dsets]
        raw = np.empty(max(sz for lst in lists for _, sz, _ in lst), np.uint8)
        with open(self.path, "rb", buffering=0) as f:
            for j in range(len(lists[0])):
                for name, col, lst in zip(names, scratch, lists):
                    at, sz, stored_raw = lst[j]
                    dst = col.view(np.uint8)
                    f.seek(at)
                    if stored_raw:  # unfiltered, or LZF declined this chunk: HDF5 stored it as is
                        got = f.readinto(dst) if sz == dst.shape[0] else -1
                    elif f.readinto(raw[:sz]) == sz:
                        got = K.lzf_decompress(raw[:sz], dst)
                    else:
                        got = -1
                    if got != dst.shape[0]:
                        raise RecordingError(self.path, f"{name} chunk {j}: corrupt chunk (decodes "
                                                        f"to {'nothing' if got < 0 else got} bytes, expected "
                                                        f"{dst.shape[0]})", at)
                j0 = j * length
                n = min(self._n, j0 + length) - j0
                yield j0, [c[:n] for c in scratch]

    def _fused(self, out, o0, cols, f0, last_t):
        """Convert and validate events ``f0...`` of the file, given as integer columns, into
        ``out[o0:]``; any problem re-decodes them the per-field way, which words the error."""
        sensor = self.info.sensor_size
        lo = _INT64_MIN if last_t is None else last_t
        n = len(cols[0])
        _, code = K.columns_to_events_(*cols, self._t_offset, out, o0, sensor.width, sensor.height, lo,
                                       self._check_order)
        if code != K.OK:
            return self._slow_range(out, o0, f0, f0 + n, last_t)
        return int(out["t"][o0 + n - 1])

    def _slow_range(self, out, o0, f0, f1, last_t):
        ev, last_t = self._decode(f0, f1, last_t)
        out[o0:o0 + f1 - f0] = ev
        return last_t

    def _chunks(self) -> Iterator[np.ndarray]:
        """Chunks of ``chunk_events``: through the raw chunk path when ``read_all`` would take it
        (same speed, same check of every chunk's decoded size), else through h5py."""
        plan = self._plan() if self._n else None
        last_t = None
        if plan is None or plan[0] != "chunks":
            for i0 in range(0, self._n, self.chunk_events):
                ev, last_t = self._decode(i0, min(self._n, i0 + self.chunk_events), last_t)
                yield ev
            return
        out, k, done = np.empty(min(self.chunk_events, self._n), EVENT_DTYPE), 0, 0
        for j0, cols in self._decoded_chunks(*plan[1:]):
            p, m = 0, len(cols[0])
            while p < m:   # an HDF5 chunk may straddle two output chunks
                take = min(m - p, len(out) - k)
                last_t = self._fused(out, k, [c[p:p + take] for c in cols], j0 + p, last_t)
                k, p = k + take, p + take
                if k == len(out):
                    done += k
                    yield out
                    out, k = np.empty(min(self.chunk_events, self._n - done), EVENT_DTYPE), 0
        if k:
            yield out[:k]

    def _decode(self, i0: int, i1: int, last_t):
        """Events [i0, i1) read through h5py, converted field by field and checked."""
        ev = np.empty(i1 - i0, EVENT_DTYPE)
        try:
            for k, (ds, field) in self._cols.items():
                v = ds[i0:i1] if field is None else ds.fields(field)[i0:i1]
                v = np.asarray(v)
                if v.dtype.kind not in "iub":
                    raise RecordingError(self.path, f"{self._where}/{k}: expected integers, got {v.dtype}")
                if np.can_cast(v.dtype, EVENT_DTYPE[k]) and (k != "t" or not self._t_offset):
                    ev[k] = v  # every value fits: no check needed
                    continue
                if k == "t":
                    if v.dtype == np.uint64 and (v > 2 ** 62).any():
                        raise RecordingError(self.path, f"{self._where}/t[{i0}..{i1}): timestamp beyond 2**62 us")
                    ev[k] = v.astype(np.int64) + self._t_offset
                elif ((v < -32768) | (v > 32767)).any():
                    raise RecordingError(self.path, f"{self._where}/{k}[{i0}..{i1}): value does not fit int16")
                else:
                    ev[k] = v
        except _H5_ERRORS as e:
            raise RecordingError(self.path, f"{self._where}[{i0}:{i1}]: cannot read: {e}") from None
        last_t = check_chunk(self.path, ev, self.info.sensor_size, last_t,
                             lambda i, b=i0: f"{self._where}[{b + i}]", self._check_order)
        return ev, last_t

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except _H5_ERRORS:
                pass
            self._file = None


class Hdf5Writer(Writer):
    """Append events to resizable ``events/{t,x,y,p}`` datasets."""

    format_name = "hdf5"

    def __init__(self, path, sensor_size, extra=None, compression: str | None = "lzf"):
        super().__init__(path, sensor_size, extra)
        h5py = _h5py(self.path)
        self._f = h5py.File(self.path, "w")
        g = self._f.create_group("events")
        g.attrs["sensor_size"] = np.array(self.sensor_size, np.int64)
        for k, v in self.extra.items():
            if isinstance(v, (int, float, str)):
                g.attrs[k] = v
        self._ds = {k: g.create_dataset(k, shape=(0,), maxshape=(None,), dtype=EVENT_DTYPE[k],
                                        chunks=(1 << 16,), compression=compression) for k in "txyp"}
        self.events_written = 0

    def _write(self, events: np.ndarray) -> None:
        check_writable(self.path, events, self.sensor_size)
        n0, n1 = self.events_written, self.events_written + len(events)
        for k, ds in self._ds.items():
            ds.resize((n1,))
            ds[n0:n1] = events[k]
        self.events_written = n1

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()


def _sniff(head: bytes, path: Path) -> bool:
    return head.startswith(MAGIC)


FORMAT = register_format(Format(
    name="hdf5", description="HDF5 events (DSEC events/{t,x,y,p}, structured 'events', tonic cache)",
    extensions=(".h5", ".hdf5"), sniff=_sniff, reader=Hdf5Reader, writer=Hdf5Writer, priority=50))
