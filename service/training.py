"""Training and evaluation of a graph's spiking layers and classifier on labeled recordings.

The graph file names the nodes (a source, an encoder, ``snn_conv``/``snn_pool`` layers, one
``classifier``); training runs *those nodes* in-process (:class:`LocalChain`), so the model is
exactly what the daemon runs:

1. samples are laid end to end on one sensor clock (``gap_us`` of silence between them, longer
   than the classifier's window, so evidence never mixes two samples) and cut into packets;
2. each ``snn_conv`` layer in turn learns by unsupervised STDP (``learn`` on for that layer
   only, earlier layers frozen), ``epochs`` passes over the training samples;
3. the classifier's evidence windows are collected over every training sample (the same
   :class:`EvidenceWindows` the node uses live) and the readout is fitted;
4. everything goes into a model bundle (:mod:`spikeflow.service.model`).

Evaluation replays the test samples through the trained chain including the classifier, and
reports per-sample accuracy (scores summed over the sample's decisions), per-decision accuracy,
the confusion matrix, and the latency from gesture onset to the first correct confident decision.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from spikeflow.drivers.datasets import Dataset, Sample
from spikeflow.nodes.base import PortMeta
from spikeflow.nodes.classifiers import UNCERTAIN, EvidenceWindows
from spikeflow.nodes.readout import READOUTS
from spikeflow.service.errors import GraphError, ModelError
from spikeflow.service.events import EVENT_DTYPE, SensorSize
from spikeflow.service.graph import GraphSpec, load_graph
from spikeflow.service.model import Bundle, load_bundle, save_bundle
from spikeflow.service.packet import Packet
from spikeflow.service.pipeline import LocalChain

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``."""


@dataclass
class TrainConfig:
    epochs: int = 1              # STDP passes per conv layer
    readout: str = "logistic"    # a READOUTS key
    readout_C: float = 1.0
    seed: int = 0
    packet_us: int = 10_000      # how samples are cut into packets (as a replay would)
    gap_us: int = 0              # silence between samples; 0 = the classifier's window + a stride
    max_samples: int = 0         # 0 = all training samples


@dataclass
class GraphRoles:
    """Where the pieces of a trainable graph sit."""

    source: str
    source_port: str
    convs: list[str]
    classifier: str
    classifier_input: tuple[str, str]


def graph_roles(spec: GraphSpec) -> GraphRoles:
    sources = [n for n in spec.order if spec.nodes[n].cls.is_source]
    if len(sources) != 1:
        raise GraphError("nodes", f"a trainable graph needs exactly one source node, found {sources}")
    classifiers = [n for n in spec.order if spec.nodes[n].type == "classifier"]
    if len(classifiers) != 1:
        raise GraphError("nodes", f"a trainable graph needs exactly one classifier node, found {classifiers}")
    src = sources[0]
    cls = classifiers[0]
    inp = next(iter(spec.nodes[cls].inputs.values()), None)
    if inp is None:
        raise GraphError(f"nodes.{cls}.inputs", "the classifier has no input")
    return GraphRoles(src, next(iter(spec.nodes[src].cls.outputs)),
                      [n for n in spec.order if spec.nodes[n].type == "snn_conv"], cls, (inp.node, inp.out_port))


@dataclass
class Laid:
    """One sample placed on the shared sensor clock."""

    sample: Sample
    onset_us: int
    end_us: int


ALIGN_US = 100_000
"""Every sample starts on a multiple of this on the stream clock, so encoder and classifier
windows (divisors of 100 ms by default) fall on a sample the same way whatever came before it:
training is reproducible and a resumed run equals an uninterrupted one."""


class Clock:
    """The shared sensor clock of a training/evaluation stream: every pass continues where the
    previous one ended, because the nodes keep time-ordered state (windows, filters)."""

    def __init__(self):
        self.t_next_us = 0
        self.seq = 0


