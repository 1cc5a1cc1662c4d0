"""Validation shared by the simple formats: sensor-size options and per-chunk event checks.

Why here: every reader must reject impossible coordinates and backward timestamps the same
way, with a ``RecordingError`` naming the file and the byte offset of the offending event.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import SensorSize

from .check_kernels import BACKWARDS, OUTSIDE, first_invalid


def parse_sensor_size(value, path, key: str = "sensor_size") -> SensorSize:
    """``(W, H[, C])``, ``[W, H, C]`` or ``"WxH[xC]"`` -> SensorSize; RecordingError otherwise."""
    try:
        if isinstance(value, str):
            parts = [int(v) for v in value.lower().replace(",", "x").split("x") if v.strip()]
        else:
            parts = [int(v) for v in value]
        if len(parts) not in (2, 3) or min(parts) <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise RecordingError(path, f"{key} must be W x H [x C] positive integers, got {value!r}") from None
    return SensorSize(*parts) if len(parts) == 3 else SensorSize(parts[0], parts[1], 2)


def read_sidecar(path: Path) -> dict:
    """JSON metadata beside a data file (``clip.json`` or ``clip.npy.json``), or {} if none."""
    s = os.fspath(path)  # plain string ops: this runs once per file of datasets of 1000s of files
    for c in (s + ".json", os.path.splitext(s)[0] + ".json"):
        if c != s and os.path.isfile(c):
            cand = Path(c)
            try:
                meta = json.loads(cand.read_text())
            except (OSError, ValueError) as e:
                raise RecordingError(cand, f"unreadable sidecar JSON: {e}") from None
            if not isinstance(meta, dict):
                raise RecordingError(cand, "sidecar JSON must be an object")
            return meta
    return {}


def check_chunk(path, ev: np.ndarray, sensor: SensorSize, last_t: int | None,
                offset_of: Callable[[int], int], check_order: bool = True) -> int | None:
    """Reject out-of-sensor coordinates and (if ``check_order``) timestamps going backwards.

    ``offset_of(i)`` maps an event index in ``ev`` to its byte offset in the file, or to a str
    naming where it is (e.g. an HDF5 dataset and index). Returns the last timestamp of the
    chunk, to be passed back with the next chunk.
    """
    def fail(i: int, msg: str):
        loc = offset_of(i)
        if isinstance(loc, str):
            raise RecordingError(path, f"{loc}: {msg}")
        raise RecordingError(path, msg, loc)

    if len(ev) == 0:
        return last_t
    x, y, t = ev["x"], ev["y"], ev["t"]
    lo = np.iinfo(np.int64).min if last_t is None else last_t
    i, code = first_invalid(t, x, y, sensor.width, sensor.height, lo, check_order)
    if code == OUTSIDE:
        fail(i, f"event ({int(x[i])}, {int(y[i])}) outside the {sensor.width}x{sensor.height} sensor "
                f"(pass sensor_size= if the recording comes from a larger sensor)")
    if code == BACKWARDS:
        prev = last_t if i == 0 else int(t[i - 1])
        fail(i, f"timestamp goes backwards: {int(t[i])} us after {prev} us")
    return int(t[-1])


def check_writable(path, events: np.ndarray, sensor: SensorSize) -> None:
    """Writers refuse what their reader would refuse: coordinates outside the sensor."""
    x, y = events["x"], events["y"]
    bad = (x < 0) | (x >= sensor.width) | (y < 0) | (y >= sensor.height)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RecordingError(path, f"cannot write event {i} at ({int(x[i])}, {int(y[i])}): outside the "
                                   f"{sensor.width}x{sensor.height} sensor")
