"""``spikeflow loihi report NET --data FILE...``: Loihi mapping, op counts, energy, power, latency.

NET is one of:

- a model bundle ``MODEL.npz`` (``Network.save``: weights + layer geometry),
- a graph ``GRAPH.toml`` (its ``snn_conv`` / ``snn_pool`` nodes, in graph order; weights from
  ``--weights MODEL.npz`` or the nodes' seeded initial weights),
- a layer-spec ``SPEC.toml`` with ``[[layers]]`` tables (``describe()`` keys): no network is
  run, the traffic is what ``--data`` (input layer) and ``--spikes LAYER=FILE`` recorded.

Each ``--data`` recording is one inference: its events (p = polarity = input channel) are
encoded to first-spike times over ``--time-steps`` steps (one Loihi timestep each), run through
the network on this CPU (timed: the comparison row), and every layer's spikes are charged on the
mapped chip. Prints a table; ``--json`` writes every figure with the cost table's sources.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from spikeflow.service.errors import SpikeflowError


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="loihi_command", metavar="SUBCOMMAND")
    p = sub.add_parser("report", help="mapping, counts, energy, power, latency (+ CPU comparison)",
                       description="Loihi mapping, energy and latency report of a network on recordings.")
    p.add_argument("net", help="MODEL.npz, GRAPH.toml or a [[layers]] SPEC.toml")
    p.add_argument("--data", nargs="+", default=[], metavar="FILE", help="recordings; one inference each")
    p.add_argument("--spikes", action="append", default=[], metavar="LAYER=FILE",
                   help="recorded spike trains of a layer (SPEC.toml mode), repeatable")
    p.add_argument("--weights", default=None, metavar="MODEL.npz", help="weights for a GRAPH.toml's conv layers")
    p.add_argument("--profile", default="davies2018", help="cost profile (davies2018, sanafe_loihi, or your table's)")
    p.add_argument("--cost-table", default=None, metavar="TOML", help="your own cost table file")
    p.add_argument("--static-mw", type=float, default=None, help="static power in mW (user figure)")
    p.add_argument("--weight-bits", type=int, default=8, help="synaptic weight precision on chip, 1-9 (default 8)")
    p.add_argument("--time-steps", type=int, default=30, help="SNN time steps per inference (default 30)")
    p.add_argument("--window-us", type=int, default=0,
                   help="inference window in us (default: the whole recording)")
    p.add_argument("--learn", action="append", default=[], metavar="LAYER", help="count STDP updates on LAYER")
    p.add_argument("--fixed-point", action="store_true",
                   help="also run with weights quantised to --weight-bits and report the output-spike change")
    p.add_argument("--multichip", action="store_true", help="map beyond one chip instead of failing")
    p.add_argument("--repeats", type=int, default=3, help="CPU timing repeats per inference (median)")
    p.add_argument("--json", dest="json_out", default="loihi_report.json", metavar="FILE",
                   help="JSON report path (default loihi_report.json)")
    p.add_argument("--sensor-size", default=None, metavar="WxH", help="for recordings that do not store it")
    q = sub.add_parser("spec", help="write the [[layers]] spec of a model or graph (for loihi_emulator's spec_file)",
                       description="Write the [[layers]] TOML of a MODEL.npz or GRAPH.toml's spiking layers.")
    q.add_argument("net", help="MODEL.npz or GRAPH.toml")
    q.add_argument("-o", "--output", default=None, metavar="FILE", help="write here (default: stdout)")


def run(args) -> int:
    cmd = getattr(args, "loihi_command", None)
    if cmd not in ("report", "spec"):
        raise SpikeflowError("usage: spikeflow loihi report NET --data FILE... | spikeflow loihi spec NET (see --help)")
    from spikeflow.service import cli_loihi_report as loihi_report

    if cmd == "spec":
        text = loihi_report.build_spec(args)
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text)
        return 0

    report = loihi_report.build_report(args)
    print(loihi_report.format_table(report))
    Path(args.json_out).write_text(json.dumps(report, indent=2))
    print(f"\nJSON report written to {args.json_out}")
    return 0


def median_wall_s(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
