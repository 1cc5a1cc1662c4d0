"""Readout of spiking feature maps and the classifiers that turn them into labels.

Features (Kheradpisheh et al. 2018 use global max pooling of the last layer; we generalise to a
spatial grid): for a spike array whose ``p`` is the feature-map index, ``grid_counts`` counts
spikes per (map, grid cell) and ``grid_first_spike`` keeps the earliest spike per cell as a
latency code (earlier = stronger).

Classifiers share one interface — ``fit(X, y)``, ``scores(X)`` (higher = more likely, per class),
``predict(X)``, ``state()``/``from_state()`` as plain arrays (saved in npz, never pickled):

- :class:`LinearReadout`: linear SVM / logistic regression / ridge, fitted with scikit-learn,
  applied with numpy (sklearn is not needed at inference).
- :class:`ClassResponseReadout`: Diehl & Cook 2015 label assignment — each unit is assigned the
  class it responds to most on training data; a sample's class is the one whose assigned units
  respond most on average.
- :class:`RStdpReadout`: Mozafari et al. 2018 reward-modulated STDP decision layer — a fully
  spiking option: integrate-and-fire decision neurons, the earliest to fire decides, and the
  weights follow STDP when the decision is right and anti-STDP when it is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikeflow.service.errors import ModelError


# --- features -----------------------------------------------------------------------------

def grid_cells(x: np.ndarray, y: np.ndarray, width: int, height: int, grid: tuple[int, int]) -> np.ndarray:
    """Grid cell index (row-major, ``grid = (gx, gy)``) of each position in a ``width``×``height`` map."""
    gx, gy = grid
    cx = (x.astype(np.int64) * gx) // max(width, 1)
    cy = (y.astype(np.int64) * gy) // max(height, 1)
    return np.clip(cy, 0, gy - 1) * gx + np.clip(cx, 0, gx - 1)


def grid_counts(spikes: np.ndarray, sensor_size, grid: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Spike counts per (feature map, grid cell), flattened map-major: shape ``(C * gx * gy,)``.

    ``sensor_size`` is (W, H, C) of the spike array's coordinate space (C = number of maps).
    """
    w, h, c = (int(v) for v in sensor_size)
    n_cells = grid[0] * grid[1]
    if len(spikes) == 0:
        return np.zeros(c * n_cells, dtype=np.float64)
    p = spikes["p"].astype(np.int64)
    if p.min() < 0 or p.max() >= c:
        raise ValueError(f"spike map index out of range [0, {c}): min {p.min()}, max {p.max()}")
    idx = p * n_cells + grid_cells(spikes["x"], spikes["y"], w, h, grid)
    return np.bincount(idx, minlength=c * n_cells).astype(np.float64)


def grid_first_spike(spikes: np.ndarray, sensor_size, grid: tuple[int, int] = (1, 1),
                     t0_us: int = 0, horizon_us: int = 1) -> np.ndarray:
    """Latency code per (map, cell): ``1 - (t_first - t0) / horizon`` clipped to [0, 1], 0 = silent."""
    w, h, c = (int(v) for v in sensor_size)
    n_cells = grid[0] * grid[1]
    out = np.full(c * n_cells, np.inf)
    if len(spikes):
        idx = spikes["p"].astype(np.int64) * n_cells + grid_cells(spikes["x"], spikes["y"], w, h, grid)
        np.minimum.at(out, idx, spikes["t"].astype(np.float64))
    code = 1.0 - (out - t0_us) / max(horizon_us, 1)
    code[~np.isfinite(out)] = 0.0
    return np.clip(code, 0.0, 1.0)


def normalise_counts(X: np.ndarray) -> np.ndarray:
    """log1p of counts, then each sample scaled to unit L2 norm (robust to event-rate changes)."""
    X = np.log1p(np.asarray(X, dtype=np.float64))
    norm = np.linalg.norm(X, axis=-1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / max(temperature, 1e-12)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --- classifiers ----------------------------------------------------------------------------

class Readout:
    """Common interface; ``kind`` names the subclass in saved state."""

    kind = ""
    classes: np.ndarray

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Readout":
        raise NotImplementedError

    def scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.scores(np.atleast_2d(X)), axis=1)]

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def from_state(state: dict[str, np.ndarray], source: str = "<state>") -> "Readout":
        """Rebuild any readout from :meth:`state` output (``source`` names the file in errors)."""
        try:
            kind = str(np.asarray(state["readout_kind"]))
        except KeyError:
            raise ModelError(f"{source}: missing key 'readout_kind'") from None
        for cls in (LinearReadout, ClassResponseReadout, RStdpReadout):
            if cls.kind == kind:
                try:
                    return cls._from_state(state)
                except KeyError as e:
                    raise ModelError(f"{source}: readout {kind!r} lacks key {e.args[0]!r}") from None
        raise ModelError(f"{source}: unknown readout_kind {kind!r}")


