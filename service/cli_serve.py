"""`spikeflow serve GRAPH.toml`: run a graph as a long-lived daemon with a control socket.

Foreground by default (what systemd and containers want); ``--detach`` starts it in the
background, waits until its control socket is up, prints its pid and endpoint and returns.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("graph", nargs="?", help="graph TOML file or model bundle .npz "
                                                 "(default: the bundled gesture model)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a graph value (repeatable)")
    parser.add_argument("--speed", type=float, help="replay speed of every source")
    parser.add_argument("--run-dir", help="where the pid, info and log files go (default: $SPIKEFLOW_RUN_DIR "
                                          "or ~/.cache/spikeflow/run)")
    parser.add_argument("--control", default="tcp://127.0.0.1:*", metavar="ENDPOINT",
                        help="control socket (default: a free loopback tcp port, recorded in the info file)")
    parser.add_argument("--log", help="log file (default <run-dir>/<graph name>.log)")
    parser.add_argument("--snapshot", help="start every node from this snapshot (npz from `snapshot`)")
    parser.add_argument("--allow-remote", action="store_true", help="allow non-loopback binds")
    parser.add_argument("--detach", action="store_true", help="run in the background")


def run(args) -> int:
    from spikeflow.service.cli_run import load, resolve
    from spikeflow.service.control import default_run_dir
    from spikeflow.service.daemon import Daemon, detach

    spec = load(args)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir()
    if args.detach:
        argv = [a for a in sys.argv[1:] if a != "--detach"] if sys.argv[1:2] == ["serve"] else _rebuild(args)
        info = detach(argv, run_dir, spec.name)
        print(f"daemon {info['name']} running: pid {info['pid']}, control {info['control']}, log {info['log']}")
        return 0
    log_file = Path(args.log) if args.log else run_dir / f"{spec.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s daemon[%(process)d] %(name)s %(levelname)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers = [logging.FileHandler(log_file)]
    if not _same_file(sys.stderr, log_file):  # detached: stderr already is the log file
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    daemon = Daemon(spec, run_dir=run_dir, control=args.control, allow_remote=args.allow_remote,
                    snapshot=args.snapshot or resolve(args)[2], log_file=log_file)
    return daemon.run()


def _rebuild(args) -> list[str]:
    argv = ["serve"] + ([args.graph] if args.graph else [])
    for o in args.overrides:
        argv += ["--set", o]
    for flag, v in (("--speed", args.speed), ("--run-dir", args.run_dir), ("--control", args.control),
                    ("--log", args.log), ("--snapshot", args.snapshot)):
        if v is not None:
            argv += [flag, str(v)]
    return argv + (["--allow-remote"] if args.allow_remote else [])


def _same_file(stream, path: Path) -> bool:
    import os

    try:
        a, b = os.fstat(stream.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
