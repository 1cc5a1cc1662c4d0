"""``spikeflow train GRAPH --data SOURCE -o MODEL.npz``: layer-by-layer STDP, then the readout.

Ctrl-C leaves ``MODEL.checkpoint.npz`` (weights after the last finished epoch); ``--resume``
continues from it.
"""

from __future__ import annotations

import sys

DEFAULT_GRAPH = "gesture"


def add_arguments(p):
    p.add_argument("graph", nargs="?", default=DEFAULT_GRAPH,
                   help="graph TOML (default: the built-in gesture graph, service/graphs/gesture.toml)")
    p.add_argument("--data", default="bundled",
                   help="bundled | dir:PATH | slayer-nmnist:PATH | dvs128:PATH | tonic:NAME:ROOT (default: bundled)")
    p.add_argument("-o", "--output", default="model.npz", help="model bundle to write (default: model.npz)")
    p.add_argument("--epochs", type=int, default=1, help="STDP passes per conv layer (default: 1)")
    p.add_argument("--readout", default="logistic", choices=("svm", "logistic", "ridge", "class_response", "rstdp"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-samples", type=int, default=0, help="use only the first N training samples")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a graph value")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint bundle")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def builtin_graph(name: str) -> str:
    """A built-in graph by short name (``gesture``, ``default``) or the path as given."""
    from pathlib import Path

    here = Path(__file__).resolve().parent / "graphs" / f"{name}.toml"
    return str(here) if "/" not in name and not name.endswith(".toml") and here.exists() else name


def progress_bars(quiet: bool):
    """``progress(stage, done, total)`` drawing one tqdm bar per stage (rate and ETA)."""
    if quiet:
        return None
    from tqdm import tqdm

    bars = {}

    def progress(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="sample", file=sys.stderr, leave=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def run(args) -> int:
    from spikeflow.drivers.datasets import open_dataset
    from spikeflow.service.training import TrainConfig, checkpoint_path, train

    cfg = TrainConfig(epochs=args.epochs, readout=args.readout, seed=args.seed, max_samples=args.max_samples)
    data = open_dataset(args.data, split="train")
    try:
        res = train(builtin_graph(args.graph), data, args.output, cfg, data_spec=args.data, overrides=args.set,
                    progress=progress_bars(args.quiet), resume=args.resume)
    except KeyboardInterrupt:
        ck = checkpoint_path(args.output)
        if ck.exists():
            print(f"\ninterrupted: the weights of the last finished epoch are in {ck}; "
                  f"continue with --resume {ck}", file=sys.stderr)
        else:
            print("\ninterrupted before the first epoch finished: nothing saved", file=sys.stderr)
        return 130
    print(f"trained on {res.n_samples} samples ({res.n_windows} decision windows) in {res.seconds:.1f} s; "
          f"train-window accuracy {100 * res.train_accuracy:.1f} %")
    for layer, hist in res.convergence.items():
        print(f"  {layer}: convergence C = {', '.join(f'{c:.4f}' for c in hist)}")
    print(f"model bundle: {res.bundle_path}")
    return 0
