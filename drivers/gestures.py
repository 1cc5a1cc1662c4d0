"""Procedural DVS128 Gesture scenes: a stick-figure subject performing one of the 11 classes.

    frames, t_us = render_gesture(4, seed=1)          # (T, 128, 128) linear intensity, µs
    events = simulate_gesture(4, seed=1)              # through the DVS pixel model

Class ids and names are those of DvsGesture's ``gesture_mapping.csv`` (1-based). The camera
faces the subject, so the subject's right hand appears on camera-left (x < 64), and an arm
turning clockwise for the subject turns counter-clockwise in the image. The motions follow
the real clips' statistics (``../shared/recordings/MANIFEST.md`` §1): waves and claps make
the event rate beat at 4–5.5 Hz (a hand oscillating at f moves fastest twice per cycle),
arm circles turn at ~0.7–1.3 turns/s, and the centroid sits on the side of the moving arm.

Everything random derives from ``seed``: subject position and size, tempo, phase, body
sway, background clutter, brightness, and the pixel's mismatch and noise.
"""

from __future__ import annotations

import math

import numpy as np

from spikeflow.service.errors import ParamError

from .gesture_labels import GESTURE_CLASSES as _LABEL_NAMES
from .simulator import PixelParams, simulate

GESTURE_CLASSES = tuple(_LABEL_NAMES[k] for k in sorted(_LABEL_NAMES))
"""Index = class id − 1 (DvsGesture ``gesture_mapping.csv``)."""

GESTURE_PIXEL = PixelParams(contrast_on=0.25, contrast_off=0.25, threshold_sigma=0.04, refractory_us=300,
                            leak_rate_hz=0.05, shot_noise_rate_hz=0.1)
"""DVS128-like pixel: 25 % contrast thresholds, mismatch, refractory period, leak and noise."""

_CHUNK = 48


def class_name(class_id: int) -> str:
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or not 1 <= class_id <= 11:
        raise ParamError("gesture.class_id", f"must be an integer 1..11 (DvsGesture ids), got {class_id!r}")
    return GESTURE_CLASSES[class_id - 1]


# -- the subject --------------------------------------------------------------------------------

