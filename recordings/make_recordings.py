"""Regenerate every bundled recording from fixed seeds (deterministic, bit-exact).

    python -m spikeflow.recordings.make_recordings            # writes next to this file
    python -m spikeflow.recordings.make_recordings --out DIR --classes 1 4 --seeds 0

Bundled set: the 11 DvsGesture classes × 6 procedural "subjects" (seeds 0–5), 1.45 s each
(the length of the real SLAYER clips), 128×128, through ``GESTURE_PIXEL``. Seeds 0–3 form the
train split and 4–5 the test split, so no subject appears in both. ``gestures.csv`` lists
``file,label,name,split,seed``; each ``.sfe`` header's ``extra`` carries the same fields.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2, 3, 4, 5)
TEST_SEEDS = (4, 5)
DURATION_US = 1_450_000
SENSOR_SIZE = (128, 128, 2)
INDEX = "gestures.csv"


def clip_name(class_id: int, seed: int) -> str:
    from spikeflow.drivers.gestures import class_name

    return f"gesture_{class_id:02d}_{class_name(class_id)}_s{seed}.sfe"


def split_of(seed: int) -> str:
    return "test" if seed in TEST_SEEDS else "train"


def make_clip(class_id: int, seed: int, out_dir: Path) -> dict:
    """Simulate one labeled gesture and write it as ``.sfe``; returns its index row."""
    from spikeflow.drivers.gestures import GESTURE_PIXEL, class_name, simulate_gesture
    from spikeflow.drivers.recording import open_writer

    events = simulate_gesture(class_id, seed=seed, duration_us=DURATION_US, pixel=GESTURE_PIXEL)
    row = {"file": clip_name(class_id, seed), "label": class_id, "name": class_name(class_id),
           "split": split_of(seed), "seed": seed}
    extra = dict(row, generator="spikeflow.drivers.gestures.simulate_gesture", duration_us=DURATION_US)
    with open_writer(out_dir / row["file"], SENSOR_SIZE, extra=extra) as w:
        w.write(events)
    row["events"] = len(events)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: the package's)")
    ap.add_argument("--classes", type=int, nargs="*", default=list(range(1, 12)))
    ap.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for class_id in args.classes:
        for seed in args.seeds:
            row = make_clip(class_id, seed, args.out)
            rows.append(row)
            print(f"{row['file']}: {row['events']} events", flush=True)
    with open(args.out / INDEX, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "name", "split", "seed"], extrasaction="ignore",
                           lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    total = sum((args.out / r["file"]).stat().st_size for r in rows)
    print(f"{len(rows)} recordings, {total / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
