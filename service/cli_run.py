"""`spikeflow run [GRAPH.toml | MODEL.npz]`: run a graph to completion (or until Ctrl-C / SIGTERM),
then print stream statistics.

A model bundle (``spikeflow train``) runs its own graph with its learned state. Without an
argument it runs the bundled gesture model: the 11 bundled test clips replayed in real time
through noise filter → spiking layers → classifier, live predictions against the clips' labels,
and a summary (accuracy, decision latency, throughput). ``--demo`` runs the plain demo graph
(replay → noise filter → print/publish) instead.

A single-worker graph runs in this process; a graph with several worker groups runs under a
foreground daemon (worker processes, control socket, supervisor) that exits when the streams end.
"""

from __future__ import annotations

import sys
import time


def add_arguments(parser):
    parser.add_argument("graph", nargs="?",
                        help="graph TOML file or model bundle .npz (default: the bundled gesture model)")
    parser.add_argument("--model", help="load learned state from this model bundle or snapshot into the graph")
    parser.add_argument("--demo", action="store_true", help="run the plain demo graph (no model)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a graph value, e.g. --set nodes.src.params.path=clip.raw (repeatable)")
    parser.add_argument("--speed", type=float, help="replay speed of every source (1 = real time, 0 = flat out)")
    parser.add_argument("--allow-remote", action="store_true", help="let nodes bind non-loopback addresses")
    parser.add_argument("--run-dir", help="daemon files for multi-worker graphs (default: see `spikeflow serve`)")
    parser.add_argument("--quiet", action="store_true", help="no statistics at the end")


def resolve(args):
    """``(graph source, overrides, state)``: a bundle brings its graph text, the overrides it
    was trained with and its learned state; ``--model`` adds state to any graph."""
    from spikeflow.service.graph import default_graph_path
    from spikeflow.service.model import bundled_model_path, is_bundle, load_bundle

    target = args.graph
    if target is None and not getattr(args, "demo", False) and bundled_model_path().exists():
        target = str(bundled_model_path())
    if target is not None and is_bundle(target):
        b = load_bundle(target)
        return b.graph_text, [*(b.meta.get("overrides") or []), *args.overrides], target
    return target or default_graph_path(), list(args.overrides), getattr(args, "model", None)


def load(args):
    """The graph with --set and --speed applied (shared with `spikeflow serve`)."""
    from spikeflow.service.graph import load_graph

    source, overrides, _ = resolve(args)
    spec = load_graph(source, overrides=overrides, allow_remote=args.allow_remote)
    if getattr(args, "speed", None) is not None:
        for name, ns in spec.nodes.items():
            if ns.cls.is_source and "speed" in getattr(ns.params, "__dataclass_fields__", {}):
                overrides.append(f"nodes.{name}.params.speed={args.speed!r}")
        spec = load_graph(source, overrides=overrides, allow_remote=args.allow_remote)
    return spec


def format_stats(spec, metrics: dict, wall_s: float) -> str:
    from spikeflow.service.cli_top import format_table

    nodes = metrics["nodes"]
    ev_in = sum(r["events_out"] for n, r in nodes.items() if spec.nodes[n].cls.is_source)
    sinks = [n for n, r in nodes.items() if not spec.nodes[n].cls.outputs or getattr(spec.nodes[n].cls, "is_sink", False)]
    ev_out = max((nodes[n]["events_in"] for n in sinks), default=0)
    per_sink = ", ".join(f"{n} {nodes[n]['events_in']:,}" for n in sinks)
    e2e = metrics["e2e"]
    rate = ev_in / wall_s if wall_s > 0 else 0.0
    lines = [f"graph {spec.name}: {len(spec.workers)} worker(s), {wall_s:.2f} s wall",
             f"events in {ev_in:,} (sources), events out {ev_out:,} "
             f"({per_sink or 'no sinks'}), "
             f"{ev_out / ev_in if ev_in else 0:.1%} kept",
             f"rate {rate / 1e6:.3f} M events/s; end-to-end latency p50 {e2e['p50_us']:.0f} us, "
             f"p99 {e2e['p99_us']:.0f} us, max {e2e['max_us']:.0f} us", format_table(metrics, None, wall_s)]
    return "\n".join(lines)


def run(args) -> int:
    spec = load(args)
    state = resolve(args)[2]
    t0 = time.monotonic()
    if len(spec.workers) == 1:
        from spikeflow.service.metrics import summarize
        from spikeflow.service.runtime import run_inline

        worker = run_inline(spec, state=state)
        m = worker.snapshot_metrics()
        nodes = {n: {**d, "worker": worker.worker} for n, d in m["nodes"].items()}
        metrics = summarize(nodes, {k: {v["side"]: v} for k, v in m["edges"].items()})
        code = worker.exit_code
        for f in worker.failures:
            print(f"spikeflow run: error: {f}", file=sys.stderr)
    else:
        import logging

        from spikeflow.service.daemon import Daemon

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        daemon = Daemon(spec, run_dir=args.run_dir, exit_when_done=True, allow_remote=args.allow_remote,
                        snapshot=state)
        code = daemon.run()
        metrics = daemon.final_metrics
    if not args.quiet:
        print(format_stats(spec, metrics, time.monotonic() - t0), file=sys.stderr if _stdout_busy(spec) else sys.stdout)
    return code


def _stdout_busy(spec) -> bool:
    """Statistics go to stderr when a node prints to stdout, so piped packet lines stay clean."""
    return any(ns.type == "print" for ns in spec.nodes.values()) and not sys.stdout.isatty()
