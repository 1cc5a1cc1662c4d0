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
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from .checks import check_chunk, check_writable, parse_sensor_size

MAGIC = b"\x89HDF\r\n\x1a\n"
ALIASES = {"t": ("t", "ts", "timestamp", "timestamps"), "x": ("x",), "y": ("y",),
           "p": ("p", "pol", "polarity")}
DSEC_SENSOR = SensorSize(640, 480, 2)
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError)


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
        """The whole file goes to memory anyway: decode it as one chunk (no concatenation copy)."""
        self.chunk_events = max(1, self._n)
        return super().read_all()

    def _chunks(self) -> Iterator[np.ndarray]:
        last_t = None
        for i0 in range(0, self._n, self.chunk_events):
            i1 = min(self._n, i0 + self.chunk_events)
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
            yield ev

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
