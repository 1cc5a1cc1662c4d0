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
        if self.params.model:
            self.load_state(dict(np.load(self.params.model, allow_pickle=False)), source=self.params.model)
        self._buckets: deque = deque(maxlen=self._n_buckets())  # closed buckets (None = silent)
        self._current: np.ndarray | None = None
        self._bucket_t0: int | None = None
        self._seq = 0
        self._size = SensorSize(0, 0, 0)
        self._n_decisions = 0
        self._n_uncertain = 0
        self._last_sent_ns = 0

    # -- lifecycle -----------------------------------------------------------------------
    def setup(self, meta):
        self._size = next(iter(meta.values())).sensor_size if meta else self._size
        return {"labels_out": PortMeta("labels", self._size)}

    def _n_buckets(self) -> int:
        return max(1, -(-self.params.window_us // self.params.stride_us))

    def process(self, port, packet: Packet):
        if self.readout is None:
            raise ModelError(f"classifier {self.name}: no readout loaded (set params.model or load a snapshot)")
        if packet.sensor_size.width:
            self._size = packet.sensor_size
        ev = packet.events
        stride = self.params.stride_us
        if self._bucket_t0 is None:
            self._bucket_t0 = (packet.t0_us // stride) * stride
            self._buckets = deque(maxlen=self._n_buckets())
        self._last_sent_ns = packet.sent_ns
        out, pos = [], 0
        while self._bucket_t0 + stride <= packet.t1_us:  # close every bucket this packet completes
            b_end = self._bucket_t0 + stride
            if ev is not None and len(ev):
                cut = int(np.searchsorted(ev["t"], b_end, side="left"))
                self._accumulate(ev[pos:cut])
                pos = cut
            self._buckets.append(self._current)
            self._current = None
            out.append(self._decide(b_end))
            self._bucket_t0 = b_end
        if ev is not None:
            self._accumulate(ev[pos:])
        return {"labels_out": out} if out else {}

    def _accumulate(self, part: np.ndarray) -> None:
        if len(part):
            feats = grid_counts(part, self._size, self.params.grid)
            self._current = feats if self._current is None else self._current + feats

    def _decide(self, t1_us: int) -> Packet:
        feats = [b for b in self._buckets if b is not None]
        x = np.sum(feats, axis=0) if feats else None
        n_spikes = int(x.sum()) if x is not None else 0
        classes = self.readout.classes
        if x is None or n_spikes < max(self.params.min_spikes, 1):
            probs = np.full(len(classes), 1.0 / len(classes))
        else:
            probs = softmax(self.readout.scores(x[None, :])[0], self.params.temperature)
        k = int(np.argmax(probs))
        conf = float(probs[k])
        uncertain = conf < self.params.confidence or n_spikes < self.params.min_spikes or x is None
        label = UNCERTAIN if uncertain else int(classes[k])
        names = self.params.class_names
        name = "uncertain" if uncertain else (names[k] if k < len(names) else str(classes[k]))
        self._n_decisions += 1
        self._n_uncertain += int(uncertain)
        pkt = Packet(kind="labels", stream=f"{self.name}.labels_out", seq=self._seq, sensor_size=self._size,
                     t0_us=int(t1_us - self._n_buckets() * self.params.stride_us), t1_us=int(t1_us),
                     sent_ns=self._last_sent_ns,
                     data={"class": label, "name": name, "confidence": conf, "uncertain": bool(uncertain),
                           "best": int(classes[k]), "classes": [int(c) for c in classes],
                           "scores": [float(p) for p in probs], "spikes": n_spikes})
        self._seq += 1
        return pkt

    def flush(self):
        """A last decision over the partial bucket, if it holds evidence."""
        if self.readout is None or self._current is None:
            return {}
        self._buckets.append(self._current)
        self._current = None
        return {"labels_out": [self._decide(self._bucket_t0 + self.params.stride_us)]}

    # -- state -----------------------------------------------------------------------------
    def state(self):
        return {} if self.readout is None else self.readout.state()

    def load_state(self, state, source: str = "<snapshot>"):
        self.readout = Readout.from_state(state, source=source)

    def stats(self):
        return {"decisions": self._n_decisions, "uncertain": self._n_uncertain}