@dataclass
class LinearReadout(Readout):
    """Linear classifier on normalised features; ``model`` in {"svm", "logistic", "ridge"}."""

    model: str = "svm"
    C: float = 1.0
    seed: int = 0
    kind = "linear"

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression, RidgeClassifier
        from sklearn.svm import LinearSVC

        Xn = normalise_counts(X)
        self.mean_ = Xn.mean(axis=0)
        self.scale_ = Xn.std(axis=0)
        self.scale_[self.scale_ < 1e-12] = 1.0
        Z = (Xn - self.mean_) / self.scale_
        if self.model == "svm":
            clf = LinearSVC(C=self.C, random_state=self.seed, max_iter=20000)
        elif self.model == "logistic":
            clf = LogisticRegression(C=self.C, max_iter=5000, random_state=self.seed)
        elif self.model == "ridge":
            clf = RidgeClassifier(alpha=1.0 / max(self.C, 1e-12))
        else:
            raise ValueError(f"unknown linear model {self.model!r}; expected svm, logistic or ridge")
        clf.fit(Z, np.asarray(y))
        self.classes = np.asarray(clf.classes_)
        coef = np.atleast_2d(clf.coef_)
        icpt = np.atleast_1d(clf.intercept_)
        if len(self.classes) == 2 and coef.shape[0] == 1:  # binary: expand to one row per class
            coef = np.vstack([-coef[0], coef[0]]) / 2
            icpt = np.array([-icpt[0], icpt[0]]) / 2
        self.coef_, self.intercept_ = coef, icpt
        return self

    def scores(self, X):
        Z = (normalise_counts(np.atleast_2d(X)) - self.mean_) / self.scale_
        return Z @ self.coef_.T + self.intercept_

    def state(self):
        return {"readout_kind": np.array(self.kind), "model": np.array(self.model), "C": np.array(self.C),
                "classes": self.classes, "coef": self.coef_, "intercept": self.intercept_,
                "mean": self.mean_, "scale": self.scale_}

    @classmethod
    def _from_state(cls, s):
        r = cls(model=str(s["model"]), C=float(s["C"]))
        r.classes, r.coef_, r.intercept_ = s["classes"], s["coef"], s["intercept"]
        r.mean_, r.scale_ = s["mean"], s["scale"]
        return r


@dataclass
class ClassResponseReadout(Readout):
    """Diehl & Cook 2015: assign each unit to the class it fires most for; vote by mean response."""

    kind = "class_response"

    def fit(self, X, y):
        X = normalise_counts(X)
        y = np.asarray(y)
        self.classes = np.unique(y)
        mean = np.stack([X[y == c].mean(axis=0) for c in self.classes])  # (K, D)
        self.assign_ = np.argmax(mean, axis=0)
        self.active_ = mean.max(axis=0) > 0
        return self

    def scores(self, X):
        X = normalise_counts(np.atleast_2d(X))
        out = np.zeros((X.shape[0], len(self.classes)))
        for k in range(len(self.classes)):
            units = (self.assign_ == k) & self.active_
            if units.any():
                out[:, k] = X[:, units].mean(axis=1)
        return out

    def state(self):
        return {"readout_kind": np.array(self.kind), "classes": self.classes,
                "assign": self.assign_, "active": self.active_}

    @classmethod
    def _from_state(cls, s):
        r = cls()
        r.classes, r.assign_, r.active_ = s["classes"], s["assign"], s["active"].astype(bool)
        return r


