"""Train the bundled gesture model ``gesture_model.npz`` from the bundled training clips.

    python -m spikeflow.recordings.make_model

is exactly

    spikeflow train gesture --data bundled --epochs 1 --seed 0 --readout logistic \\
        -o recordings/gesture_model.npz

(the built-in graph ``service/graphs/gesture.toml``: noise filter → ON/OFF polarity spikes →
two STDP-trained spiking conv/pool layers → sliding-window classifier). Same seed, same data,
same versions → the same weights (``tests/test_training.py`` checks reproducibility).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["train", "gesture", "--data", "bundled", "--epochs", "1", "--seed", "0", "--readout", "logistic"]


def main(argv: list[str] | None = None) -> int:
    from spikeflow.service.cli import main as cli

    out = str(HERE / "gesture_model.npz")
    return cli([*ARGS, "-o", out, *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
