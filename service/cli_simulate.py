"""`spikeflow simulate`: DVS events from a procedural gesture, moving bars, an image or a video.

    spikeflow simulate gesture --class 3 --seed 1 -o wave.sfe
    spikeflow simulate bars --angle 45 --speed 100 --size 32 -o bars.sfe
    spikeflow simulate saccade digit.png -o digit.sfe
    spikeflow simulate video clip.npy --fps 240 -o clip.sfe        # (T, H, W) numpy video

The writer follows the output extension (``.sfe`` native, or any other registered writer).
"""

from __future__ import annotations

import argparse


def _pixel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pixel model (v2e/ESIM; defaults: an ideal sensor, gesture: DVS128-like)")
    g.add_argument("--contrast-on", type=float, help="ON threshold, log units (default 0.2)")
    g.add_argument("--contrast-off", type=float, help="OFF threshold, log units (default 0.2)")
    g.add_argument("--sigma", type=float, help="per-pixel threshold mismatch, log units (default 0.03)")
    g.add_argument("--refractory-us", type=int, help="refractory period, µs (default 0)")
    g.add_argument("--leak-hz", type=float, help="leak events per pixel per second (default 0)")
    g.add_argument("--noise-hz", type=float, help="shot-noise events per pixel per second (default 0)")
    g.add_argument("--cutoff-hz", type=float, help="photoreceptor low-pass cutoff, 0 = none (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the scene and the pixel model")
    p.add_argument("-o", "--output", required=True, help="output recording (.sfe, ...)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="scene", metavar="SCENE", required=True)
    g = sub.add_parser("gesture", help="one of the 11 DVS128 Gesture classes (128x128)")
    g.add_argument("--class", dest="class_id", type=int, required=True, metavar="ID",
                   help="class id 1..11 (1 hand_clapping ... 11 other)")
    g.add_argument("--duration-us", type=int, default=1_450_000)
    g.add_argument("--size", type=int, default=128, help="sensor width = height, px")
    _pixel_args(g)
    b = sub.add_parser("bars", help="a bright bar (or grating) at an angle, moving along its normal")
    b.add_argument("--angle", type=float, default=0.0, help="orientation, degrees CCW from x (y up)")
    b.add_argument("--speed", type=float, default=100.0, help="px/s along the normal")
    b.add_argument("--width", type=float, default=3.0, help="bar width, px")
    b.add_argument("--spacing", type=float, default=None, help="grating period, px (default: one bar)")
    b.add_argument("--size", type=int, default=32)
    b.add_argument("--duration-us", type=int, default=500_000)
    b.add_argument("--fps", type=float, default=1000.0)
    _pixel_args(b)
    s = sub.add_parser("saccade", help="a static image (.png/.npy) seen through three saccades (N-MNIST)")
    s.add_argument("image")
    s.add_argument("--amplitude", type=float, default=3.0, help="saccade size, px")
    s.add_argument("--duration-us", type=int, default=300_000)
    s.add_argument("--fps", type=float, default=1000.0)
    _pixel_args(s)
    v = sub.add_parser("video", help="a numpy (T, H, W) video of linear intensity (uint8 or float in [0, 1])")
    v.add_argument("video")
    v.add_argument("--fps", type=float, required=True, help="frame rate of the video")
    _pixel_args(v)


def _pixel(args, base):
    from dataclasses import replace

    changes = {k: getattr(args, a) for k, a in (("contrast_on", "contrast_on"), ("contrast_off", "contrast_off"),
                                                ("threshold_sigma", "sigma"), ("refractory_us", "refractory_us"),
                                                ("leak_rate_hz", "leak_hz"), ("shot_noise_rate_hz", "noise_hz"),
                                                ("cutoff_hz", "cutoff_hz")) if getattr(args, a) is not None}
    return replace(base, **changes)


def _load_array(path: str, key: str):
    import numpy as np

    from spikeflow.service.errors import ParamError

    try:
        if path.lower().endswith(".npy"):
            return np.load(path, mmap_mode="r", allow_pickle=False)
        import matplotlib.image as mpimg

        return mpimg.imread(path)
    except (OSError, ValueError, SyntaxError) as e:
        raise ParamError(key, f"cannot read {path}: {e}") from None


def run(args) -> int:
    import numpy as np

    from spikeflow.drivers.recording import open_writer
    from spikeflow.drivers.simulator import DvsSimulator, PixelParams
    from spikeflow.service.errors import ParamError

    extra = {"generator": f"spikeflow simulate {args.scene}", "seed": args.seed}
    if args.scene == "gesture":
        from spikeflow.drivers.gestures import GESTURE_PIXEL, class_name, render_gesture

        extra.update(label=args.class_id, name=class_name(args.class_id))
        frames, t_us = render_gesture(args.class_id, duration_us=args.duration_us, seed=args.seed, size=args.size)
        pixel = _pixel(args, GESTURE_PIXEL)
    elif args.scene == "bars":
        from spikeflow.drivers.scenes import moving_bars

        extra.update(angle_deg=args.angle, speed_px_s=args.speed)
        frames, t_us = moving_bars(args.angle, size=args.size, duration_us=args.duration_us, speed_px_s=args.speed,
                                   bar_width=args.width, spacing_px=args.spacing, seed=args.seed, fps=args.fps)
        pixel = _pixel(args, PixelParams())
    elif args.scene == "saccade":
        from spikeflow.drivers.scenes import saccade_frames

        frames, t_us = saccade_frames(_load_array(args.image, "image"), duration_us=args.duration_us,
                                      seed=args.seed, fps=args.fps, amplitude_px=args.amplitude)
        pixel = _pixel(args, PixelParams())
    else:
        frames = _load_array(args.video, "video")
        if frames.ndim != 3:
            raise ParamError("video", f"{args.video}: expected a (T, H, W) array, got shape {frames.shape}")
        if not args.fps > 0:
            raise ParamError("fps", f"must be > 0, got {args.fps}")
        t_us = np.round(np.arange(len(frames)) * 1e6 / args.fps).astype(np.int64)
        pixel = _pixel(args, PixelParams())
    sim = DvsSimulator(frames.shape[2], frames.shape[1], pixel, seed=args.seed)
    n = 0
    with open_writer(args.output, sim.sensor_size, extra=extra) as w:
        for i in range(0, len(frames), 256):  # bounded memory for long (memory-mapped) videos
            ev = sim.feed_many(np.asarray(frames[i:i + 256]), t_us[i:i + 256])
            w.write(ev)
            n += len(ev)
    span_s = (t_us[-1] - t_us[0]) * 1e-6 if len(t_us) else 0.0
    print(f"{args.output}: {n} events, {span_s:.3f} s, sensor {sim.width}x{sim.height} "
          f"({args.scene}, seed {args.seed})")
    return 0
