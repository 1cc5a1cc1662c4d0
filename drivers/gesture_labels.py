"""DVS128 Gesture labels: the ``user*_*_labels.csv`` files and cutting a recording into samples.

Each DvsGesture recording ``userNN_<lighting>.aedat`` (AEDAT 3.1) has a CSV beside it::

    class,startTime_usec,endTime_usec
    1,80048239,85092709
    ...

giving, per gesture performed, its class (1..11, :data:`GESTURE_CLASSES`) and the half-open
window ``[start, end)`` in µs on the recording's clock. :func:`cut_samples` streams the
recording once and yields one :class:`LabeledSample` per row (memory: one sample + one chunk).

    for s in cut_samples("user01_fluorescent.aedat"):
        print(s.label, GESTURE_CLASSES[s.label], len(s.events))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

GESTURE_CLASSES = {
    1: "hand_clapping", 2: "right_hand_wave", 3: "left_hand_wave", 4: "right_arm_clockwise",
    5: "right_arm_counter_clockwise", 6: "left_arm_clockwise", 7: "left_arm_counter_clockwise",
    8: "arm_roll", 9: "air_drums", 10: "air_guitar", 11: "other_gestures",
}
HEADER = ("class", "starttime_usec", "endtime_usec")
MAX_LABEL_BYTES = 16 << 20


class GestureLabels(NamedTuple):
    """Parallel arrays, one entry per labeled gesture, sorted by start time."""

    label: np.ndarray     # int16 class id (1..11)
    start_us: np.ndarray  # int64, inclusive
    end_us: np.ndarray    # int64, exclusive


class LabeledSample(NamedTuple):
    """One gesture cut out of a recording: events with ``start_us <= t < end_us``."""

    label: int
    start_us: int
    end_us: int
    events: np.ndarray
    sensor_size: SensorSize


def read_labels(path: str | os.PathLike, n_classes: int = 11) -> GestureLabels:
    """Parse a DvsGesture labels CSV; errors name the file, line and byte offset.

    Rules: the header row ``class,startTime_usec,endTime_usec``; three integers per row;
    1 <= class <= ``n_classes``; 0 <= start < end; rows sorted by start and not overlapping.
    """
    p = Path(path)
    if not p.exists():
        raise RecordingError(p, "no such labels file")
    data = p.read_bytes()
    if len(data) > MAX_LABEL_BYTES:
        raise RecordingError(p, f"labels file larger than {MAX_LABEL_BYTES} bytes", 0)
    rows: list[tuple[int, int, int]] = []
    offset = 0
    header_seen = False
    for lineno, raw in enumerate(data.splitlines(keepends=True), 1):
        line_off, offset = offset, offset + len(raw)
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        cells = [c.strip() for c in text.split(",")]
        if not header_seen:
            if tuple(c.lower() for c in cells) != HEADER:
                raise RecordingError(p, f"line {lineno}: expected header 'class,startTime_usec,endTime_usec', "
                                        f"got {text[:80]!r}", line_off)
            header_seen = True
            continue
        if len(cells) != 3:
            raise RecordingError(p, f"line {lineno}: expected 3 comma-separated integers, got {len(cells)} fields", line_off)
        try:
            c, s, e = (int(v) for v in cells)
        except ValueError:
            raise RecordingError(p, f"line {lineno}: expected integers, got {text[:80]!r}", line_off) from None
        if not 1 <= c <= n_classes:
            raise RecordingError(p, f"line {lineno}: class {c} outside 1..{n_classes}", line_off)
        if not 0 <= s < e:
            raise RecordingError(p, f"line {lineno}: expected 0 <= start < end, got {s}, {e}", line_off)
        if rows and s < rows[-1][2]:
            raise RecordingError(p, f"line {lineno}: window starts at {s} µs, before the previous one "
                                    f"ends ({rows[-1][2]} µs): expected sorted, non-overlapping rows", line_off)
        rows.append((c, s, e))
    if not header_seen:
        raise RecordingError(p, "empty labels file: expected the header 'class,startTime_usec,endTime_usec'", 0)
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return GestureLabels(arr[:, 0].astype(np.int16), arr[:, 1].copy(), arr[:, 2].copy())


def write_labels(path: str | os.PathLike, labels: GestureLabels) -> None:
    """Write ``labels`` in the DvsGesture CSV layout (used to build test fixtures and datasets)."""
    lines = ["class,startTime_usec,endTime_usec"]
    lines += [f"{int(c)},{int(s)},{int(e)}" for c, s, e in zip(*labels)]
    Path(path).write_text("\n".join(lines) + "\n")


def cut_samples(recording: str | os.PathLike, labels: str | os.PathLike | GestureLabels | None = None,
                chunk_events: int = 1 << 20, **options) -> Iterator[LabeledSample]:
    """Stream ``recording`` once and yield one :class:`LabeledSample` per labeled window.

    ``labels`` defaults to ``<recording stem>_labels.csv``. The recording's events must be
    sorted by time (the AEDAT readers enforce it); a window with no events yields an empty sample.
    """
    from spikeflow.drivers.recording import open_recording

    rec_path = Path(recording)
    if labels is None:
        labels = rec_path.with_name(rec_path.stem + "_labels.csv")
    lab = labels if isinstance(labels, GestureLabels) else read_labels(labels)
    n = len(lab.label)
    j = 0
    pieces: list[np.ndarray] = []
    with open_recording(rec_path, chunk_events=chunk_events, **options) as rec:
        ss = rec.info.sensor_size
        for chunk in rec:
            t = chunk["t"]
            while j < n:
                s, e = int(lab.start_us[j]), int(lab.end_us[j])
                i0, i1 = np.searchsorted(t, [s, e], side="left")
                if i1 > i0:
                    pieces.append(chunk[i0:i1].copy())
                if int(t[-1]) < e:
                    break  # the window continues in the next chunk
                yield _sample(lab, j, pieces, ss)
                pieces, j = [], j + 1
        while j < n:
            yield _sample(lab, j, pieces, ss)
            pieces, j = [], j + 1


def _sample(lab: GestureLabels, j: int, pieces: list[np.ndarray], ss: SensorSize) -> LabeledSample:
    ev = np.concatenate(pieces) if pieces else np.zeros(0, EVENT_DTYPE)
    return LabeledSample(int(lab.label[j]), int(lab.start_us[j]), int(lab.end_us[j]), ev, ss)