def lay_out(samples: Iterable[Sample], packet_us: int, gap_us: int, clock: Clock | None = None
            ) -> Iterator[tuple[Laid, list[Packet]]]:
    """Samples end to end on one clock, each cut into ``packet_us`` packets (views), followed by
    one empty packet covering the gap so downstream windows complete."""
    clock = clock or Clock()
    t_next, seq = clock.t_next_us, clock.seq
    for s in samples:
        ev = s.events
        t_first = int(ev["t"][0]) if len(ev) else 0
        span = (int(ev["t"][-1]) - t_first + 1) if len(ev) else packet_us
        shifted = np.empty(len(ev), EVENT_DTYPE)
        shifted[:] = ev
        shifted["t"] += t_next - t_first
        onset, end = t_next, t_next + span
        edges = np.arange(onset, end + packet_us, packet_us, dtype=np.int64)
        idx = np.searchsorted(shifted["t"], edges, side="left")
        packets = []
        for k in range(len(edges) - 1):
            packets.append(Packet(kind="events", stream="train", seq=seq, sensor_size=s.sensor_size,
                                  t0_us=int(edges[k]), t1_us=int(edges[k + 1]), sent_ns=time.time_ns(),
                                  events=shifted[idx[k]:idx[k + 1]]))
            seq += 1
        gap_end = int(edges[-1]) + gap_us
        packets.append(Packet(kind="events", stream="train", seq=seq, sensor_size=s.sensor_size,
                              t0_us=int(edges[-1]), t1_us=gap_end, sent_ns=time.time_ns(),
                              events=shifted[len(shifted):]))
        seq += 1
        t_next = -(-gap_end // ALIGN_US) * ALIGN_US
        if t_next > gap_end:  # silence up to the aligned onset of the next sample
            packets.append(Packet(kind="events", stream="train", seq=seq, sensor_size=s.sensor_size,
                                  t0_us=gap_end, t1_us=t_next, sent_ns=time.time_ns(),
                                  events=shifted[len(shifted):]))
            seq += 1
        clock.t_next_us, clock.seq = t_next, seq
        yield Laid(s, onset, end), packets


def _samples(ds: Dataset, limit: int) -> list[Sample]:
    """All samples, or ``limit`` of them balanced over the classes (round robin, in data order)."""
    keep = None
    if limit:
        labels = np.asarray(ds.labels())
        per_class = [list(np.nonzero(labels == c)[0]) for c in np.unique(labels)]
        order = [i for rank in range(max(map(len, per_class), default=0)) for idx in per_class
                 if rank < len(idx) for i in [idx[rank]]]
        keep = set(order[:limit])
    out = [s for i, s in enumerate(ds) if keep is None or i in keep]
    if not out:
        raise ModelError("the training data holds no samples")
    return out


def _chain(spec: GraphSpec, roles: GraphRoles, size: SensorSize, with_classifier: bool,
           taps: list[tuple[str, str]]) -> LocalChain:
    return LocalChain(spec, {(roles.source, roles.source_port): PortMeta("events", size)}, taps=taps,
                      exclude=() if with_classifier else (roles.classifier,))


def _gap(spec: GraphSpec, roles: GraphRoles, cfg: TrainConfig) -> int:
    p = spec.nodes[roles.classifier].params
    return cfg.gap_us or (p.window_us + p.stride_us)


@dataclass
class TrainResult:
    bundle_path: str
    n_samples: int
    n_windows: int
    convergence: dict[str, list[float]]
    train_accuracy: float
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(out_path: str | Path) -> Path:
    """Where training keeps its latest checkpoint (a bundle without readout) beside ``out_path``."""
    p = Path(out_path)
    return p.with_name(p.stem + ".checkpoint.npz")


def train(graph: str, data: Dataset, out_path: str, cfg: TrainConfig = TrainConfig(), *,
          data_spec: str = "", overrides: list[str] | None = None,
          progress: Progress | None = None, resume: str | None = None) -> TrainResult:
    """Layer-by-layer STDP, then the readout; writes a model bundle to ``out_path``.

    After every STDP epoch the learned weights are checkpointed (atomically) to
    :func:`checkpoint_path`; an interrupted run (Ctrl-C) leaves that checkpoint, and
    ``resume=`` continues from it, skipping the epochs it already holds.
    """
    t_start = time.perf_counter()
    spec = load_graph(graph, overrides=overrides)
    roles = graph_roles(spec)
    samples = _samples(data, cfg.max_samples)
    size = samples[0].sensor_size
    gap = _gap(spec, roles, cfg)
    progress = progress or (lambda *a: None)
    chain = _chain(spec, roles, size, with_classifier=False, taps=[roles.classifier_input])
    convergence: dict[str, list[float]] = {}
    clock = Clock()
    done_epochs: dict[str, int] = {}
    ckpt = checkpoint_path(out_path)
    graph_text = graph_source_text(graph)
    if resume:
        prior = load_bundle(resume)
        for name, node in chain.nodes.items():
            st = prior.node_state(name)
            if st:
                node.load_state(st)
        done_epochs = {k: int(v) for k, v in prior.meta.get("done_epochs", {}).items()}
        convergence = {k: list(v) for k, v in prior.meta.get("convergence", {}).items()}
    try:
        # 1-2. unsupervised STDP, one layer at a time
        for layer in roles.convs:
            for name in roles.convs:
                chain.node(name).configure(learn=(name == layer))
            convergence.setdefault(layer, [])
            for epoch in range(done_epochs.get(layer, 0), cfg.epochs):
                for i, (laid, packets) in enumerate(lay_out(samples, cfg.packet_us, gap, clock)):
                    for p in packets:
                        chain.feed(roles.source, roles.source_port, p)
                    chain.clear_taps()
                    progress(f"stdp {layer} epoch {epoch + 1}/{cfg.epochs}", i + 1, len(samples))
                chain.flush()
                chain.clear_taps()
                convergence[layer].append(float(chain.node(layer).stats().get("convergence", np.nan)))
                done_epochs[layer] = epoch + 1
                save_bundle(ckpt, graph_text, _chain_state(chain),
                            {"stage": "stdp", "done_epochs": done_epochs, "convergence": convergence,
                             "data": data_spec, "config": asdict(cfg), "overrides": list(overrides or [])})
        for name in roles.convs:
            chain.node(name).configure(learn=False)
        # 3. readout on the classifier's evidence windows
        X, y = _collect_features(chain, spec, roles, samples, cfg, gap, progress, clock)
        readout = READOUTS[cfg.readout](seed=cfg.seed, C=cfg.readout_C)
        readout.fit(X, y)
        train_acc = float((readout.predict(X) == y).mean())
        state = _chain_state(chain)
    finally:
        chain.close()
    classes = getattr(data, "classes", ())
    base = getattr(data, "label_base", 0)
    names = [classes[int(c) - base] if 0 <= int(c) - base < len(classes) else str(int(c)) for c in readout.classes]
    state.update({f"{roles.classifier}/{k}": v for k, v in readout.state().items()})
    state[f"{roles.classifier}/class_names"] = np.array(names, dtype=str)
    meta = {"data": data_spec, "config": asdict(cfg), "n_train_samples": len(samples),
            "n_train_windows": int(len(y)), "train_window_accuracy": train_acc, "classes": names,
            "labels": [int(c) for c in readout.classes], "convergence": convergence,
            "roles": asdict(roles), "sensor_size": list(size), "overrides": list(overrides or [])}
    save_bundle(out_path, graph_text, state, meta)
    if ckpt.exists():
        ckpt.unlink()
    return TrainResult(str(out_path), len(samples), int(len(y)), convergence, train_acc,
                       time.perf_counter() - t_start, meta)


def _chain_state(chain: LocalChain) -> dict[str, np.ndarray]:
    return {f"{n}/{k}": v for n, node in chain.nodes.items() for k, v in (node.state() or {}).items()}


def graph_source_text(graph: str) -> str:
    """The TOML text of a graph given as a path or as text (the bundle keeps text + overrides)."""
    p = Path(graph)
    if "\n" not in graph and p.suffix == ".toml":
        if not p.exists():
            raise GraphError("graph", f"{p}: no such graph file")
        return p.read_text()
    return graph


def bundle_graph(bundle: Bundle) -> GraphSpec:
    """The bundle's graph with the overrides it was trained with."""
    return load_graph(bundle.graph_text, overrides=bundle.meta.get("overrides") or None)


def _collect_features(chain, spec, roles, samples, cfg, gap, progress, clock):
    p = spec.nodes[roles.classifier].params
    X, y = [], []
    tap = chain.taps[roles.classifier_input]
    for i, (laid, packets) in enumerate(lay_out(samples, cfg.packet_us, gap, clock)):
        ev = EvidenceWindows(p.grid, p.window_us, p.stride_us)
        rows = []
        for pk in packets:
            chain.feed(roles.source, roles.source_port, pk)
            for sp in tap:
                rows += ev.push(sp.events, sp.t0_us, sp.t1_us, sp.sensor_size)
            tap.clear()
        rows += ev.flush()
        for t1, x in rows:
            if x is not None and x.sum() >= max(p.min_spikes, 1) and laid.onset_us < t1 <= laid.end_us + p.stride_us:
                X.append(x)
                y.append(laid.sample.label)
        progress("features", i + 1, len(samples))
    if not X:
        raise ModelError("no training window produced any spike at the classifier input: "
                         "lower the conv thresholds or check the encoder")
    return np.array(X), np.array(y)


# -- evaluation ------------------------------------------------------------------------------

@dataclass
class SampleResult:
    id: str
    label: int
    predicted: int
    decisions: int
    confident_correct: int
    confident_wrong: int
    uncertain: int
    first_correct_ms: float | None


@dataclass
class EvalResult:
    accuracy: float
    decision_accuracy: float
    classes: list[int]
    class_names: list[str]
    confusion: list[list[int]]
    per_class_accuracy: dict[str, float]
    latency_ms: dict[str, float | None]
    throughput: dict[str, float]
    samples: list[SampleResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


def evaluate(model: str | Bundle, data: Dataset, *, packet_us: int = 10_000, max_samples: int = 0,
             progress: Progress | None = None) -> EvalResult:
    """Replay ``data`` through the bundle's graph (in-process) and score the classifier."""
    bundle = model if isinstance(model, Bundle) else load_bundle(model)
    spec = bundle_graph(bundle)
    roles = graph_roles(spec)
    samples = _samples(data, max_samples)
    size = samples[0].sensor_size
    out_tap = (roles.classifier, "labels_out")
    chain = _chain(spec, roles, size, with_classifier=True, taps=[out_tap])
    progress = progress or (lambda *a: None)
    for name, node in chain.nodes.items():
        st = bundle.node_state(name)
        if st:
            node.load_state(st)
    for name in roles.convs:
        chain.node(name).configure(learn=False)
    cls_node = chain.node(roles.classifier)
    classes = [int(c) for c in cls_node.readout.classes]
    names = list(cls_node.class_names) or [str(c) for c in classes]
    gap = _gap(spec, roles, TrainConfig())
    results: list[SampleResult] = []
    n_events, busy_s, sensor_s = 0, 0.0, 0.0
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    try:
        for i, (laid, packets) in enumerate(lay_out(samples, packet_us, gap)):
            t0 = time.perf_counter()
            for pk in packets:
                chain.feed(roles.source, roles.source_port, pk)
            busy_s += time.perf_counter() - t0
            n_events += len(laid.sample.events)
            sensor_s += (laid.end_us - laid.onset_us) / 1e6
            labels = [p for p in chain.taps[out_tap] if laid.onset_us < p.t1_us <= laid.end_us + gap]
            chain.clear_taps()
            results.append(_score_sample(laid, labels, classes))
            if laid.sample.label in classes:
                confusion[classes.index(laid.sample.label), classes.index(results[-1].predicted)] += 1
            progress("eval", i + 1, len(samples))
    finally:
        chain.close()
    acc = float(np.mean([r.predicted == r.label for r in results]))
    confident = sum(r.confident_correct + r.confident_wrong for r in results)
    dec_acc = float(sum(r.confident_correct for r in results) / confident) if confident else 0.0
    per_class = {names[k]: float(confusion[k, k] / confusion[k].sum()) for k in range(len(classes)) if confusion[k].sum()}
    lat = [r.first_correct_ms for r in results if r.first_correct_ms is not None]
    latency = {"onset_to_first_correct_p50_ms": float(np.percentile(lat, 50)) if lat else None,
               "onset_to_first_correct_p99_ms": float(np.percentile(lat, 99)) if lat else None,
               "samples_with_correct_decision": len(lat)}
    throughput = {"events": n_events, "busy_s": busy_s, "events_per_s": n_events / busy_s if busy_s else 0.0,
                  "sensor_s": sensor_s, "real_time_factor": sensor_s / busy_s if busy_s else 0.0}
    return EvalResult(acc, dec_acc, classes, names, confusion.tolist(), per_class, latency, throughput, results,
                      {"model_meta": bundle.meta, "n_samples": len(results)})


def _score_sample(laid: Laid, labels: list[Packet], classes: list[int]) -> SampleResult:
    scores = np.zeros(len(classes))
    cc = cw = unc = 0
    first = None
    for p in labels:
        d = p.data
        scores += np.asarray(d["scores"])
        if d["uncertain"]:
            unc += 1
        elif d["class"] == laid.sample.label:
            cc += 1
            if first is None:
                first = (p.t1_us - laid.onset_us) / 1000.0
        else:
            cw += 1
    pred = classes[int(np.argmax(scores))] if labels else UNCERTAIN
    return SampleResult(laid.sample.id, int(laid.sample.label), int(pred), len(labels), cc, cw, unc, first)
