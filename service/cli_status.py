"""`spikeflow status`: a running daemon's state, workers, restarts and stream totals."""

from __future__ import annotations

import json


def add_daemon_arguments(parser) -> None:
    """How every control command finds its daemon (shared by status, stop, top)."""
    parser.add_argument("--run-dir", help="directory of daemon pid/info files (default: $SPIKEFLOW_RUN_DIR "
                                          "or ~/.cache/spikeflow/run)")
    parser.add_argument("--name", help="graph name of the daemon (needed when several run)")
    parser.add_argument("--control", metavar="ENDPOINT", help="control socket endpoint, bypassing discovery")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply (default 10)")


def client_for(args):
    from spikeflow.service.control import ControlClient

    if args.control:
        return ControlClient(args.control, timeout_s=args.timeout)
    return ControlClient.find(args.run_dir, args.name, timeout_s=args.timeout)


def add_arguments(parser):
    add_daemon_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the raw status reply as JSON")


def run(args) -> int:
    client = client_for(args)
    st = client.status()
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"daemon {st['name']} (pid {st['pid']}) {st['state']}, up {st['uptime_s']:.1f}s, "
          f"graph {st['graph']}")
    print(f"control {st['control']}  restarts {st['restarts']}  log {st['log']}")
    if st.get("last_snapshot"):
        print(f"last snapshot {st['last_snapshot']}")
    print(f"{'worker':<12} {'state':<11} {'pid':>8} {'restarts':>8} {'beat(s)':>8}  nodes")
    for name, w in st["workers"].items():
        pid = w["pid"] if w["pid"] is not None else "-"
        print(f"{name:<12} {w['state']:<11} {pid:>8} {w['restarts']:>8} {w['heartbeat_age_s']:>8.2f}  "
              f"{', '.join(w['nodes'])}" + (f"  [{w['error']}]" if w.get("error") else ""))
    return 0