class _Subject:
    """Per-seed subject: geometry in 128-px units, tempo, phase, brightness."""

    def __init__(self, rng: np.random.Generator):
        self.cx = 64 + rng.uniform(-6, 6)
        self.sy = 54 + rng.uniform(-5, 5)             # shoulder height (y down)
        self.s = rng.uniform(0.88, 1.1)               # size
        self.tempo = rng.uniform(0.0, 1.0)            # where in each class's rate range
        self.phase = rng.uniform(0, 2 * math.pi)
        self.sway_hz = rng.uniform(0.3, 0.6)
        self.sway_px = rng.uniform(0.3, 0.9)
        self.bg = rng.uniform(0.25, 0.5)
        self.body = self.bg * rng.uniform(0.35, 0.6)  # dark clothes
        self.skin = min(1.0, self.bg * rng.uniform(1.8, 2.6))

    def shoulder(self, side: int) -> np.ndarray:
        """side -1: the subject's right (camera-left), +1: the subject's left."""
        return np.array([self.cx + side * 14 * self.s, self.sy])

    def f(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.tempo


def _rest(sub: _Subject, side: int, n: int):
    sh = sub.shoulder(side)
    elbow = sh + np.array([side * 3, 24]) * sub.s
    hand = elbow + np.array([side * 2, 22]) * sub.s
    return np.repeat(elbow[None], n, 0), np.repeat(hand[None], n, 0)


def _arm_paths(class_id: int, sub: _Subject, t_s: np.ndarray, rng: np.random.Generator):
    """Elbow and hand positions (T, 2) for the right (camera-left) and left arm."""
    n, s, ph = len(t_s), sub.s, sub.phase
    er, hr = _rest(sub, -1, n)
    el, hl = _rest(sub, +1, n)
    col = lambda a, b: np.stack([a, b], axis=1)  # noqa: E731
    if class_id == 1:  # hand clapping: hands meet in front of the chest, rate beats at 2f
        w = 2 * math.pi * sub.f(2.0, 2.75)
        half_gap = (3 + 11 * (0.5 + 0.5 * np.cos(w * t_s + ph))) * s
        y = sub.sy + 20 * s
        hr = col(sub.cx - half_gap, np.full(n, y))
        hl = col(sub.cx + half_gap, np.full(n, y))
        er = col(np.full(n, sub.shoulder(-1)[0] - 4 * s), np.full(n, sub.sy + 22 * s))
        el = col(np.full(n, sub.shoulder(1)[0] + 4 * s), np.full(n, sub.sy + 22 * s))
    elif class_id in (2, 3):  # hand wave: forearm up, swinging about the elbow
        side = -1 if class_id == 2 else 1
        w = 2 * math.pi * sub.f(1.8, 2.75)
        theta = 0.55 * np.sin(w * t_s + ph)
        elbow = sub.shoulder(side) + np.array([side * 14, 2]) * s
        e = np.repeat(elbow[None], n, 0)
        h = e + 20 * s * col(np.sin(theta), -np.cos(theta))
        if side < 0:
            er, hr = e, h
        else:
            el, hl = e, h
    elif class_id in (4, 5, 6, 7):  # arm circles; subject's clockwise = counter-clockwise on camera
        side = -1 if class_id in (4, 5) else 1
        sense = 1 if class_id in (4, 6) else -1     # +1: counter-clockwise on screen (y up)
        a = sense * 2 * math.pi * sub.f(0.75, 1.25) * t_s + ph
        centre = sub.shoulder(side) + np.array([side * 12, 6]) * s
        r = 17 * s
        h = centre + r * col(np.cos(a), -np.sin(a))
        e = (sub.shoulder(side) + h) / 2
        if side < 0:
            er, hr = e, h
        else:
            el, hl = e, h
    elif class_id == 8:  # arm roll: forearms circling each other in front of the chest
        a = 2 * math.pi * sub.f(1.8, 2.4) * t_s + ph
        c = np.array([sub.cx, sub.sy + 26 * s])
        r = 6 * s
        hr = c + r * col(np.cos(a), -np.sin(a)) + np.array([-4 * s, 0])
        hl = c + r * col(np.cos(a + math.pi), -np.sin(a + math.pi)) + np.array([4 * s, 0])
        er = np.repeat((sub.shoulder(-1) + np.array([-3, 24]) * s)[None], n, 0)
        el = np.repeat((sub.shoulder(1) + np.array([3, 24]) * s)[None], n, 0)
    elif class_id == 9:  # air drums: hands beating down alternately at waist height
        w = 2 * math.pi * sub.f(1.7, 2.2)
        y = sub.sy + 32 * s
        hr = col(np.full(n, sub.cx - 13 * s), y + 7 * s * np.sin(w * t_s + ph))
        hl = col(np.full(n, sub.cx + 13 * s), y + 7 * s * np.sin(w * t_s + ph + math.pi))
        er = col(np.full(n, sub.shoulder(-1)[0] - 5 * s), np.full(n, sub.sy + 20 * s))
        el = col(np.full(n, sub.shoulder(1)[0] + 5 * s), np.full(n, sub.sy + 20 * s))
    elif class_id == 10:  # air guitar: right hand strums at the hip, left holds the neck out
        w = 2 * math.pi * sub.f(3.4, 4.0)
        hr = col(np.full(n, sub.cx - 9 * s), sub.sy + 40 * s + 7 * s * np.sin(w * t_s + ph))
        er = np.repeat((sub.shoulder(-1) + np.array([-6, 22]) * s)[None], n, 0)
        neck = sub.shoulder(1) + np.array([24, 12]) * s
        hl = neck + 1.0 * s * col(np.sin(2 * w * t_s), np.cos(1.3 * w * t_s))
        el = np.repeat((sub.shoulder(1) + np.array([12, 10]) * s)[None], n, 0)
    elif class_id == 11:  # other: unscripted smooth motion of both hands
        outs = []
        for side in (-1, 1):
            base = sub.shoulder(side) + np.array([side * 8, 26]) * s
            pos = np.repeat(base[None], n, 0).astype(float)
            for _ in range(3):
                f = rng.uniform(0.3, 2.5)
                amp = rng.uniform(2, 9) * s
                d = rng.uniform(0, 2 * math.pi)
                pos += amp * col(np.cos(2 * math.pi * f * t_s + d), np.sin(2 * math.pi * f * t_s + 2 * d))
            outs.append(pos)
        hr, hl = outs
        er = (sub.shoulder(-1) + hr) / 2 + np.array([-4 * s, 2 * s])
        el = (sub.shoulder(1) + hl) / 2 + np.array([4 * s, 2 * s])
    return er, hr, el, hl


# -- rendering ---------------------------------------------------------------------------------

def _cover(dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (px, negative inside)."""
    return np.clip(0.5 - dist, 0.0, 1.0)


def _segment_dist(px, py, a, b, radius):
    """Signed distance of pixel centres (H, W) to capsules from a to b (T, 2), radius px."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    dx, dy = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    ll = np.maximum(dx * dx + dy * dy, 1e-9)
    u = np.clip(((px - ax) * dx + (py - ay) * dy) / ll, 0.0, 1.0)
    return np.hypot(px - ax - u * dx, py - ay - u * dy) - radius


def _background(rng: np.random.Generator, size: int, level: float) -> np.ndarray:
    """Static clutter: an illumination gradient and a few soft rectangles (objects, furniture)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    g = rng.uniform(-0.25, 0.25, 2)
    img = level * (1 + g[0] * (xx - 0.5) + g[1] * (yy - 0.5))
    for _ in range(rng.integers(3, 7)):
        x0, y0 = rng.uniform(0, 1, 2)
        w, h = rng.uniform(0.05, 0.3, 2)
        dist = np.maximum(np.abs(xx - x0) - w / 2, np.abs(yy - y0) - h / 2) * size
        img = img + (level * rng.uniform(-0.4, 0.5)) * _cover(dist)
    return np.clip(img, 0.02, 1.0)


def render_gesture(class_id: int, *, duration_us: int = 1_500_000, fps: float = 500.0, seed: int = 0,
                   size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, size, size) float32 in [0, 1] and timestamps (T,) µs of one gesture performance."""
    class_name(class_id)
    if not (isinstance(duration_us, (int, np.integer)) and duration_us > 0):
        raise ParamError("gesture.duration_us", f"must be a positive integer, got {duration_us!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ParamError("gesture.fps", f"must be > 0, got {fps!r}")
    if not (isinstance(size, (int, np.integer)) and 16 <= size <= 1024):
        raise ParamError("gesture.size", f"must be an integer in 16..1024, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParamError("gesture.seed", f"must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng([int(seed), int(class_id)])
    sub = _Subject(rng)
    n = int(round(duration_us * 1e-6 * fps)) + 1
    t_us = np.round(np.linspace(0, duration_us, n)).astype(np.int64)
    t_s = t_us * 1e-6
    er, hr, el, hl = _arm_paths(class_id, sub, t_s, rng)
    k = size / 128.0
    bg = _background(rng, size, sub.bg)
    py, px = (np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)) / np.float32(k)
    sway = sub.sway_px * np.sin(2 * math.pi * sub.sway_hz * t_s + sub.phase)
    s = sub.s
    frames = np.empty((n, size, size), np.float32)
    for i in range(0, n, _CHUNK):
        sl = slice(i, min(n, i + _CHUNK))
        m = sl.stop - sl.start
        dx = sway[sl][:, None, None].astype(np.float32)
        img = np.broadcast_to(bg.astype(np.float32), (m, size, size)).copy()
        # torso (ellipse) and head (disc), swaying gently
        tx = (px - sub.cx - dx) / (15 * s)
        ty = (py - sub.sy - 26 * s) / (30 * s)
        torso = (np.hypot(tx, ty) - 1.0) * 15 * s * k
        head = (np.hypot(px - sub.cx - dx, py - sub.sy + 17 * s) - 8 * s) * k
        body = _cover(np.minimum(torso, head))
        img += (sub.body - img) * body
        for sh, e, h in ((sub.shoulder(-1), er[sl], hr[sl]), (sub.shoulder(1), el[sl], hl[sl])):
            shoulder = np.repeat(sh[None], m, 0) + np.stack([sway[sl], np.zeros(m)], axis=1)
            upper = _segment_dist(px, py, shoulder, e, 4.5 * s)
            fore = _segment_dist(px, py, e, h, 3.5 * s)
            hc = h.astype(np.float32)
            hand = np.hypot(px - hc[:, 0, None, None], py - hc[:, 1, None, None]) - np.float32(4.5 * s)
            img += (sub.body - img) * _cover(upper * k)
            img += (sub.skin - img) * _cover(np.minimum(fore, hand) * k)
        frames[sl] = img
    return frames, t_us


def simulate_gesture(class_id: int, *, seed: int = 0, duration_us: int = 1_500_000, size: int = 128,
                     pixel: PixelParams = GESTURE_PIXEL, fps: float = 500.0) -> np.ndarray:
    """Events (EVENT_DTYPE, sorted) of one rendered gesture through the DVS pixel model."""
    frames, t_us = render_gesture(class_id, duration_us=duration_us, fps=fps, seed=seed, size=size)
    return simulate(frames, t_us, pixel, seed=seed)


# -- statistics shared with the real clips -----------------------------------------------------

def gesture_statistics(events: np.ndarray, width: int = 128, height: int = 128,
                       bin_us: int = 20_000) -> dict[str, float]:
    """Simple per-clip statistics (the MANIFEST's evidence for the real clips' labels).

    ``left_fraction``: share of events at x < width/2 (camera-left = the subject's right);
    ``turns``: net turns of the event centroid (per ``bin_us`` bin) around its mean,
    positive = counter-clockwise on screen (y up); ``rhythm_hz``: peak of the event-rate
    spectrum between 0.5 and 10 Hz (5 ms bins); ``cx``, ``cy``: mean position.
    """
    x = events["x"].astype(np.float64)
    y = events["y"].astype(np.float64)
    t = events["t"]
    edges = np.arange(int(t[0]), int(t[-1]) + bin_us, bin_us)
    idx = np.digitize(t, edges) - 1
    cnt = np.bincount(idx, minlength=len(edges))
    ok = cnt > 0
    cxs = np.bincount(idx, x, minlength=len(edges))[ok] / cnt[ok]
    cys = np.bincount(idx, y, minlength=len(edges))[ok] / cnt[ok]
    ang = np.unwrap(np.arctan2(-(cys - cys.mean()), cxs - cxs.mean()))
    rate = np.bincount(((t - t[0]) // 5000).astype(np.intp)).astype(np.float64)
    r = (rate - rate.mean()) * np.hanning(len(rate))
    spec = np.abs(np.fft.rfft(r))
    freq = np.fft.rfftfreq(len(r), 0.005)
    band = (freq > 0.5) & (freq < 10)
    return {"left_fraction": float(np.mean(x < width / 2)), "turns": float((ang[-1] - ang[0]) / (2 * math.pi)),
            "rhythm_hz": float(freq[band][np.argmax(spec[band])]) if band.any() else 0.0,
            "cx": float(x.mean()), "cy": float(y.mean()), "events": int(len(events)),
            "on_fraction": float(np.mean(events["p"] == 1))}
