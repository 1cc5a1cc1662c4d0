"""Built-in sources and sinks: ``replay`` (a recording), ``simulate`` (synthetic DVS), ``record``, ``print``.

Sources pace themselves (``speed`` 1.0 = real time, 0 = as fast as downstream accepts) and end
when their data ends, unless ``loop``. ``replay`` and ``simulate`` are deterministic, so they can
resume a stream: :meth:`Replay.resume_at` (called by the supervisor's link before the stream
starts) makes ``packets()`` regenerate and skip, unpaced, every packet before a given ``seq``,
then continue at the same pace with the same sequence numbers (docs/daemon.md, "Resume").
``record`` writes through the drivers' writers and is flushed and closed by the runtime's
drain, so a file is complete after SIGTERM. Network sources and sinks (``zmq_input``,
``publish``) live in :mod:`spikeflow.service.zmq_nodes`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spikeflow.nodes.base import Node, PortMeta, Source, param
from spikeflow.service.errors import ParamError
from spikeflow.service.events import EVENT_DTYPE, SensorSize, window_bounds
from spikeflow.service.packet import Packet, events_packet, now_ns
from spikeflow.service.registry import register
from spikeflow.service.repeats import RepeatFilter

log = logging.getLogger(__name__)


def resolve_recording(path: str, key: str) -> Path:
    """A path as given if it exists, else a bundled recording of that name (spikeflow.recordings)."""
    if not path:
        raise ParamError(key, "a recording path is required")
    p = Path(path).expanduser()
    if p.exists():
        return p.resolve()
    if p.parent == Path("."):
        from spikeflow import recordings

        try:
            return recordings.path(path)
        except FileNotFoundError as e:
            raise ParamError(key, f"no such file {str(p)!r} (cwd {os.getcwd()}), and {e}") from None
    raise ParamError(key, f"no such file {str(p)!r} (cwd {os.getcwd()})")


class Pacer:
    """Maps sensor time to wall time at ``speed`` (0 = no pacing); sleeps in short slices so a
    stop request is honoured quickly."""

    def __init__(self, speed: float, stopping=lambda: False):
        self.speed = float(speed)
        self.stopping = stopping
        self._t0_us: int | None = None
        self._wall0_ns = 0

    def wait_until(self, t_us: int) -> None:
        if self.speed <= 0:
            return
        if self._t0_us is None:
            self._t0_us, self._wall0_ns = int(t_us), time.monotonic_ns()
            return
        target_ns = self._wall0_ns + (int(t_us) - self._t0_us) * 1000.0 / self.speed
        while not self.stopping():
            left_s = (target_ns - time.monotonic_ns()) / 1e9
            if left_s <= 0:
                return
            time.sleep(min(left_s, 0.05))

    def restart(self) -> None:
        self._t0_us = None

    def sleep_us(self, span_us: int) -> None:
        """Sleep ``span_us`` of sensor time at this speed, in slices, unless stopping."""
        if self.speed <= 0:
            return
        end_ns = time.monotonic_ns() + span_us * 1000.0 / self.speed
        while not self.stopping():
            left_s = (end_ns - time.monotonic_ns()) / 1e9
            if left_s <= 0:
                return
            time.sleep(min(left_s, 0.05))


# -- replay ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplayParams:
    path: str = param("", "recording file (any registered format), or the name of a bundled recording")
    paths: tuple[str, ...] = param((), "a playlist instead of `path`: recordings played back to back on one clock")
    gap_us: int = param(300_000, "playlist: silence between two recordings (µs of sensor time)", min=0, max=10**10)
    window_us: int = param(1000, "packet window in µs of sensor time", min=1, max=10**9)
    count: int | None = param(None, "if set, packets of this many events instead of time windows", min=1)
    speed: float = param(1.0, "1.0 = real time, 2.0 = twice as fast, 0 = as fast as possible", min=0.0)
    loop: bool = param(False, "start over at the end (a live-like endless stream)")
    sensor_size: tuple[int, int, int] | None = param(
        None, "override the recording's (width, height, channels); also given to readers that take it (.bin/.bs2)")
    format: str = param("", "reader format name; empty = detect from the file's header")


ALIGN_US = 100_000
"""Playlist items start on multiples of this, so fixed-size windows fall on each the same way."""


@register
class Replay(Source):
    """Stream a recording (or a playlist of recordings) as packets, paced on their timestamps
    (``spikeflow.drivers.replay``). A recording whose header carries a ``label`` (the bundled
    gestures do) stamps its packets with ``data["truth"]`` for a downstream ``scoreboard``."""

    type_name = "replay"
    Params = ReplayParams
    outputs = {"events_out": "events"}

    def __init__(self, name, params=None):
        super().__init__(name, params)
        p = self.params
        key = f"nodes.{name}.params"
        if bool(p.path) == bool(p.paths):
            raise ParamError(f"{key}.path", "give exactly one of `path` or `paths` "
                                            "(to replace a playlist by one file, also set paths=[])")
        if p.paths and p.loop:
            raise ParamError(f"{key}.loop", "loop is for a single `path`; a playlist plays once")
        names = [p.path] if p.path else list(p.paths)
        self.files = [resolve_recording(x, f"{key}.{'path' if p.path else f'paths[{i}]'}") for i, x in enumerate(names)]
        self.path = self.files[0]
        self.packets_out = self.events_out = 0
        self.resume_seq = 0

    def resume_at(self, seq: int) -> None:
        """Start the stream at packet ``seq`` (call before ``packets()``): the packets before it
        are regenerated unpaced and skipped; from it on, the stream is paced as usual."""
        self.resume_seq = _check_resume(self.name, seq)

    def _reader_options(self) -> dict:
        """``sensor_size`` goes to readers that accept it (formats without one in the file)."""
        import inspect

        from spikeflow.drivers.recording import detect_format, get_format

        if self.params.sensor_size is None:
            return {}
        fmt = get_format(self.params.format or detect_format(self.path))
        accepts = "sensor_size" in inspect.signature(fmt.reader.__init__).parameters
        return {"sensor_size": tuple(self.params.sensor_size)} if accepts else {}

    def setup(self, meta):
        from spikeflow.drivers.recording import open_recording

        self.truths = []
        for f in self.files:
            with open_recording(f, format=self.params.format or None, **self._reader_options()) as rec:
                size = rec.info.sensor_size
                extra = rec.info.extra
            self.truths.append({"label": int(extra["label"]), "name": str(extra.get("name", extra["label"]))}
                               if "label" in extra else None)
        self.sensor_size = SensorSize(*self.params.sensor_size) if self.params.sensor_size is not None else size
        # decode a first small chunk now: the format's numba kernels load here, before the worker
        # reports ready (a restarted worker would otherwise stall ~1 s on its first packet)
        with open_recording(self.files[0], format=self.params.format or None, chunk_events=1024,
                            **self._reader_options()) as rec:
            next(iter(rec), None)
        return {"events_out": PortMeta("events", self.sensor_size)}

    def packets(self) -> Iterator[tuple[str, Packet]]:
        p = self.params
        offset_us, seq, end_us = 0, 0, 0
        playlist = len(self.files) > 1 or bool(p.paths)
        resuming = self.resume_seq > 0
        if resuming and p.loop:
            yield from self._resumed_loop()
            return
        pacer = Pacer(p.speed, lambda: self.stopping) if resuming else None
        for k, (f, truth) in enumerate(zip(self.files, self.truths)):
            self._replay = self._driver(f, 0.0 if resuming else p.speed, p.loop)
            onset_us = None
            for pkt in self._replay:
                if onset_us is None:  # a playlist places each recording at an aligned onset after the gap
                    onset_us = -(-(end_us + (p.gap_us if k else 0)) // ALIGN_US) * ALIGN_US if playlist else pkt.t0_us
                    offset_us = onset_us - pkt.t0_us
                if playlist:
                    pkt = _shifted(pkt, offset_us, seq)
                    seq += 1
                end_us = pkt.t1_us
                if pkt.seq < self.resume_seq:
                    continue  # delivered by a previous incarnation: regenerated (same windows), not sent
                if pacer is not None:
                    pacer.wait_until(pkt.t1_us)  # due when its window closes, as the driver paces
                    if self.stopping:
                        return
                    pkt.sent_ns = now_ns()
                if truth is not None:
                    pkt.data = {**pkt.data, "truth": {**truth, "onset_us": int(onset_us)}}
                self.packets_out += 1
                self.events_out += pkt.count
                yield "events_out", pkt
            if self.stopping:
                return
            if playlist and k + 1 < len(self.files) and p.speed > 0 and pacer is None:
                Pacer(p.speed, lambda: self.stopping).sleep_us(p.gap_us)  # (a resumed stream's pacer spans gaps)

    def _driver(self, f, speed: float, loop: bool):
        from spikeflow.drivers.replay import Replay as _Replay

        p = self.params
        return _Replay(str(f), window_us=p.window_us, count=p.count, speed=speed, loop=loop,
                       sensor_size=self.sensor_size, stream=f"{self.name}.events_out", stop=lambda: self.stopping,
                       format=p.format or None, reader_options=self._reader_options())

    def _resumed_loop(self) -> Iterator[tuple[str, Packet]]:
        """A looping replay resumed at packet N. Every pass holds the same packets, shifted by the
        span of a pass in time and by its packet count in seq (the driver's looping), so whole
        passes are skipped by arithmetic after one unpaced pass to measure them: the cost of a
        resume does not grow with the time the stream has run."""
        per_pass, t_first, t_end = 0, None, 0
        for pkt in self._driver(self.path, 0.0, False):
            t_first = pkt.t0_us if t_first is None else t_first
            t_end, per_pass = pkt.t1_us, per_pass + 1
            if self.stopping:
                return
        if not per_pass:
            return
        truth = self.truths[0]
        span, n = t_end - t_first, self.resume_seq // per_pass
        pacer = Pacer(self.params.speed, lambda: self.stopping)
        while not self.stopping:
            self._replay = self._driver(self.path, 0.0, False)
            for pkt in self._replay:
                seq = n * per_pass + pkt.seq
                if seq < self.resume_seq:
                    continue
                pkt = _shifted(pkt, n * span, seq)
                pacer.wait_until(pkt.t1_us)
                if self.stopping:
                    return
                pkt.sent_ns = now_ns()
                if truth is not None:
                    pkt.data = {**pkt.data, "truth": {**truth, "onset_us": int(t_first)}}
                self.packets_out += 1
                self.events_out += pkt.count
                yield "events_out", pkt
            n += 1

    def stats(self):
        out = {"path": str(self.path), "files": len(self.files), "packets_out": self.packets_out,
               "events_out": self.events_out}
        r = getattr(self, "_replay", None)
        if r is not None:
            out.update({k: v for k, v in r.stats().items() if k.startswith("late") or k == "passes"})
        return out


def _check_resume(name: str, seq) -> int:
    if isinstance(seq, bool) or int(seq) != seq or seq < 0:
        raise ParamError(f"nodes.{name}", f"resume position must be a packet seq >= 0, got {seq!r}")
    return int(seq)


def _shifted(pkt: Packet, offset_us: int, seq: int) -> Packet:
    """``pkt`` moved by ``offset_us`` on the sensor clock (events copied) with a new ``seq``."""
    ev = pkt.events.copy() if pkt.events is not None else None
    if ev is not None:
        ev["t"] += offset_us
    return Packet(kind=pkt.kind, stream=pkt.stream, seq=seq, sensor_size=pkt.sensor_size,
                  t0_us=pkt.t0_us + offset_us, t1_us=pkt.t1_us + offset_us, sent_ns=pkt.sent_ns, events=ev,
                  data=dict(pkt.data))


# -- simulate -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SimulateParams:
    scene: str = param("bars", "'bars': a bar sweeping across the sensor; 'gesture': a DVS128 gesture",
                       choices=("bars", "gesture"))
    class_id: int = param(1, "gesture class (DvsGesture numbering, 1-11) when scene = 'gesture'", min=1, max=11)
    seed: int = param(0, "random seed (same seed, same events)", min=0)
    duration_us: int = param(1_000_000, "length of one pass of the scene in µs", min=1000, max=10**10)
    size: int = param(128, "sensor width and height in pixels", min=8, max=1024)
    window_us: int = param(1000, "packet window in µs", min=100, max=10**9)
    bar_speed_px_s: float = param(200.0, "bar speed in pixels per second (bars)", min=1.0, max=1e6)
    speed: float = param(1.0, "1.0 = real time, 0 = as fast as possible", min=0.0)
    loop: bool = param(False, "repeat the scene forever")


@register
class Simulate(Source):
    """Synthetic DVS events: a moving bar through the pixel simulator, or a simulated gesture."""

    type_name = "simulate"
    Params = SimulateParams
    outputs = {"events_out": "events"}

    def setup(self, meta):
        self.sensor_size = SensorSize(self.params.size, self.params.size, 2)
        self.packets_out = self.events_out = 0
        self.resume_seq = getattr(self, "resume_seq", 0)
        if self.params.scene == "bars":  # load the pixel simulator's kernels now, not at the first packet
            from spikeflow.drivers.simulator import DvsSimulator, PixelParams

            sim = DvsSimulator(8, 8, PixelParams(shot_noise_rate_hz=0.1), seed=0)
            sim.feed(_bar_frame(8, 0.0), 0)
            sim.feed(_bar_frame(8, 2.0), 1000)
        return {"events_out": PortMeta("events", self.sensor_size)}

    def resume_at(self, seq: int) -> None:
        """Start at packet ``seq``: earlier windows are simulated (same seed, same events) but not sent."""
        self.resume_seq = _check_resume(self.name, seq)

    def _windows(self, offset_us: int, rep: int) -> Iterator[np.ndarray]:
        """Event arrays of one pass, window by window (bars: simulated frame by frame)."""
        p = self.params
        if p.scene == "gesture":
            from spikeflow.drivers.gestures import simulate_gesture

            ev = np.array(simulate_gesture(p.class_id, seed=p.seed + rep, duration_us=p.duration_us, size=p.size))
            ev = ev[(ev["t"] >= 0) & (ev["t"] < p.duration_us)]
            ev["t"] += offset_us
            b = window_bounds(ev, p.window_us, t_start=offset_us)
            for k in range(len(b) - 1):
                yield ev[b[k, 1]:b[k + 1, 1]]
            return
        from spikeflow.drivers.simulator import DvsSimulator, PixelParams

        sim = DvsSimulator(p.size, p.size, PixelParams(shot_noise_rate_hz=0.1), seed=p.seed + rep)
        sim.feed(_bar_frame(p.size, 0.0), offset_us)
        for t in range(p.window_us, p.duration_us + 1, p.window_us):
            pos = (p.bar_speed_px_s * t / 1e6) % (p.size + 8) - 4
            yield sim.feed(_bar_frame(p.size, pos), offset_us + t)

    def packets(self):
        p = self.params
        stream = f"{self.name}.events_out"
        pacer = Pacer(p.speed, lambda: self.stopping)
        seq, rep, offset = 0, 0, 0
        while not self.stopping:
            t0 = offset
            for ev in self._windows(offset, rep):
                if self.stopping:
                    return
                if seq < self.resume_seq:  # delivered by a previous incarnation
                    seq += 1
                    t0 += p.window_us
                    continue
                pacer.wait_until(t0 + p.window_us)
                pkt = events_packet(np.ascontiguousarray(ev, EVENT_DTYPE), stream, seq, self.sensor_size,
                                    t0, t0 + p.window_us)
                seq += 1
                t0 += p.window_us
                self.packets_out += 1
                self.events_out += len(ev)
                yield "events_out", pkt
            if not p.loop:
                return
            rep += 1
            offset += p.duration_us

    def stats(self):
        return {"packets_out": self.packets_out, "events_out": self.events_out}


def _bar_frame(size: int, pos_px: float) -> np.ndarray:
    """A grey frame with a dark vertical bar, 4 px wide, left edge at ``pos_px`` (anti-aliased)."""
    x = np.arange(size, dtype=np.float64)
    cover = np.clip(np.minimum(x + 1 - pos_px, pos_px + 4 - x), 0.0, 1.0)
    row = 0.8 - 0.7 * cover
    return np.broadcast_to(row, (size, size)).copy()


# -- record ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordParams:
    path: str = param("", "output file; the format follows the extension (.sfe native, ...)")
    format: str | None = param(None, "writer format name, overriding the extension")
    overwrite: bool = param(True, "replace an existing file (false: refuse to start)")
    commit_ms: float = param(200.0, "native .sfe: commit (write a block, note it in the journal) at least this "
                                    "often; a restarted worker continues the file from the last commit",
                             min=1.0, max=3_600_000.0)


JOURNAL_SUFFIX = ".journal"
"""Beside a file being recorded: for ``.sfe``, one JSON line per commit (byte offset, events,
last seq per stream); for other formats one line naming the format (the file is being written).
Removed when the file is closed complete."""


@register
class Record(Node):
    """Write every event to a file through ``spikeflow.drivers.recording.open_writer``.

    Lossless by contract (the graph refuses a realtime edge into it). The file is opened at the
    first packet (a dry build for validation never touches it), flushed by ``flush`` and
    closed by ``close``, which the runtime calls on drain, so the file is complete after SIGTERM.

    Native ``.sfe`` files are written in commits: every ``commit_ms`` the buffered events go to
    the file as a block ending on a packet boundary (handed to the OS, so a kill -9 does not
    lose them) and a line in ``<path>.journal`` records the file's length and the last seq
    written per stream. :meth:`committed` reports those seqs, so a resumable source in the same
    worker never settles past what the file holds; :meth:`continue_after_restart` (the runtime
    calls it in a restarted worker) cuts the file back to the last commit and appends from
    there, dropping the packets of replayable streams it already holds (``service.repeats``).
    Other formats cannot be continued: a restarted worker keeps its predecessor's file as
    ``<stem>.partial-<k><suffix>`` (nothing already written is destroyed) and starts a new one.
    """

    type_name = "record"
    Params = RecordParams
    inputs = {"events_in": "any"}
    outputs = {}
    is_sink = True
    requires_lossless = True

    def __init__(self, name, params=None):
        super().__init__(name, params)
        key = f"nodes.{name}.params.path"
        if not self.params.path:
            raise ParamError(key, "an output path is required")
        self.path = Path(self.params.path).expanduser().resolve()
        self.journal_path = self.path.with_name(self.path.name + JOURNAL_SUFFIX)
        if not self.path.parent.is_dir():
            raise ParamError(key, f"directory {str(self.path.parent)!r} does not exist")
        if self.path.exists() and not self.params.overwrite and not self.journal_path.exists():
            raise ParamError(key, f"{str(self.path)!r} exists and overwrite = false")
        self._writer = None
        self._journal = None
        self._repeats = RepeatFilter()
        self._written: dict[str, int] = {}     # stream -> last seq handed to the writer
        self._committed: dict[str, int] = {}   # stream -> last seq in the file (-1: none yet)
        self._last_commit_ns = 0
        self.events_written = self.packets_written = 0
        self.continued_at: dict | None = None
        self.kept_partial: str | None = None

    def setup(self, meta):
        from spikeflow.drivers.recording import formats

        m = meta["events_in"]
        if m.kind not in ("events", "spikes"):
            raise ParamError(f"nodes.{self.name}.inputs.events_in", f"record writes events or spikes, got {m.kind!r}")
        fm = formats()
        if self.params.format is not None:
            if self.params.format not in fm or fm[self.params.format].writer is None:
                raise ParamError(f"nodes.{self.name}.params.format", f"no writer named {self.params.format!r}; "
                                 f"writers: {sorted(n for n, f in fm.items() if f.writer)}")
        elif not any(f.writer and self.path.suffix.lower() in f.extensions for f in fm.values()):
            raise ParamError(f"nodes.{self.name}.params.path", f"no writer for extension {self.path.suffix!r}; "
                             f"writers: {sorted(e for f in fm.values() if f.writer for e in f.extensions)}")
        self.sensor_size = m.sensor_size
        return {}

    def set_replayable_streams(self, streams) -> None:
        """Streams whose ``(stream, seq)`` identifies a packet (see ``service.repeats``): their
        repeats are not written twice."""
        self._repeats = RepeatFilter(streams)

    def _native(self) -> bool:
        return (self.params.format or ("native" if self.path.suffix.lower() == ".sfe" else "")) == "native"

    def continue_after_restart(self) -> None:
        """In a restarted worker: continue the ``.sfe`` file a killed predecessor was writing,
        from its last commit (file cut back there, checked by reading it), instead of replacing
        it. A file that cannot be continued (another format, or nothing committed yet) is moved
        aside, never overwritten."""
        entry = None
        if self._native() and self.journal_path.exists() and self.path.exists():
            entry = _last_journal_entry(self.journal_path)
        if entry is None:
            if self.path.exists():
                self._keep_predecessor_file()
            return
        from spikeflow.drivers.formats.native import NativeWriter

        self._writer = NativeWriter.continue_file(self.path, int(entry["offset"]))
        self._journal = open(self.journal_path, "a")
        for stream, seq in (entry.get("seqs") or {}).items():
            self._repeats.seen(stream, int(seq))
            self._committed[stream] = self._written[stream] = int(seq)
        self.continued_at = {"offset": int(entry["offset"]), "events": self._writer.events_written,
                             "seqs": dict(self._committed)}
        self._last_commit_ns = time.monotonic_ns()

    def _keep_predecessor_file(self) -> None:
        """Rename the file a killed predecessor left to the first free ``<stem>.partial-<k><suffix>``
        (same directory: an atomic rename), so the new recording does not overwrite it."""
        k = 1
        while (kept := self.path.with_name(f"{self.path.stem}.partial-{k}{self.path.suffix}")).exists():
            k += 1
        os.replace(self.path, kept)
        self.journal_path.unlink(missing_ok=True)
        self.kept_partial = str(kept)
        log.warning("record %s: the file of the killed worker is kept as %s; a new %s starts now",
                    self.name, kept, self.path)

    def _open(self):
        if self._writer is None:
            from spikeflow.drivers.recording import open_writer

            if self.path.exists() and not self.params.overwrite:  # (checked at build unless a journal was left)
                raise ParamError(f"nodes.{self.name}.params.path", f"{str(self.path)!r} exists and overwrite = false")
            self._writer = open_writer(self.path, self.sensor_size, format=self.params.format,
                                       extra={"recorded_by": f"spikeflow record node {self.name}"})
            if self._native():
                self._journal = open(self.journal_path, "w")
                self._commit()   # the header alone: a restart before the first block continues after it
            else:   # no commits: the journal only says that this file is being written
                self.journal_path.write_text(json.dumps({"format": type(self._writer).__name__}) + "\n")
        return self._writer

    def process(self, port, packet):
        stream, seq = packet.stream, packet.seq
        if not self._repeats.fresh(packet):
            return {}  # already in the file (written before a restart of this worker)
        ev = packet.events
        w = self._open()
        if self._journal is not None and stream not in self._committed:
            self._committed[stream] = -1   # a source feeding this file settles no further than it holds
        if ev is not None and len(ev):
            w.write(ev)
            self.events_written += len(ev)
        self.packets_written += 1
        self._written[stream] = seq
        if self._journal is not None and time.monotonic_ns() - self._last_commit_ns >= self.params.commit_ms * 1e6:
            self._commit()
        return {}

    def _commit(self) -> None:
        """Buffered events to the file as a block (a packet boundary), then a journal line."""
        w = self._writer
        w.flush()
        self._journal.write(json.dumps({"offset": w.tell(), "events": w.events_written,
                                        "seqs": self._written}) + "\n")
        self._journal.flush()
        self._committed.update(self._written)
        self._last_commit_ns = time.monotonic_ns()

    def committed(self) -> dict[str, int]:
        """Per stream received, the last seq whose events are in the file (-1: none yet); empty
        for formats that cannot be continued. Read from another thread (the worker's link)."""
        return dict(self._committed)

    def flush(self):
        w = self._open()
        if self._journal is not None:
            self._commit()
        elif hasattr(w, "flush"):
            w.flush()
        return {}

    def close(self):
        if self._writer is None:
            return   # never opened: a journal here is a predecessor's, not ours to remove
        self._writer.close()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.journal_path.unlink(missing_ok=True)   # the file is complete

    def stats(self):
        return {"path": str(self.path), "events_written": self.events_written, "packets_written": self.packets_written,
                "duplicates_dropped": self._repeats.dropped, "continued_at": self.continued_at,
                "kept_partial": self.kept_partial}


def _last_journal_entry(path: Path) -> dict | None:
    """The last complete line of a record journal (a kill may have cut the last one short)."""
    entry = None
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and isinstance(d.get("offset"), int):
            entry = d
    return entry


# -- print ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrintParams:
    every: int = param(1, "print one packet in every N", min=1)
    limit: int = param(0, "stop printing after this many lines (0 = no limit)", min=0)


@register
class Print(Node):
    """One line per packet on stdout: stream, seq, count, window, age; labels show their data."""

    type_name = "print"
    Params = PrintParams
    inputs = {"events_in": "any"}
    outputs = {}
    is_sink = True

    def setup(self, meta):
        self.seen = self.lines = 0
        return {}

    def process(self, port, packet):
        self.seen += 1
        p = self.params
        if (self.seen - 1) % p.every or (p.limit and self.lines >= p.limit):
            return {}
        age_us = (now_ns() - packet.sent_ns) / 1e3 if packet.sent_ns else math.nan
        extra = f" {packet.data}" if packet.data else ""
        print(f"[{self.name}] {packet.kind} {packet.stream} seq={packet.seq} n={packet.count} "
              f"t=[{packet.t0_us},{packet.t1_us}) age={age_us:.0f}us{extra}", file=sys.stdout, flush=True)
        self.lines += 1
        return {}

    def stats(self):
        return {"seen": self.seen, "lines": self.lines}
