"""Classifier nodes: spike features per window → label packets, with temporal evidence accumulation.

``classifier`` keeps per-bucket feature vectors (``stride_us`` buckets, summed over the last
``window_us``), and after each completed bucket publishes a decision: class, confidence (softmax
of the readout scores), per-class scores and the evidence window. Below ``confidence`` (or with
fewer than ``min_spikes`` spikes of evidence) the decision is *uncertain* (class −1) rather than
a guess.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from spikeflow.service.errors import ModelError
from spikeflow.service.events import SensorSize
from spikeflow.service.packet import Packet
from spikeflow.service.registry import register

from .base import Node, PortMeta, param
from .readout import Readout, grid_counts, softmax

UNCERTAIN = -1


@dataclass(frozen=True)
class ClassifierParams:
    model: str = param("", "npz file with the readout state (from `spikeflow train`); empty = load via load_state")
    grid: tuple[int, int] = param((1, 1), "spatial grid (gx, gy) of the spike-count features")
    window_us: int = param(300_000, "evidence window: features summed over this span", min=1)
    stride_us: int = param(50_000, "a decision after every stride", min=1)
    confidence: float = param(0.5, "below this softmax confidence the outcome is 'uncertain'", min=0.0, max=1.0)
    temperature: float = param(1.0, "softmax temperature applied to readout scores", min=1e-6)
    min_spikes: int = param(1, "fewer spikes of evidence than this is 'uncertain'", min=0)
    class_names: tuple[str, ...] = param((), "names of the classes, in the readout's class order")


class EvidenceWindows:
    """Per-stride buckets of grid spike counts, summed over the last ``window_us``: the features a
    classifier decides on after every completed stride. Training uses the same class, so the
    features a readout is fitted on are exactly the ones it sees live."""

    def __init__(self, grid: tuple[int, int], window_us: int, stride_us: int):
        self.grid = tuple(grid)
        self.stride_us = int(stride_us)
        self.n_buckets = max(1, -(-int(window_us) // self.stride_us))
        self.window_us = self.n_buckets * self.stride_us
        self._buckets: deque = deque(maxlen=self.n_buckets)  # closed buckets (None = silent)
        self._current: np.ndarray | None = None
        self._bucket_t0: int | None = None
        self.size = SensorSize(0, 0, 0)

    def push(self, events: np.ndarray | None, t0_us: int, t1_us: int, sensor_size=None) -> list[tuple[int, np.ndarray | None]]:
        """Add a packet's events; return ``(decision time, summed features or None)`` for every
        stride the packet completes (``t1_us`` is the packet's exclusive end)."""
        if sensor_size is not None and sensor_size[0]:
            self.size = SensorSize(*sensor_size)
        stride = self.stride_us
        if self._bucket_t0 is None:
            self._bucket_t0 = (int(t0_us) // stride) * stride
        out, pos = [], 0
        while self._bucket_t0 + stride <= t1_us:
            b_end = self._bucket_t0 + stride
            if events is not None and len(events):
                cut = int(np.searchsorted(events["t"], b_end, side="left"))
                self._accumulate(events[pos:cut])
                pos = cut
            self._buckets.append(self._current)
            self._current = None
            out.append((b_end, self.features()))
            self._bucket_t0 = b_end
        if events is not None:
            self._accumulate(events[pos:])
        return out

    def flush(self) -> list[tuple[int, np.ndarray | None]]:
        """Close the partial bucket if it holds evidence."""
        if self._current is None:
            return []
        self._buckets.append(self._current)
        self._current = None
        return [(self._bucket_t0 + self.stride_us, self.features())]

    def features(self) -> np.ndarray | None:
        feats = [b for b in self._buckets if b is not None]
        return np.sum(feats, axis=0) if feats else None

    def _accumulate(self, part: np.ndarray) -> None:
        if len(part):
            f = grid_counts(part, self.size, self.grid)
            self._current = f if self._current is None else self._current + f


@register
class Classifier(Node):
    """Sliding-window classifier over spike (or event) packets; emits ``labels`` packets."""

    type_name = "classifier"
    Params = ClassifierParams
    inputs = {"spikes_in": "any"}
    outputs = {"labels_out": "labels"}

    def __init__(self, name, params=None):
        super().__init__(name, params)
        self.readout: Readout | None = None
        self._state_names: tuple[str, ...] = ()
        if self.params.model:
            with np.load(self.params.model, allow_pickle=False) as z:
                self.load_state({k: z[k] for k in z.files}, source=self.params.model)
        p = self.params
        self.evidence = EvidenceWindows(p.grid, p.window_us, p.stride_us)
        self._seq = 0
        self._n_decisions = 0
        self._n_uncertain = 0
        self._last_sent_ns = 0

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names in the readout's class order: from params, else from the loaded state."""
        return self.params.class_names or self._state_names

    def setup(self, meta):
        size = next(iter(meta.values())).sensor_size if meta else SensorSize(0, 0, 0)
        self.evidence.size = size
        return {"labels_out": PortMeta("labels", size)}

    def process(self, port, packet: Packet):
        if self.readout is None:
            raise ModelError(f"classifier {self.name}: no readout loaded (set params.model or load a snapshot)")
        self._last_sent_ns = packet.sent_ns
        done = self.evidence.push(packet.events, packet.t0_us, packet.t1_us, packet.sensor_size)
        return {"labels_out": [self._decide(t1, x) for t1, x in done]} if done else {}

    def flush(self):
        """A last decision over the partial bucket, if it holds evidence."""
        if self.readout is None:
            return {}
        done = self.evidence.flush()
        return {"labels_out": [self._decide(t1, x) for t1, x in done]} if done else {}

    def decide(self, x: np.ndarray | None) -> dict:
        """The decision on one feature vector: class (or UNCERTAIN), confidence, scores."""
        classes = self.readout.classes
        n_spikes = int(x.sum()) if x is not None else 0
        if x is None or n_spikes < max(self.params.min_spikes, 1):
            probs = np.full(len(classes), 1.0 / len(classes))
        else:
            probs = softmax(self.readout.scores(x[None, :])[0], self.params.temperature)
        k = int(np.argmax(probs))
        conf = float(probs[k])
        uncertain = x is None or conf < self.params.confidence or n_spikes < self.params.min_spikes
        names = self.class_names
        return {"class": UNCERTAIN if uncertain else int(classes[k]),
                "name": "uncertain" if uncertain else (names[k] if k < len(names) else str(classes[k])),
                "confidence": conf, "uncertain": bool(uncertain), "best": int(classes[k]),
                "classes": [int(c) for c in classes], "scores": [float(v) for v in probs], "spikes": n_spikes}

    def _decide(self, t1_us: int, x: np.ndarray | None) -> Packet:
        data = self.decide(x)
        self._n_decisions += 1
        self._n_uncertain += int(data["uncertain"])
        pkt = Packet(kind="labels", stream=f"{self.name}.labels_out", seq=self._seq, sensor_size=self.evidence.size,
                     t0_us=int(t1_us - self.evidence.window_us), t1_us=int(t1_us), sent_ns=self._last_sent_ns,
                     data=data)
        self._seq += 1
        return pkt

    # -- state -----------------------------------------------------------------------------
    def state(self):
        if self.readout is None:
            return {}
        return {**self.readout.state(), "class_names": np.array(self.class_names, dtype=str)}

    def load_state(self, state, source: str = "<snapshot>"):
        self.readout = Readout.from_state(state, source=source)
        names = state.get("class_names")
        self._state_names = tuple(str(n) for n in names) if names is not None else ()

    def stats(self):
        return {"decisions": self._n_decisions, "uncertain": self._n_uncertain}
