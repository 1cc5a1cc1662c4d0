"""Streaming statistics of a recording: what ``spikeflow info`` prints.

One pass over the chunks of a reader (memory bounded by the chunk size): event count, first
and last timestamp, duration, mean rate, peak rate over sliding 1 ms and 10 ms windows (a
numba two-pointer kernel; the window tail is carried across chunks), polarity balance.
Peak rates assume sorted timestamps; an unsorted recording reports ``sorted: false`` and
peaks computed on each chunk sorted separately (a lower bound).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .recording import open_recording
from .stats_kernels import window_peak

PEAK_WINDOWS_US = (1_000, 10_000)


@dataclass
class RecordingStats:
    """Figures of one recording; rates in events per second (``_hz``)."""

    path: str
    format: str
    width: int
    height: int
    channels: int
    count: int = 0
    t_first_us: int | None = None
    t_last_us: int | None = None
    duration_us: int = 0
    mean_rate_hz: float = 0.0
    peak_rate_hz: dict = field(default_factory=dict)   # {"1ms": hz, "10ms": hz}
    on_count: int = 0
    off_count: int = 0
    other_polarity_count: int = 0
    on_fraction: float | None = None
    sorted: bool = True
    file_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class _PeakTracker:
    """Sliding-window peak count over a stream of sorted timestamp chunks."""

    def __init__(self, window_us: int):
        self.window_us = window_us
        self.peak = 0
        self.tail = np.zeros(0, np.int64)

    def feed(self, t: np.ndarray, final: bool = False) -> None:
        tt = np.concatenate([self.tail, t]) if len(self.tail) else np.ascontiguousarray(t, np.int64)
        if len(tt) == 0:
            return
        peak, pending = window_peak(tt, self.window_us, final)
        self.peak = max(self.peak, int(peak))
        self.tail = tt[pending:].copy()


def recording_stats(path: str | os.PathLike, format: str | None = None, **options) -> RecordingStats:
    """Stream ``path`` once and return its statistics."""
    with open_recording(path, format, **options) as rec:
        return stats_of_reader(rec)


def stats_of_reader(rec) -> RecordingStats:
    """Statistics of an open reader (consumes it). ``t_first_us``/``t_last_us`` are min/max."""
    w, h, c = rec.info.sensor_size
    st = RecordingStats(str(rec.path), rec.info.format, int(w), int(h), int(c),
                        file_bytes=os.path.getsize(rec.path))
    trackers = [_PeakTracker(wu) for wu in PEAK_WINDOWS_US]
    last = None
    for chunk in rec:
        t, p = chunk["t"], chunk["p"]
        chunk_sorted = bool(np.all(t[1:] >= t[:-1])) and (last is None or t[0] >= last)
        last = int(t[-1])
        t_min, t_max = (int(t[0]), last) if chunk_sorted else (int(t.min()), int(t.max()))
        st.t_first_us = t_min if st.t_first_us is None else min(st.t_first_us, t_min)
        st.t_last_us = t_max if st.t_last_us is None else max(st.t_last_us, t_max)
        st.count += len(chunk)
        on = int(np.count_nonzero(p == 1))
        off = int(np.count_nonzero(p == 0))
        st.on_count += on
        st.off_count += off
        st.other_polarity_count += len(chunk) - on - off
        if not chunk_sorted:
            st.sorted = False
            t = np.sort(t)
        for tr in trackers:
            if not chunk_sorted:
                tr.feed(np.zeros(0, np.int64), final=True)
            tr.feed(t)
    for tr in trackers:
        tr.feed(np.zeros(0, np.int64), final=True)
    if st.count:
        st.duration_us = int(st.t_last_us - st.t_first_us)
        st.mean_rate_hz = st.count / (st.duration_us * 1e-6) if st.duration_us > 0 else 0.0
        pol = st.on_count + st.off_count
        st.on_fraction = st.on_count / pol if pol else None
    st.peak_rate_hz = {f"{wu // 1000}ms": tr.peak / (wu * 1e-6) for wu, tr in zip(PEAK_WINDOWS_US, trackers)}
    return st
