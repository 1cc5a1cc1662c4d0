"""Procedural scenes for the DVS simulator: moving oriented bars/gratings and saccades.

Both return ``(frames, timestamps_us)``: frames (T, H, W) float32 linear intensity in [0, 1],
timestamps int64 µs from 0, ready for :func:`spikeflow.drivers.simulator.simulate`.

Angles: ``angle_deg`` is the bar's orientation, counter-clockwise from the image x axis as
seen on screen (y up): 0° horizontal, 90° vertical, 45° rising to the right. A bar moves along
its normal ``(-sin θ, cos θ)`` (y up), i.e. a 0° bar with positive speed moves up the screen.

Saccades follow the N-MNIST recipe (Orchard et al. 2015): the sensor makes three quick
movements along a triangle and returns to its start, so a static image produces events at its
edges; each leg has a raised-cosine velocity profile (it stops at every vertex).
"""

from __future__ import annotations

import math

import numpy as np

from spikeflow.service.errors import ParamError


def _times(duration_us: int, fps: float) -> np.ndarray:
    if not (isinstance(duration_us, (int, np.integer)) and duration_us > 0):
        raise ParamError("scene.duration_us", f"must be a positive integer, got {duration_us!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ParamError("scene.fps", f"must be > 0, got {fps!r}")
    n = int(round(duration_us * 1e-6 * fps)) + 1
    return np.round(np.linspace(0, duration_us, max(n, 2))).astype(np.int64)


def _finite(key: str, value) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ParamError(key, f"must be finite, got {value!r}")
    return v


def bar_normal_distance(angle_deg: float, size: int) -> np.ndarray:
    """Signed distance (px) of every pixel centre from the centre line of a bar at ``angle_deg``."""
    th = math.radians(angle_deg)
    c = (size - 1) / 2.0
    u = np.arange(size, dtype=np.float64)[None, :] - c          # x to the right
    v = c - np.arange(size, dtype=np.float64)[:, None]          # y up
    return -u * math.sin(th) + v * math.cos(th)


def moving_bars(angle_deg: float, *, size: int = 32, duration_us: int = 200_000, speed_px_s: float = 100.0,
                bar_width: float = 3.0, seed: int = 0, fps: float = 1000.0, spacing_px: float | None = None,
                background: float = 0.2, foreground: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A bright bar (or a grating with period ``spacing_px``) at ``angle_deg`` moving along its normal.

    A single bar starts just outside the frame (on the side it moves away from) and sweeps
    across; a grating starts at a phase drawn from ``seed``. Edges are anti-aliased (one-pixel
    linear ramp) so the events come from the motion, not from pixel quantisation.
    """
    angle_deg = _finite("scene.angle_deg", angle_deg)
    speed_px_s = _finite("scene.speed_px_s", speed_px_s)
    if not (isinstance(size, (int, np.integer)) and 2 <= size <= 4096):
        raise ParamError("scene.size", f"must be an integer in 2..4096, got {size!r}")
    if not (bar_width > 0):
        raise ParamError("scene.bar_width", f"must be > 0, got {bar_width!r}")
    if spacing_px is not None and not (spacing_px > bar_width):
        raise ParamError("scene.spacing_px", f"must exceed bar_width ({bar_width}), got {spacing_px!r}")
    t_us = _times(duration_us, fps)
    rng = np.random.default_rng(seed)
    dist = bar_normal_distance(angle_deg, size)
    if spacing_px is None:
        half_diag = size / math.sqrt(2) + bar_width
        start = -half_diag if speed_px_s >= 0 else half_diag
        start += rng.uniform(-1.0, 1.0)
    else:
        start = rng.uniform(0.0, spacing_px)
    centre = start + speed_px_s * t_us * 1e-6                   # (T,)
    delta = dist[None, :, :] - centre[:, None, None]
    if spacing_px is not None:
        delta = np.mod(delta + spacing_px / 2.0, spacing_px) - spacing_px / 2.0
    cover = np.clip(bar_width / 2.0 - np.abs(delta) + 0.5, 0.0, 1.0)
    frames = (background + (foreground - background) * cover).astype(np.float32)
    return frames, t_us


def _as_gray(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[:, :, :3].astype(np.float64)
        if np.asarray(image).dtype.kind in "ui":
            img = img / np.iinfo(np.asarray(image).dtype).max
        img = img @ np.array([0.299, 0.587, 0.114])
    elif img.ndim == 2:
        img = img.astype(np.float64) / (np.iinfo(img.dtype).max if img.dtype.kind in "ui" else 1.0)
    else:
        raise ParamError("image", f"expected a 2-D grey or (H, W, 3|4) colour image, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ParamError("image", "contains NaN or infinity")
    return img


def saccade_path(duration_us: int, t_us: np.ndarray, amplitude_px: float, rng) -> np.ndarray:
    """(T, 2) sensor offsets (dx, dy) px along a closed triangle of three raised-cosine saccades."""
    turn = rng.uniform(0, 2 * math.pi)
    corners = [np.zeros(2)]
    for a in (turn, turn + math.pi / 3 + rng.normal(0, 0.1)):   # equilateral, jittered
        r = amplitude_px * rng.uniform(0.85, 1.0)
        corners.append(np.array([r * math.cos(a), r * math.sin(a)]))
    corners = np.array([corners[0], corners[1], corners[2], corners[0]])
    phase = np.clip(t_us / float(duration_us), 0.0, 1.0) * 3.0
    leg = np.minimum(phase.astype(int), 2)
    frac = phase - leg
    ease = (1.0 - np.cos(math.pi * frac)) / 2.0
    return corners[leg] + (corners[leg + 1] - corners[leg]) * ease[:, None]


def shift_frames(img: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``img`` (H, W) translated by each (dx, dy) of ``offsets`` (T, 2), bilinear, edges clamped."""
    h, w = img.shape
    ys = np.arange(h, dtype=np.float64)[None, :, None] - offsets[:, 1][:, None, None]
    xs = np.arange(w, dtype=np.float64)[None, None, :] - offsets[:, 0][:, None, None]
    y0 = np.floor(ys)
    x0 = np.floor(xs)
    fy = ys - y0
    fx = xs - x0
    y0 = y0.astype(np.intp)
    x0 = x0.astype(np.intp)
    y1 = np.clip(y0 + 1, 0, h - 1)
    x1 = np.clip(x0 + 1, 0, w - 1)
    y0 = np.clip(y0, 0, h - 1)
    x0 = np.clip(x0, 0, w - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def saccade_frames(image, *, duration_us: int = 300_000, seed: int = 0, fps: float = 1000.0,
                   amplitude_px: float = 3.0, pad_px: int | None = None,
                   background: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A static image seen by a sensor making three saccades (as N-MNIST was made from MNIST).

    ``image``: 2-D grey or colour array (uint or float in [0, 1]). The output is padded by
    ``pad_px`` (default ``ceil(amplitude_px) + 1``) on each side with ``background`` (default:
    the median of the image border), so a 28×28 digit with amplitude 2 gives 34×34 frames.
    """
    img = _as_gray(image)
    amplitude_px = _finite("scene.amplitude_px", amplitude_px)
    if amplitude_px < 0:
        raise ParamError("scene.amplitude_px", f"must be >= 0, got {amplitude_px!r}")
    pad = int(math.ceil(amplitude_px)) + 1 if pad_px is None else int(pad_px)
    if pad < 0:
        raise ParamError("scene.pad_px", f"must be >= 0, got {pad_px!r}")
    if background is None:
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        background = float(np.median(border))
    padded = np.pad(img, pad, mode="constant", constant_values=background)
    t_us = _times(duration_us, fps)
    rng = np.random.default_rng(seed)
    offsets = saccade_path(duration_us, t_us, amplitude_px, rng)
    frames = np.clip(shift_frames(padded, offsets), 0.0, 1.0).astype(np.float32)
    return frames, t_us
