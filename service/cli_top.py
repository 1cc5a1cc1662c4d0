"""`spikeflow top`: a live table of per-node rate, latency, queue depth and drops.

Refreshes in place (ANSI cursor home + clear) every ``--interval`` seconds; ``--once`` prints a
single table (rates measured over one interval) for scripts.
"""

from __future__ import annotations

import sys
import time


def add_arguments(parser):
    from spikeflow.service.cli_status import add_daemon_arguments

    add_daemon_arguments(parser)
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh period (default 1 s)")
    parser.add_argument("--once", action="store_true", help="print one table and exit")
    parser.add_argument("--count", type=int, default=0, help="exit after this many refreshes (0 = until Ctrl-C)")


def _si(v: float) -> str:
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.1f}{unit}"
    return f"{v:.0f}"


def format_table(metrics: dict, prev: dict | None = None, dt_s: float | None = None) -> str:
    """Rows per node: events in/out, event rate, latency p50/p99/max, queue, drops.

    Rates come from two samples ``dt_s`` apart, or, without ``prev``, are averages over ``dt_s``.
    """
    head = (f"{'node':<14} {'type':<16} {'worker':<8} {'ev in':>8} {'ev out':>8} {'ev/s':>8} {'pkt/s':>7} "
            f"{'p50 us':>8} {'p99 us':>8} {'max us':>9} {'queue':>6} {'drops':>7} {'err':>4}")
    lines = [head]
    prev_nodes = (prev or {}).get("nodes", {})
    for name, r in metrics.get("nodes", {}).items():
        ev_rate = pkt_rate = 0.0
        if dt_s:
            p = prev_nodes.get(name) or {}
            key = "events_out" if r.get("events_in", 0) == 0 else "events_in"
            ev_rate = max(0, r[key] - p.get(key, 0)) / dt_s
            pk = "packets_out" if r.get("packets_in", 0) == 0 else "packets_in"
            pkt_rate = max(0, r[pk] - p.get(pk, 0)) / dt_s
        lat = r["latency"]
        lines.append(f"{name[:14]:<14} {r['type'][:16]:<16} {r['worker'][:8]:<8} {_si(r['events_in']):>8} "
                     f"{_si(r['events_out']):>8} {_si(ev_rate):>8} {pkt_rate:>7.0f} {lat['p50_us']:>8.0f} "
                     f"{lat['p99_us']:>8.0f} {lat['max_us']:>9.0f} {r['queue']:>6} {r['drops']:>7} {r['errors']:>4}")
    e2e = metrics.get("e2e") or {}
    lines.append(f"end-to-end latency: p50 {e2e.get('p50_us', 0):.0f} us, p99 {e2e.get('p99_us', 0):.0f} us, "
                 f"max {e2e.get('max_us', 0):.0f} us over {e2e.get('count', 0)} packets; "
                 f"restarts {metrics.get('restarts', 0)}")
    return "\n".join(lines)


def run(args) -> int:
    from spikeflow.service.cli_status import client_for

    client = client_for(args)
    prev, t_prev = client.metrics(), time.monotonic()
    n = 0
    interactive = sys.stdout.isatty() and not args.once
    try:
        while True:
            time.sleep(args.interval)
            cur, t = client.metrics(), time.monotonic()
            table = format_table(cur, prev, t - t_prev)
            if interactive:
                sys.stdout.write("\x1b[H\x1b[2J")
            title = f"spikeflow top: {cur.get('name', '')}  {time.strftime('%H:%M:%S')}"
            sys.stdout.write(f"{title}\n{table}\n")
            sys.stdout.flush()
            prev, t_prev = cur, t
            n += 1
            if args.once or (args.count and n >= args.count):
                return 0
    except KeyboardInterrupt:
        return 0
