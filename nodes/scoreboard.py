"""``scoreboard``: live predictions against ground truth, and the run's summary at the end.

Inputs: ``labels_in`` (the classifier's label packets) and ``truth_in`` (the source's events;
only their window and ``data["truth"]`` are read — a labeled replay stamps each packet with the
class of the recording it comes from). Each labeled segment of the stream is scored like
``spikeflow eval`` does: the predicted class is the argmax of the scores summed over the
segment's decisions; latency is from the segment's onset to the first correct confident
decision (sensor time), and decision age is wall-clock time from source to scoreboard.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from spikeflow.service.packet import Packet, now_ns
from spikeflow.service.registry import register

from .base import Node, param


@dataclass(frozen=True)
class ScoreboardParams:
    show: str = param("changes", "print decisions: 'all', 'changes' (when the label changes), 'none'",
                      choices=("all", "changes", "none"))
    summary: bool = param(True, "print the summary when the stream ends")


@dataclass
class _Segment:
    truth: int
    name: str
    onset_us: int
    end_us: int


@register
class Scoreboard(Node):
    """Scores label packets against the ground truth carried by the source's packets."""

    type_name = "scoreboard"
    Params = ScoreboardParams
    inputs = {"labels_in": "labels", "truth_in": "any"}
    outputs = {}
    is_sink = True
    mixed_input_sizes = True

    def setup(self, meta):
        self.segments: list[_Segment] = []
        self.decisions: list[tuple[int, dict]] = []  # (t1_us, label data), scored at the end
        self.ages_us: list[float] = []
        self.classes: list[int] = []
        self.names: list[str] = []
        self._last_shown = None
        return {}

    def process(self, port, packet: Packet):
        if port == "truth_in":
            self._truth(packet)
        else:
            self._label(packet)
        return {}

    def _truth(self, packet: Packet) -> None:
        truth = packet.data.get("truth") if packet.data else None
        if truth is None:
            return
        label, name = int(truth["label"]), str(truth.get("name", truth["label"]))
        seg = self.segments[-1] if self.segments else None
        if seg is not None and seg.truth == label and int(truth.get("onset_us", seg.onset_us)) == seg.onset_us:
            seg.end_us = max(seg.end_us, packet.t1_us)
        else:
            self.segments.append(_Segment(label, name, int(truth.get("onset_us", packet.t0_us)), packet.t1_us))

    def _segment_at(self, t_us: int) -> _Segment | None:
        for seg in reversed(self.segments):
            if seg.onset_us < t_us:
                return seg
        return None

    def _label(self, packet: Packet) -> None:
        """Keep the decision; segments are matched by sensor time when scoring, because labels
        and truth may arrive on different edges in either order."""
        d = packet.data
        if packet.sent_ns:
            self.ages_us.append((now_ns() - packet.sent_ns) / 1e3)
        if not self.classes and "classes" in d:
            self.classes = list(d["classes"])
        self.decisions.append((packet.t1_us, d))
        self._show(packet, self._segment_at(packet.t1_us))

    def _show(self, packet: Packet, seg: _Segment | None) -> None:
        d = packet.data
        mode = self.params.show
        if mode == "none" or (mode == "changes" and d.get("name") == self._last_shown):
            return
        self._last_shown = d.get("name")
        truth = f"  truth: {seg.name}" if seg is not None else ""
        mark = "" if seg is None or d.get("uncertain") else ("  ✓" if d.get("class") == seg.truth else "  ✗")
        print(f"[{self.name}] t={packet.t1_us / 1e6:8.3f} s  {d.get('name', '?'):<28} "
              f"conf {d.get('confidence', 0):.2f}{truth}{mark}", file=sys.stdout, flush=True)

    def summary(self) -> dict:
        """Each segment's decisions are those whose window ends after its onset and before the
        next segment's onset; the predicted class is the argmax of their summed scores."""
        onsets = np.array([seg.onset_us for seg in self.segments], dtype=np.int64)
        scores: dict[int, np.ndarray] = {}
        first: dict[int, int] = {}
        counts = np.zeros(len(self.segments), dtype=np.int64)
        for t1, d in self.decisions:
            k = int(np.searchsorted(onsets, t1, side="left")) - 1  # last onset strictly before t1
            if k < 0:
                continue
            seg = self.segments[k]
            counts[k] += 1
            sc = np.asarray(d.get("scores", ()), dtype=float)
            if sc.size:
                scores[k] = sc if k not in scores else scores[k] + sc
            if not d.get("uncertain") and d.get("class") == seg.truth and k not in first:
                first[k] = t1
        scored = sorted(scores) if self.classes else []
        correct = [self.classes[int(np.argmax(scores[k]))] == self.segments[k].truth for k in scored]
        lat = [(first[k] - self.segments[k].onset_us) / 1e3 for k in scored if k in first]
        return {
            "segments": len(self.segments), "scored": len(scored),
            "accuracy": float(np.mean(correct)) if scored else None,
            "onset_to_first_correct_p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "onset_to_first_correct_p99_ms": float(np.percentile(lat, 99)) if lat else None,
            "decision_age_p50_us": float(np.percentile(self.ages_us, 50)) if self.ages_us else None,
            "decision_age_p99_us": float(np.percentile(self.ages_us, 99)) if self.ages_us else None,
            "decisions": int(counts.sum()),
        }

    def flush(self):
        if self.params.summary:
            s = self.summary()
            acc = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f} %"
            lat = ("n/a" if s["onset_to_first_correct_p50_ms"] is None else
                   f"p50 {s['onset_to_first_correct_p50_ms']:.0f} ms, p99 {s['onset_to_first_correct_p99_ms']:.0f} ms")
            age = ("n/a" if s["decision_age_p50_us"] is None else
                   f"p50 {s['decision_age_p50_us'] / 1e3:.2f} ms, p99 {s['decision_age_p99_us'] / 1e3:.2f} ms")
            print(f"[{self.name}] summary: {s['scored']} labeled recordings, accuracy {acc}; "
                  f"onset -> first correct decision {lat}; decision age (source -> label) {age}",
                  file=sys.stdout, flush=True)
        return {}

    def stats(self):
        return self.summary() if hasattr(self, "segments") else {}
