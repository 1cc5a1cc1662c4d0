"""Latency histograms and counters: cheap to record, mergeable across workers and restarts.

A :class:`Histogram` counts values (ns) in log-spaced buckets, ``SUB`` buckets per power of two
(relative error <= 2**(1/SUB) - 1, about 9 % with SUB = 8), like HdrHistogram's log buckets.
Two histograms merge by adding bucket counts, so the daemon can combine a worker's histogram
with the one of its previous incarnation, or several sinks into one end-to-end figure.
Exact ``min``/``max``/``count``/``sum`` are kept beside the buckets.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

SUB = 8                      # buckets per octave
N_BUCKETS = 64 * SUB         # covers 1 .. 2**64 ns


def bucket_of(value_ns: int) -> int:
    """Bucket index of a value (values < 1 go to bucket 0)."""
    if value_ns < 1:
        return 0
    return min(N_BUCKETS - 1, int(math.log2(value_ns) * SUB))


def _bucket_starts() -> list[int]:
    """``starts[k - 1]`` = the smallest integer in bucket ``k`` or above, so that
    ``searchsorted(starts, v, "right") == bucket_of(v)`` for every integer ``v`` (no float
    logarithm; found by bisection on :func:`bucket_of` itself, so the two agree exactly)."""
    starts = []
    for k in range(1, N_BUCKETS):
        lo, hi = 1, 1 << 65           # bucket_of(lo) < k <= bucket_of(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if bucket_of(mid) >= k:
                hi = mid
            else:
                lo = mid
        starts.append(hi)
    return starts


_STARTS = np.array(_bucket_starts(), dtype=np.uint64)   # (the last start is below 2**64)


class _Totals(NamedTuple):
    """A histogram's figures: bucket counts and exact count, sum, min and max (replaced whole,
    never changed in place, so another thread can read one without a lock)."""

    counts: np.ndarray
    count: int = 0
    total: int = 0
    min: int = 0
    max: int = 0

    @classmethod
    def of(cls, values: list) -> _Totals:
        """The figures of ``values`` (ns; negatives count as 0: clocks of two processes may
        disagree by a few µs, never a negative latency)."""
        a = np.array(values, dtype=np.int64)
        np.maximum(a, 0, out=a)
        counts = np.bincount(np.searchsorted(_STARTS, a.view(np.uint64), side="right"), minlength=N_BUCKETS)
        hi = int(a.max()) if len(a) else 0
        total = int(a.sum()) if hi < 1 << 52 else sum(a.tolist())   # (no int64 overflow: len(a) <= FOLD)
        return cls(counts, len(a), total, int(a.min()) if len(a) else 0, hi)

    def plus(self, other: _Totals) -> _Totals:
        """Both together (what merging two histograms gives)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        return _Totals(self.counts + other.counts, self.count + other.count, self.total + other.total,
                       min(self.min, other.min), max(self.max, other.max))

    def percentile(self, q: float) -> float:
        """Value at percentile ``q`` (0..100): the upper bound of its bucket, clipped to [min, max]."""
        if self.count == 0:
            return 0.0
        if q >= 100:
            return float(self.max)
        rank = max(1, math.ceil(self.count * q / 100.0))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        return float(min(max(bucket_upper(idx), self.min), self.max))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


_EMPTY = _Totals(np.zeros(N_BUCKETS, np.int64))


def bucket_upper(index: int) -> float:
    """Upper bound of a bucket (the value reported for a percentile falling in it)."""
    return 2.0 ** ((index + 1) / SUB)


