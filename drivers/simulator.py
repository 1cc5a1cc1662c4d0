"""DVS pixel simulator: frames (linear intensity) to events with the v2e/ESIM pixel model.

    sim = DvsSimulator(128, 128, PixelParams(contrast_on=0.25, refractory_us=200), seed=1)
    sim.feed(frame0, 0)                 # first frame sets the reference: no events
    ev = sim.feed(frame1, 2000)         # events in [0, 2000) µs, sorted by t
    ev = simulate(frames, timestamps_us, PixelParams(), seed=1)   # a whole video at once

The model (per pixel, see :mod:`spikeflow.drivers.sim_kernels`): log intensity
``L = log(I + log_eps)``, optionally low-passed (photoreceptor bandwidth ``cutoff_hz``);
an event each time ``L`` moves ``thr_on`` above / ``thr_off`` below the reference, at linearly
interpolated times between frames; thresholds vary per pixel (mismatch, Gaussian with
``threshold_sigma``); refractory period; leak (reference drifts down, ON events at
``leak_rate_hz`` on a static scene); shot noise (Poisson, ``shot_noise_rate_hz`` per pixel).
Everything random derives from ``seed``: the same seed gives the same events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from spikeflow.service.errors import ParamError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from . import sim_kernels as K

_NEVER_US = -(1 << 62)


@dataclass(frozen=True)
class PixelParams:
    """DVS pixel parameters. Thresholds in log-intensity units (natural log), times in µs.

    Defaults are an ideal, noiseless sensor with v2e's default thresholds and mismatch.
    """

    contrast_on: float = 0.2          # ON threshold (log units)
    contrast_off: float = 0.2         # OFF threshold (log units)
    threshold_sigma: float = 0.03     # per-pixel threshold mismatch, std (log units)
    refractory_us: int = 0            # minimum time between two events of one pixel
    leak_rate_hz: float = 0.0         # leak (ON) events per pixel per second on a static scene
    leak_jitter: float = 0.1          # relative per-pixel spread of the leak rate
    shot_noise_rate_hz: float = 0.0   # Poisson noise events per pixel per second
    cutoff_hz: float = 0.0            # photoreceptor low-pass cutoff; 0 = no filter
    log_eps: float = 1e-3             # L = log(I + log_eps) with I linear in [0, 1]

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ParamError(f"pixel.{f.name}", f"must be a finite number >= 0, got {v!r}")
        for name in ("contrast_on", "contrast_off", "log_eps"):
            if getattr(self, name) <= 0:
                raise ParamError(f"pixel.{name}", f"must be > 0, got {getattr(self, name)!r}")
        if int(self.refractory_us) != self.refractory_us:
            raise ParamError("pixel.refractory_us", f"must be an integer, got {self.refractory_us!r}")


MIN_THRESHOLD = 0.01
"""Mismatched thresholds are clipped here (v2e does the same) so no pixel fires unboundedly."""


class DvsSimulator:
    """A ``width × height`` DVS: feed frames in time order, get events sorted by ``t``.

    State (reference, last event time, noise clocks) persists across ``feed`` calls, so a
    video fed frame by frame gives exactly the events of :func:`simulate` on the whole video.
    """

    def __init__(self, width: int, height: int, params: PixelParams = PixelParams(), seed: int = 0):
        if width <= 0 or height <= 0 or width > 32767 or height > 32767:
            raise ParamError("simulator.size", f"width and height must be in 1..32767, got {width}x{height}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ParamError("simulator.seed", f"must be an integer >= 0, got {seed!r}")
        self.width, self.height = int(width), int(height)
        self.params = params
        self.seed = int(seed)
        self.sensor_size = SensorSize(self.width, self.height, 2)
        rng = np.random.default_rng(self.seed)
        shape = (self.height, self.width)
        self.thr_on = np.maximum(params.contrast_on + params.threshold_sigma * rng.standard_normal(shape),
                                 MIN_THRESHOLD)
        self.thr_off = np.maximum(params.contrast_off + params.threshold_sigma * rng.standard_normal(shape),
                                  MIN_THRESHOLD)
        leak = params.leak_rate_hz * (1.0 + params.leak_jitter * rng.standard_normal(shape))
        self.leak_per_us = np.maximum(leak, 0.0) * 1e-6
        self._leak_phase = rng.random(shape)  # desynchronises leak events across pixels
        self.reset()

    def reset(self) -> None:
        """Forget the scene: the next frame sets the reference again."""
        shape = (self.height, self.width)
        self._ref = np.zeros(shape)
        self._last_log = np.zeros(shape)
        self._lp_state = np.zeros(shape)
        self._last_t_us: int | None = None
        self._last_event_us = np.full(shape, _NEVER_US, dtype=np.int64)
        self._noise_next_us = np.full(shape, -1.0)
        self._noise_k = np.zeros(shape, dtype=np.int64)
        self.events_emitted = 0

    # -- input conversion -------------------------------------------------------------------
    def _log(self, frames: np.ndarray) -> np.ndarray:
        if frames.dtype.kind in "ui":
            scale = float(np.iinfo(frames.dtype).max)
            lin = frames.astype(np.float64) / scale
        elif frames.dtype.kind == "f":
            lin = frames.astype(np.float64)
        else:
            raise ParamError("frames", f"expected a numeric intensity array, got dtype {frames.dtype}")
        if not np.all(np.isfinite(lin)):
            raise ParamError("frames", "intensity contains NaN or infinity")
        if lin.size and lin.min() < 0:
            raise ParamError("frames", f"intensity must be >= 0 (linear), got min {lin.min()!r}")
        return np.log(lin + self.params.log_eps)

    def _check(self, frames: np.ndarray, t_us: np.ndarray) -> None:
        if frames.ndim != 3 or frames.shape[1:] != (self.height, self.width):
            raise ParamError("frames", f"expected shape (T, {self.height}, {self.width}), got {frames.shape}")
        if t_us.shape != (frames.shape[0],):
            raise ParamError("timestamps_us", f"expected {frames.shape[0]} timestamps, got shape {t_us.shape}")
        if len(t_us) > 1 and np.any(np.diff(t_us) <= 0):
            i = int(np.argmax(np.diff(t_us) <= 0))
            raise ParamError(f"timestamps_us[{i + 1}]", f"timestamps must increase strictly: "
                                                        f"{t_us[i]} then {t_us[i + 1]}")
        if self._last_t_us is not None and len(t_us) and t_us[0] <= self._last_t_us:
            raise ParamError("timestamps_us[0]", f"frame time {t_us[0]} is not after the previous "
                                                 f"frame's {self._last_t_us}")

    # -- simulation -------------------------------------------------------------------------
    def feed(self, frame: np.ndarray, t_us: int) -> np.ndarray:
        """One frame (H, W) at ``t_us``: events since the previous frame, sorted by ``t``."""
        frame = np.asarray(frame)
        return self.feed_many(frame[None], np.array([t_us], dtype=np.int64))

    def feed_many(self, frames: np.ndarray, timestamps_us) -> np.ndarray:
        """Frames (T, H, W) at ``timestamps_us`` (T,) in one kernel call; events sorted by ``t``."""
        frames = np.asarray(frames)
        t_us = np.asarray(timestamps_us)
        if t_us.dtype.kind not in "ui":
            if not np.all(np.isfinite(t_us)) or np.any(t_us != np.round(t_us)):
                raise ParamError("timestamps_us", "timestamps must be whole microseconds")
        t_us = t_us.astype(np.int64)
        self._check(frames, t_us)
        if len(t_us) == 0:
            return np.zeros(0, EVENT_DTYPE)
        logs = self._log(frames)
        p = self.params
        if self._last_t_us is None:
            first = logs[0]
            self._lp_state[:] = first
            if p.cutoff_hz > 0:
                K.lowpass_log_(logs[1:], t_us[1:], self._lp_state, int(t_us[0]), float(p.cutoff_hz))
            self._ref[:] = first - (self._leak_phase * self.thr_on if p.leak_rate_hz > 0 else 0.0)
            self._last_log[:] = first
            self._last_t_us = int(t_us[0])
            logs, t_us = logs[1:], t_us[1:]
            if len(t_us) == 0:
                return np.zeros(0, EVENT_DTYPE)
        elif p.cutoff_hz > 0:
            K.lowpass_log_(logs, t_us, self._lp_state, self._last_t_us, float(p.cutoff_hz))
        ev = self._run(np.ascontiguousarray(logs), np.ascontiguousarray(t_us))
        self._last_log[:] = logs[-1]
        self._last_t_us = int(t_us[-1])
        self.events_emitted += len(ev)
        return ev

    def _run(self, logs: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        p = self.params
        cap = max(1 << 16, 4 * logs.size // max(1, logs.shape[0]))
        saved = (self._ref.copy(), self._last_event_us.copy(), self._noise_next_us.copy(), self._noise_k.copy())
        while True:
            out_t = np.empty(cap, np.int64)
            out_x = np.empty(cap, np.int16)
            out_y = np.empty(cap, np.int16)
            out_p = np.empty(cap, np.int16)
            n = K.dvs_events_(self._last_log, self._last_t_us, logs, t_us, self._ref, self.thr_on,
                              self.thr_off, self.leak_per_us, self._last_event_us, int(p.refractory_us),
                              p.shot_noise_rate_hz * 1e-6, self._noise_next_us, self._noise_k,
                              self.seed & 0x7FFFFFFFFFFFFFFF, out_t, out_x, out_y, out_p)
            if n <= cap:
                break
            cap = n  # exact size now known: restore the state and run again
            self._ref[:], self._last_event_us[:], self._noise_next_us[:], self._noise_k[:] = saved
        order = np.argsort(out_t[:n], kind="stable")
        ev = np.empty(n, EVENT_DTYPE)
        ev["t"] = out_t[:n][order]
        ev["x"] = out_x[:n][order]
        ev["y"] = out_y[:n][order]
        ev["p"] = out_p[:n][order]
        return ev


def simulate(frames: np.ndarray, timestamps_us, params: PixelParams = PixelParams(), seed: int = 0,
             chunk_frames: int = 256) -> np.ndarray:
    """Events of a whole video (T, H, W) at ``timestamps_us``, fed in chunks (bounded memory)."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ParamError("frames", f"expected a (T, H, W) video, got shape {frames.shape}")
    t_us = np.asarray(timestamps_us)
    sim = DvsSimulator(frames.shape[2], frames.shape[1], params, seed)
    parts = [sim.feed_many(frames[i:i + chunk_frames], t_us[i:i + chunk_frames])
             for i in range(0, len(frames), chunk_frames)]
    parts = [p for p in parts if len(p)]
    return np.concatenate(parts) if parts else np.zeros(0, EVENT_DTYPE)
