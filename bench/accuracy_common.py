"""Shared helpers of the accuracy benchmarks (bench/accuracy_nmnist.py, bench/accuracy_eth80.py)
and of tests/test_accuracy_small.py: encoders for event samples, layer-by-layer STDP training,
feature extraction, readout evaluation, cross-validation summaries and docs/results.md updates.

Everything is deterministic for a given seed: STDP visits samples in a seeded order, network
weights are seeded, readouts are seeded. Why not one big class: each step is reused on its own
(the tests run a tiny version of each pipeline, the benches compare variants of one step).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from spikeflow.nodes import encoder_kernels as ek
from spikeflow.nodes.encoders import dog_bank, dog_latency, encode_image, event_map
from spikeflow.nodes.readout import READOUTS
from spikeflow.nodes.snn import NO_SPIKE, Network, Stdp, grid_reduce

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
RESULTS_MD = REPO / "docs" / "results.md"


# -- encoders for one event sample (a whole short recording) ------------------------------------

def counts_by_polarity(events: np.ndarray, height: int, width: int, downsample: int = 1) -> np.ndarray:
    """Events -> (2, H, W) float event counts, channel = polarity (0 = OFF, 1 = ON)."""
    out = np.zeros((2, height, width))
    for p in (0, 1):
        ev = events[events["p"] == p]
        out[p] = event_map(ev, height, width, "count", downsample=downsample)
    return out


def encode_events(events: np.ndarray, sensor_size, mode: str = "dog", time_steps: int = 30,
                  dog: tuple[int, float, float] = (7, 1.0, 2.0), downsample: int = 1) -> tuple[np.ndarray, int]:
    """One event sample -> (int32 spike-time map, T) for :class:`Network`.

    ``mode``:
    - ``dog``: DoG on/off of the event-count map (both polarities), rank-order latency (2 ch);
    - ``polarity``: the OFF/ON count maps themselves, rank-order latency over both (2 ch): the
      sensor already did the on/off split, so the busiest pixels spike first;
    - ``dog4``: DoG on/off of each polarity's count map (4 ch).
    """
    w, h = int(sensor_size[0]) // downsample, int(sensor_size[1]) // downsample
    if mode == "dog":
        m = event_map(events, h, w, "count", downsample=downsample)
        return dog_latency(m, time_steps, dog_bank(*dog)), time_steps
    counts = counts_by_polarity(events, h, w, downsample)
    if mode == "polarity":
        return ek.rank_latency(np.ascontiguousarray(counts), int(time_steps), 0.0), time_steps
    if mode == "dog4":
        maps = [dog_latency(counts[p], time_steps, dog_bank(*dog)) for p in (0, 1)]
        return np.concatenate(maps).astype(np.int32), time_steps
    raise ValueError(f"unknown event encoding {mode!r}; expected dog, polarity or dog4")


def encoded_channels(mode: str) -> int:
    return 4 if mode == "dog4" else 2


def encode_images(images: np.ndarray, time_steps: int = 30, dog: tuple[int, float, float] = (7, 1.0, 2.0)):
    """Static frames -> list of (times, T): the paper's DoG on/off + intensity-to-latency."""
    return [encode_image(img, time_steps, *dog) for img in images]


# -- the spiking network --------------------------------------------------------------------------

@dataclass
class NetConfig:
    """Geometry and learning parameters of the two-layer extractor (Kheradpisheh 2018 defaults
    for MNIST: 30 maps 5×5 θ=15, pool 2, 100 maps 5×5 θ=10, pool 2)."""

    conv1: int = 30
    conv2: int = 100
    kernel1: int = 5
    kernel2: int = 5
    threshold1: float = 15.0
    threshold2: float = 10.0
    pool1: int = 2
    pool2: int = 2
    k1: int = 5
    r1: int = 2
    k2: int = 8
    r2: int = 1
    a_plus: float = 0.004
    a_minus: float = -0.003
    double_every: int = 500
    epochs1: int = 1
    epochs2: int = 1
    layers: int = 2  # 1: conv1/pool1 only


def build_network(in_channels: int, height: int, width: int, cfg: NetConfig, seed: int, time_steps: int = 30) -> Network:
    stdp = lambda k, r: Stdp(a_plus=cfg.a_plus, a_minus=cfg.a_minus, double_every=cfg.double_every, k=k, radius=r)
    net = Network.kheradpisheh((in_channels, height, width), time_steps=time_steps, conv1=cfg.conv1, conv2=cfg.conv2,
                               kernel1=cfg.kernel1, kernel2=cfg.kernel2, threshold1=cfg.threshold1,
                               threshold2=cfg.threshold2, pool1=cfg.pool1, pool2=cfg.pool2,
                               stdp1=stdp(cfg.k1, cfg.r1), stdp2=stdp(cfg.k2, cfg.r2), seed=seed)
    if cfg.layers == 1:
        net.layers = net.layers[:2]
    return net