class Histogram:
    """Log-bucketed histogram of non-negative values in ns.

    Why deferred: ``record`` is paid per node and per packet on the node thread, so it only
    appends the value; every ``FOLD`` values are bucketed together with numpy, at about a third
    of the cost of bucketing each one in Python. Reads (also from another thread: the
    heartbeat's snapshot) never fold: they add a copy of the values still waiting to the folded
    figures, so they may miss values being folded at that instant, never count one twice. Only
    the recording thread folds.
    """

    __slots__ = ("_pending", "_state")
    FOLD = 1024

    def __init__(self):
        self._pending: list[int] = []
        self._state = _EMPTY

    def record(self, value_ns: int) -> None:
        pending = self._pending
        pending.append(value_ns)
        if len(pending) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        """Bucket the waiting values into new figures (recording thread only)."""
        pending = self._pending
        if pending:
            self._pending = []   # (first: a reader then sees these values in neither place, not twice)
            self._state = self._state.plus(_Totals.of(pending))

    def _view(self) -> _Totals:
        """The figures including the values still waiting, without changing anything."""
        state, pending = self._state, list(self._pending)
        return state.plus(_Totals.of(pending)) if pending else state

    counts = property(lambda self: self._view().counts.copy(), doc="Count per bucket (a copy).")
    count = property(lambda self: self._view().count)
    total = property(lambda self: self._view().total)
    min = property(lambda self: self._view().min)
    max = property(lambda self: self._view().max)
    mean = property(lambda self: self._view().mean)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other`` into this histogram (in place) and return self."""
        self._fold()
        self._state = self._state.plus(other._view())
        return self

    def percentile(self, q: float) -> float:
        """Value at percentile ``q`` (0..100): the upper bound of its bucket, clipped to [min, max]."""
        return self._view().percentile(q)

    def summary_us(self) -> dict[str, float]:
        """p50/p99/max/mean in µs (what status tables show)."""
        v = self._view()
        return {"count": v.count, "p50_us": v.percentile(50) / 1e3, "p99_us": v.percentile(99) / 1e3,
                "max_us": v.max / 1e3, "mean_us": v.mean / 1e3}

    # -- serialisation (JSON-friendly, sparse) -----------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        v = self._view()
        nz = np.flatnonzero(v.counts)
        return {"b": nz.tolist(), "c": v.counts[nz].tolist(), "n": v.count, "sum": v.total, "min": v.min,
                "max": v.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        h = cls()
        if d:
            idx = np.asarray(d.get("b", []), dtype=np.int64)
            cnt = np.asarray(d.get("c", []), dtype=np.int64)
            if len(idx) != len(cnt) or (len(idx) and (idx.min() < 0 or idx.max() >= N_BUCKETS)):
                raise ValueError("malformed histogram dict")
            counts = np.zeros(N_BUCKETS, dtype=np.int64)
            counts[idx] = cnt
            h._state = _Totals(counts, int(d.get("n", 0)), int(d.get("sum", 0)), int(d.get("min", 0)),
                               int(d.get("max", 0)))
        return h


class NodeMetrics:
    """What the runtime measures for one node: counters plus two latency histograms.

    ``latency`` is the age of the data when the node emits it (now - packet.sent_ns, the source
    wall-clock time), so at a sink it is the end-to-end latency; ``proc`` is the node's own
    processing time per packet.
    """

    COUNTERS = ("packets_in", "events_in", "packets_out", "events_out", "errors")

    def __init__(self):
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.latency = Histogram()
        self.proc = Histogram()
        self.first_ns = 0   # wall clock of the first and last packet through the node (throughput span)
        self.last_ns = 0

    def seen(self, now_ns: int) -> None:
        if not self.first_ns:
            self.first_ns = now_ns
        self.last_ns = now_ns

    def to_dict(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "latency": self.latency.to_dict(), "proc": self.proc.to_dict(),
                "span_ns": [self.first_ns, self.last_ns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeMetrics:
        m = cls()
        m.counters.update({k: int(v) for k, v in (d.get("counters") or {}).items()})
        m.latency = Histogram.from_dict(d.get("latency") or {})
        m.proc = Histogram.from_dict(d.get("proc") or {})
        m.first_ns, m.last_ns = (int(v) for v in (d.get("span_ns") or (0, 0)))
        return m

    def merge(self, other: NodeMetrics) -> NodeMetrics:
        for k, v in other.counters.items():
            self.counters[k] = self.counters.get(k, 0) + v
        self.latency.merge(other.latency)
        self.proc.merge(other.proc)
        firsts = [t for t in (self.first_ns, other.first_ns) if t]
        self.first_ns = min(firsts) if firsts else 0
        self.last_ns = max(self.last_ns, other.last_ns)
        return self


def merge_node_dicts(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """Merge two serialised NodeMetrics (e.g. a worker's previous incarnation and the current one)."""
    return NodeMetrics.from_dict(a or {}).merge(NodeMetrics.from_dict(b or {})).to_dict()


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def summarize(nodes: dict[str, dict[str, Any]], edges: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-node table rows and the end-to-end latency from raw node and edge metrics.

    ``nodes[name]`` holds serialised :class:`NodeMetrics` plus ``worker``, ``type``, ``stats``,
    ``sink``; ``edges["consumer.port"]`` the ``send``/``recv`` stats of a cross-worker edge.
    A node's ``queue`` is what waits on the edges into it (queued + in flight); its ``drops``
    are the drops of those edges plus any ``dropped``/``drops`` counter of the node itself; its
    ``duplicates`` the repeats of a resumed source that those edges and the node itself dropped
    (``duplicates_dropped``: exactly-once across restarts, not a loss).
    """
    rows = {}
    e2e = Histogram()
    for name, d in nodes.items():
        m = NodeMetrics.from_dict(d)
        queue = drops = duplicates = 0.0
        for key, sides in edges.items():
            if key.rpartition(".")[0] != name:
                continue
            send = sides.get("send") or {}
            queue += _num(send.get("queued")) + _num(send.get("in_flight"))
            drops += _num(send.get("dropped"))
            recv = sides.get("recv") or {}
            drops += _num(recv.get("missing")) if not send else 0.0
            duplicates += _num(recv.get("duplicates_dropped"))
        st = d.get("stats") or {}
        for k in ("dropped", "drops"):
            drops += _num(st.get(k))
        duplicates += _num(st.get("duplicates_dropped"))
        if d.get("sink"):
            e2e.merge(m.latency)
        rows[name] = {"worker": d.get("worker", ""), "type": d.get("type", ""), **m.counters,
                      "span_s": (m.last_ns - m.first_ns) / 1e9 if m.first_ns else 0.0,
                      "latency": m.latency.summary_us(), "proc": m.proc.summary_us(),
                      "queue": int(queue), "drops": int(drops), "duplicates": int(duplicates), "stats": st}
    return {"nodes": rows, "e2e": e2e.summary_us()}