@dataclass
class RStdpReadout(Readout):
    """Mozafari et al. 2018 reward-modulated STDP decision layer.

    Non-negative features (counts, or latency codes) are rank-order coded per sample: scaled by
    the sample's maximum to ``code`` in [0, 1] and converted to spike times ``t = (1 - code) * T``
    over ``T`` steps (0 = silent). ``per_class`` IF decision neurons per class integrate
    ``Σ w_i`` of inputs that have spiked by step ``t``; the first to cross ``threshold`` (ties: the
    higher potential) decides. Reward (correct): STDP ``Δw = a_r+ · w(1−w)`` for inputs that
    spiked no later than the winner, ``a_r− · w(1−w)`` otherwise; punishment (wrong):
    anti-STDP, ``a_p− · w(1−w)`` for inputs no later than the winner and ``a_p+ · w(1−w)`` for
    the others (paper values a_r± = 0.004/−0.003, a_p± = 0.0005/−0.004). Only the winner learns.
    """

    per_class: int = 10
    time_steps: int = 15
    threshold_frac: float = 0.3
    a_r_plus: float = 0.004
    a_r_minus: float = -0.003
    a_p_plus: float = 0.0005
    a_p_minus: float = -0.004
    epochs: int = 15
    seed: int = 0
    kind = "rstdp"

    def _times(self, X):
        """Rank-order code: each sample scaled by its maximum, so the strongest input spikes first."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        peak = X.max(axis=1, keepdims=True)
        codes = np.clip(X / np.where(peak > 0, peak, 1.0), 0, 1)
        t = np.round((1.0 - codes) * (self.time_steps - 1))
        t[codes <= 0] = np.inf
        return t

    def _potentials(self, t_in):
        """Potential of every decision neuron at every step: (N, T, K*per_class)."""
        steps = np.arange(self.time_steps)[None, :, None]
        spiked = (t_in[:, None, :] <= steps).astype(np.float64)  # (N, T, D)
        return spiked @ self.w_.T

    def _decide(self, t_in):
        pot = self._potentials(t_in)
        fired = pot >= self.threshold_
        first = np.where(fired.any(axis=1), fired.argmax(axis=1), self.time_steps)  # (N, M)
        # earliest neuron wins; ties by final potential
        key = first * 1e6 - pot[:, -1, :]
        return np.argmin(key, axis=1), pot

    def fit(self, X, y):
        y = np.asarray(y)
        self.classes = np.unique(y)
        rng = np.random.default_rng(self.seed)
        n_units = len(self.classes) * self.per_class
        d = np.atleast_2d(X).shape[1]
        self.w_ = np.clip(rng.normal(0.8, 0.05, (n_units, d)), 0, 1)
        self.threshold_ = self.threshold_frac * d
        t_in = self._times(X)
        owner = np.repeat(np.arange(len(self.classes)), self.per_class)
        label_idx = np.searchsorted(self.classes, y)
        for _ in range(self.epochs):
            for i in rng.permutation(len(y)):
                win, _ = self._decide(t_in[i:i + 1])
                j = int(win[0])
                pre_first = t_in[i] <= self._fire_step(t_in[i], j)  # pre no later than post
                ww = self.w_[j] * (1 - self.w_[j])
                if owner[j] == label_idx[i]:
                    self.w_[j] += np.where(pre_first, self.a_r_plus, self.a_r_minus) * ww
                else:
                    self.w_[j] += np.where(pre_first, self.a_p_minus, self.a_p_plus) * ww
                np.clip(self.w_[j], 0, 1, out=self.w_[j])
        return self

    def _fire_step(self, t_row, j):
        steps = np.arange(self.time_steps)
        pot = ((t_row[None, :] <= steps[:, None]).astype(np.float64) @ self.w_[j])
        fired = np.nonzero(pot >= self.threshold_)[0]
        return fired[0] if len(fired) else self.time_steps - 1

    def scores(self, X):
        win, pot = self._decide(self._times(X))
        n = len(win)
        owner = np.repeat(np.arange(len(self.classes)), self.per_class)
        out = np.zeros((n, len(self.classes)))
        # class score: best final potential among its neurons (relative to threshold), winner boosted
        final = pot[:, -1, :] / max(self.threshold_, 1e-12)
        for k in range(len(self.classes)):
            out[:, k] = final[:, owner == k].max(axis=1)
        out[np.arange(n), owner[win]] += 1.0
        return out

    def state(self):
        return {"readout_kind": np.array(self.kind), "classes": self.classes, "w": self.w_,
                "threshold": np.array(self.threshold_), "per_class": np.array(self.per_class),
                "time_steps": np.array(self.time_steps)}

    @classmethod
    def _from_state(cls, s):
        r = cls(per_class=int(s["per_class"]), time_steps=int(s["time_steps"]))
        r.classes, r.w_, r.threshold_ = s["classes"], s["w"], float(s["threshold"])
        return r


READOUTS = {"svm": lambda **kw: LinearReadout(model="svm", **kw),
            "logistic": lambda **kw: LinearReadout(model="logistic", **kw),
            "ridge": lambda **kw: LinearReadout(model="ridge", **kw),
            "class_response": lambda **kw: ClassResponseReadout(),
            "rstdp": lambda **kw: RStdpReadout(seed=kw.get("seed", 0))}
"""Readout constructors by name (the ``--readout`` choices of ``spikeflow train``)."""