def train_stdp(net: Network, encoded: Sequence, cfg: NetConfig, seed: int, max_samples: int | None = None) -> dict:
    """Unsupervised STDP, layer by layer (earlier layers frozen), each epoch in a fresh seeded
    order. Returns the convergence C after each epoch per layer (the paper's eq. 4)."""
    rng = np.random.default_rng(seed)
    n = len(encoded) if max_samples is None else min(max_samples, len(encoded))
    history = {}
    for layer, epochs in (("conv1", cfg.epochs1), ("conv2", cfg.epochs2)):
        if layer not in [c.name for c in net.conv_layers]:
            continue
        history[layer] = []
        for _ in range(epochs):
            order = rng.permutation(len(encoded))[:n]
            history[layer] += net.train_layer([encoded[i] for i in order], layer, epochs=1)
    return history


def extract(net: Network, encoded: Iterable, grid: tuple[int, int] = (2, 2), kind: str = "spikes",
            layer: str | None = None) -> np.ndarray:
    """Feature matrix (N, D) of :meth:`Network.features` for every encoded sample."""
    return np.stack([net.features(e, grid=grid, kind=kind, layer=layer) for e in encoded])


def forward_features(net: Network, encoded: Iterable, specs: dict[str, tuple[str, tuple[int, int], str]]) -> dict[str, np.ndarray]:
    """One forward pass per sample, several feature sets: ``specs`` maps a name to
    (layer, grid, kind) with kind "spikes" (count per map and grid cell), "first" (earliest spike
    as (T − t)/T, max per cell) or "potential" (max final potential of a conv layer per cell).
    Same definitions as :meth:`Network.features`, but the network runs once for all of them."""
    need_v = any(k == "potential" for _, _, k in specs.values())
    rows: dict[str, list] = {name: [] for name in specs}
    for e in encoded:
        out = net.forward(e, **({_potentials_kwarg(net): True} if need_v else {}))
        T = out.time_steps
        for name, (layer, grid, kind) in specs.items():
            if kind == "potential":
                maps, reduce = out.conv[layer].v_final, np.max
            else:
                t = out.times[layer]
                if kind == "spikes":
                    maps, reduce = (t != NO_SPIKE).astype(np.float64), np.sum
                elif kind == "first":
                    maps, reduce = np.where(t != NO_SPIKE, (T - t.astype(np.float64)) / T, 0.0), np.max
                else:
                    raise ValueError(f"unknown feature kind {kind!r}")
            rows[name].append(grid_reduce(maps, grid, reduce))
    return {name: np.stack(r) for name, r in rows.items()}


def _potentials_kwarg(net: Network) -> str:
    """Name of Network.forward's keep-potentials flag (renamed final_potentials -> potentials
    while the spiking core was being polished; accept both)."""
    import inspect

    params = inspect.signature(net.forward).parameters
    return "potentials" if "potentials" in params else "final_potentials"


def pooled_counts(events_list: Iterable[np.ndarray], sensor_size, grid: tuple[int, int]) -> np.ndarray:
    """No-network baseline: OFF/ON event counts summed over a spatial grid (N, 2·gy·gx)."""
    w, h = int(sensor_size[0]), int(sensor_size[1])
    out = []
    for ev in events_list:
        c = counts_by_polarity(ev, h, w)
        out.append(_grid_sum(c, grid))
    return np.stack(out)


def _grid_sum(maps: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    return grid_reduce(maps, grid, np.sum)


# -- readouts and summaries ----------------------------------------------------------------------

def evaluate(Xtr, ytr, Xte, yte, readouts: Sequence[str] = ("svm",), seed: int = 0, C: float = 1.0) -> dict[str, float]:
    """Test accuracy of each named readout (spikeflow.nodes.readout.READOUTS) fitted on train."""
    out = {}
    for name in readouts:
        kw = {"seed": seed}
        if name in ("svm", "logistic", "ridge"):
            kw["C"] = C
        r = READOUTS[name](**kw).fit(Xtr, ytr)
        out[name] = float(np.mean(r.predict(Xte) == np.asarray(yte)))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pct_pm(values: Sequence[float]) -> str:
    m, s = mean_std(values)
    return f"{100 * m:.1f} ± {100 * s:.1f}%"


class Timer:
    """Wall and CPU seconds of a block (the machine is shared: CPU time is the steadier one).
    CPU includes worker processes that ended and were waited for inside the block."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = self._cpu() - self.cpu0

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return time.process_time() + t.children_user + t.children_system

    def __str__(self):
        return f"{self.wall:.1f} s wall / {self.cpu:.1f} s CPU"


# -- docs/results.md ------------------------------------------------------------------------------

def update_results(key: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the block between ``<!-- BEGIN key -->`` and ``<!-- END key -->`` in results.md
    (appended when absent), so each bench rewrites only its own section and the lead's sections
    stay untouched."""
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Accuracy results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
