"""The ``spikeflow`` command: a thin dispatcher to one module per subcommand.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; it is
imported only when used, so ``spikeflow info`` never pays for numba compilation.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SpikeflowError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("spikeflow.service.cli_run", "run a graph to completion (default: the bundled demo)"),
    "serve": ("spikeflow.service.cli_serve", "run a graph as a long-lived daemon with a control socket"),
    "status": ("spikeflow.service.cli_status", "show a running daemon's status"),
    "stop": ("spikeflow.service.cli_stop", "stop a running daemon gracefully"),
    "top": ("spikeflow.service.cli_top", "live table of per-node rate, latency, queue depth, drops"),
    "nodes": ("spikeflow.service.cli_nodes", "list node types and their parameters"),
    "info": ("spikeflow.service.cli_info", "describe a recording: format, size, duration, rates"),
    "convert": ("spikeflow.service.cli_convert", "convert a recording between formats"),
    "simulate": ("spikeflow.service.cli_simulate", "simulate DVS events (gestures, moving bars, a video)"),
    "inspect": ("spikeflow.service.cli_inspect", "render learned receptive fields as a PNG grid"),
    "loihi": ("spikeflow.service.cli_loihi", "Loihi mapping, energy and latency report"),
    "train": ("spikeflow.service.cli_train", "train a spiking model (STDP layers, then the classifier)"),
    "eval": ("spikeflow.service.cli_eval", "evaluate a model bundle on labeled recordings"),
    "bench": ("spikeflow.service.cli_bench", "replay recordings through a graph and report throughput/latency"),
}


def build_parser() -> argparse.ArgumentParser:
    from spikeflow import __version__

    parser = argparse.ArgumentParser(prog="spikeflow", description="Real-time event-camera processing.")
    parser.add_argument("--version", action="version", version=f"spikeflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=mod)
        importlib.import_module(mod).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        # No subcommand: the main job (run the embedded default), if registered.
        if "run" in COMMANDS:
            args = parser.parse_args(["run", *([] if argv is None else argv)])
        else:
            parser.print_help()
            return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except SpikeflowError as e:
        hint = ""
        if "sensor_size=" in str(e) and hasattr(args, "sensor_size") and not args.sensor_size:
            hint = " (on the command line: --sensor-size WxH)"   # the readers' words are the Python API's
        print(f"spikeflow {args.command}: error: {e}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
