"""Paced replay: a recording (or an event array) as a stream of packets on a schedule.

    for pkt in replay("clip.sfe", window_us=1000, speed=1.0):      # real time, 1 ms packets
        ...
    r = Replay(events, sensor_size=(128, 128, 2), count=5000, speed=0)   # as fast as possible
    packets = list(r); print(r.stats())

Slicing: by half-open time windows ``[t0, t1)`` of ``window_us`` starting at the first event
(empty windows still yield an empty packet, so downstream time advances), or by ``count``
events (a packet never splits one timestamp: it holds ``count`` events plus any that share the
last one's ``t``; its window is ``[previous t1, last t + 1)``). Windows are contiguous.

Schedule: the packet of ``[t0, t1)`` is due when its window closes, at
``start_ns + (t1 - t_first) * 1000 / speed`` (a live camera cannot deliver it earlier).
``speed`` 1.0 is real time, N is N× faster, 0 or ``inf`` is as fast as possible. Waits are
sliced so ``stop()`` (or the ``stop`` callable) ends the stream within a few ms. ``sent_ns`` of
each packet is its actual wall-clock emission time; lateness against the schedule is counted.

Looping replays the source again with sensor time continuing (each pass is shifted by the
span of the previous ones) and ``seq`` continuing. Paths are streamed chunk by chunk through
:func:`~spikeflow.drivers.recording.open_recording`, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from typing import Callable, Iterator

import numpy as np

from spikeflow.service.errors import ParamError, RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize
from spikeflow.service.packet import Packet

WAIT_SLICE_S = 0.005
"""Longest uninterrupted sleep: bounds how late a stop request is noticed."""

OVERSHOOT_NS = 20_000
"""Initial estimate of how late a timed sleep wakes up. Replay sleeps until
``deadline - estimate`` and busy-waits the rest; the estimate follows the measured overshoot
(moving average, capped at ``MAX_SPIN_NS`` so a loaded machine never turns pacing into a
busy loop)."""

MAX_SPIN_NS = 50_000

TIMER_SLACK_NS = 1000
"""On Linux a sleeping thread may wake up to its timer slack late (50 µs by default); paced
replay lowers its own thread's slack to this while it runs (prctl PR_SET_TIMERSLACK) and
restores it afterwards."""

LATENESS_KEPT = 1 << 16


class Replay:
    """Iterable replay with counters; see the module docstring. Iterate it once."""

    def __init__(self, source, *, window_us: int = 1000, count: int | None = None, speed: float = 1.0,
                 loop: bool = False, sensor_size=None, stream: str = "replay", start_ns: int | None = None,
                 stop: Callable[[], bool] | None = None, chunk_events: int = 1 << 18, format: str | None = None,
                 reader_options: dict | None = None):
        if count is not None and (isinstance(count, bool) or int(count) != count or count <= 0):
            raise ParamError("replay.count", f"must be a positive integer or None, got {count!r}")
        if isinstance(window_us, bool) or int(window_us) != window_us or window_us <= 0:
            raise ParamError("replay.window_us", f"must be a positive integer, got {window_us!r}")
        if not isinstance(speed, (int, float)) or math.isnan(speed) or speed < 0:
            raise ParamError("replay.speed", f"must be >= 0 (0 or inf = as fast as possible), got {speed!r}")
        self.window_us = int(window_us)
        self.count = None if count is None else int(count)
        self.speed = float(speed)
        self.loop = bool(loop)
        self.stream = stream
        self.start_ns = start_ns
        self._stop_fn = stop
        self._stop_event = threading.Event()
        self.chunk_events = int(chunk_events)
        self.format = format
        self.reader_options = dict(reader_options or {})
        if isinstance(source, np.ndarray):
            if source.dtype != EVENT_DTYPE:
                raise ParamError("replay.source", f"event arrays must have EVENT_DTYPE, got {source.dtype}")
            if sensor_size is None:
                raise ParamError("replay.sensor_size", "required when replaying an event array")
            self._array, self._path = source, None
            self.sensor_size = SensorSize(*sensor_size)
        elif isinstance(source, (str, os.PathLike)):
            from .recording import open_recording

            self._array, self._path = None, source
            with open_recording(source, format=format, chunk_events=self.chunk_events,
                                **self.reader_options) as rec:
                info_size = rec.info.sensor_size
            self.sensor_size = SensorSize(*(sensor_size if sensor_size is not None else info_size))
        else:
            raise ParamError("replay.source", f"expected a path or an event array, got {type(source).__name__}")
        # counters
        self.packets = 0
        self.events = 0
        self.passes = 0
        self.late_ns: deque[int] = deque(maxlen=LATENESS_KEPT)
        self._overshoot_ns = OVERSHOOT_NS

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """End the stream at the next window or within one wait slice (thread-safe)."""
        self._stop_event.set()

    def _stopping(self) -> bool:
        return self._stop_event.is_set() or (self._stop_fn is not None and bool(self._stop_fn()))

    @property
    def paced(self) -> bool:
        return 0.0 < self.speed < math.inf

    def stats(self) -> dict:
        """Counters: packets, events, passes, and lateness against the schedule (µs)."""
        late = np.asarray(self.late_ns, dtype=np.float64) / 1000.0
        out = {"packets": self.packets, "events": self.events, "passes": self.passes}
        if len(late):
            out.update(late_p50_us=float(np.median(late)), late_p99_us=float(np.percentile(late, 99)),
                       late_max_us=float(late.max()))
        return out

    # -- source ---------------------------------------------------------------------------------
    def _chunks(self) -> Iterator[np.ndarray]:
        if self._array is not None:
            if len(self._array):
                yield self._array
            return
        from .recording import open_recording

        with open_recording(self._path, format=self.format, chunk_events=self.chunk_events,
                            **self.reader_options) as rec:
            yield from rec

    def _sorted_chunks(self) -> Iterator[np.ndarray]:
        last_t = None
        seen = 0
        where = self._path if self._path is not None else "<event array>"
        for chunk in self._chunks():
            t = chunk["t"]
            back = np.flatnonzero(t[1:] < t[:-1])
            if len(back) or (last_t is not None and t[0] < last_t):
                i = seen + (int(back[0]) + 1 if len(back) else 0)
                raise RecordingError(where, f"timestamps go backwards at event {i}: replay needs "
                                            f"time-sorted events")
            last_t = int(t[-1])
            seen += len(chunk)
            yield chunk

    def _time_windows(self):
        w = self.window_us
        pending = None
        w0 = None
        for chunk in self._sorted_chunks():
            buf = chunk if pending is None or not len(pending) else np.concatenate([pending, chunk])
            if w0 is None:
                w0 = int(buf["t"][0])
            t = buf["t"]
            n_closed = (int(t[-1]) - w0) // w  # windows that end at or before the last event seen
            if n_closed:
                edges_np = w0 + w * np.arange(n_closed + 1, dtype=np.int64)
                edges = edges_np.tolist()  # python ints: cheaper per window than numpy scalars
                idx = np.searchsorted(t, edges_np, side="left").tolist()
                for k in range(n_closed):
                    yield edges[k], edges[k + 1], buf[idx[k]:idx[k + 1]]
                w0 = edges[-1]
                pending = buf[idx[-1]:]
            else:
                pending = buf
        if pending is not None and len(pending):
            yield w0, w0 + w, pending

    def _count_windows(self):
        n = self.count
        pending = None
        t0 = None
        for chunk in self._sorted_chunks():
            buf = chunk if pending is None or not len(pending) else np.concatenate([pending, chunk])
            if t0 is None:
                t0 = int(buf["t"][0])
            t = np.ascontiguousarray(buf["t"])  # searchsorted would copy a strided field each call
            i = 0
            while len(buf) - i > n:
                # extend past events sharing the n-th one's timestamp; need one later event
                j = int(np.searchsorted(t, t[i + n - 1], side="right"))
                if j >= len(buf):
                    break
                t1 = int(t[j - 1]) + 1
                yield t0, t1, buf[i:j]
                t0, i = t1, j
            pending = buf[i:]
        if pending is not None and len(pending):
            yield t0, int(pending["t"][-1]) + 1, pending

    # -- pacing ---------------------------------------------------------------------------------
    def _wait_until(self, deadline_mono_ns: int) -> bool:
        """Sleep in slices, then spin, until the deadline; False if stopped meanwhile."""
        while True:
            if self._stopping():
                return False
            now = time.monotonic_ns()
            remaining = deadline_mono_ns - now
            if remaining <= self._overshoot_ns:
                break
            nap_ns = remaining - self._overshoot_ns
            if nap_ns > WAIT_SLICE_S * 1e9:
                self._stop_event.wait(WAIT_SLICE_S)
                continue
            self._stop_event.wait(nap_ns / 1e9)
            over = time.monotonic_ns() - (now + nap_ns)
            self._overshoot_ns = int(0.9 * self._overshoot_ns + 0.1 * min(max(over, 0), MAX_SPIN_NS))
        while time.monotonic_ns() < deadline_mono_ns:
            pass
        return True

    def __iter__(self) -> Iterator[Packet]:
        paced = self.paced
        previous_slack = _set_timer_slack(TIMER_SLACK_NS) if paced else None
        offset = 0
        seq = 0
        t_origin = None
        mono0 = 0
        ns_per_us = 1000.0 / self.speed if paced else 0.0
        stream, size, stopping = self.stream, self.sensor_size, self._stopping
        try:
            while not stopping():
                first_t = end_t = None
                for t0, t1, ev in (self._time_windows() if self.count is None else self._count_windows()):
                    if t_origin is None:
                        t_origin = t0
                        wall_now, mono_now = time.time_ns(), time.monotonic_ns()
                        wall0 = wall_now if self.start_ns is None else int(self.start_ns)
                        mono0 = mono_now + (wall0 - wall_now)
                    if first_t is None:
                        first_t = t0
                    end_t = t1
                    if offset:
                        ev = ev.copy()
                        ev["t"] += offset
                    if paced:
                        deadline_ns = mono0 + round((t1 + offset - t_origin) * ns_per_us)
                        if not self._wait_until(deadline_ns):
                            return
                        self.late_ns.append(time.monotonic_ns() - deadline_ns)
                    elif stopping():
                        return
                    self.packets += 1
                    self.events += len(ev)
                    yield Packet("events", stream, seq, size, t0 + offset, t1 + offset, time.time_ns(), ev)
                    seq += 1
                self.passes += 1
                if not self.loop or first_t is None:
                    return
                offset += end_t - first_t
        finally:
            if previous_slack is not None:
                _set_timer_slack(previous_slack)


def _set_timer_slack(slack_ns: int) -> int | None:
    """Set this thread's timer slack (Linux); returns the previous value, None where unsupported."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        previous = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
        if previous < 0 or libc.prctl(29, int(slack_ns), 0, 0, 0) != 0:  # PR_SET_TIMERSLACK
            return None
        return int(previous)
    except (OSError, AttributeError):
        return None


def replay(source, *, window_us: int = 1000, count: int | None = None, speed: float = 1.0, loop: bool = False,
           sensor_size=None, stream: str = "replay", start_ns: int | None = None,
           stop: Callable[[], bool] | None = None) -> Iterator[Packet]:
    """Packets of ``source`` (a path or an EVENT_DTYPE array) on a schedule; see the module doc."""
    return iter(Replay(source, window_us=window_us, count=count, speed=speed, loop=loop,
                       sensor_size=sensor_size, stream=stream, start_ns=start_ns, stop=stop))
