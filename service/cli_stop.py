"""`spikeflow stop`: ask a daemon to drain and exit, and wait until it has."""

from __future__ import annotations

import time

from spikeflow.service.cli_status import add_daemon_arguments, client_for


def add_arguments(parser):
    add_daemon_arguments(parser)
    parser.add_argument("--wait", type=float, default=60.0, metavar="S",
                        help="seconds to wait for the daemon to exit (0: do not wait; default 60)")


def run(args) -> int:
    from spikeflow.service.control import pid_alive
    from spikeflow.service.errors import SpikeflowError

    client = client_for(args)
    pid = client.status()["pid"]
    client.stop()
    print(f"stopping daemon pid {pid}", flush=True)
    deadline = time.monotonic() + args.wait
    while args.wait > 0 and pid_alive(pid):
        if time.monotonic() > deadline:
            raise SpikeflowError(f"daemon pid {pid} still running after {args.wait:g}s")
        time.sleep(0.05)
    if args.wait > 0:
        print(f"daemon pid {pid} stopped")
    return 0
