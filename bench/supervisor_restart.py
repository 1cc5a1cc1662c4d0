"""Restart gap of the supervisor: kill -9 of a worker to the first packet after its restart.

    .venv/bin/python bench/supervisor_restart.py [--kills 5] [--target filter|source|both]
                                                 [--mode spare|fresh|both]

Graph (a real ``spikeflow serve`` subprocess): replay of ../shared's N-MNIST sample (looping,
real time, 1 ms windows) in worker ``main`` -> noise_filter and publish (lossless) in worker
``io``; this script subscribes. Each round waits until the stream flows, kills one worker with
SIGKILL and measures the restart gap: from the kill to the arrival, at the subscriber, of the
first packet the source emitted after the kill (its ``sent_ns``, the source's wall clock, is
later than the kill). ``filter``: the killed worker holds the filter and the publisher (the
source waits meanwhile: lossless). ``source``: the replay's worker is killed. Before each kill
the stream must be in its steady state (20 packets in a row less than 100 ms old) and, with the
spare, the spare must be warm. ``--mode both`` runs two daemons side by side, one restarting
into the warm spare, one into fresh processes (``Daemon(spare=False)``, the behaviour before
the spare), and interleaves their kills. Medians over ``--kills`` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NMNIST = ROOT.parent / "shared" / "recordings" / "tonic-testdata" / "sample_nmnist.bin"


def graph(ep: str) -> str:
    return f"""
[graph]
name = "gapbench"
heartbeat_s = 0.2
liveness_s = 5.0
max_restarts = 100
drain_timeout_s = 5.0
[nodes.src]
type = "replay"
params = {{ path = "{NMNIST}", speed = 1.0, window_us = 1000, loop = true }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 2000 }}
worker = "io"
[nodes.pub]
type = "publish"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ endpoint = "{ep}", policy = "lossless", min_subscribers = 1 }}
worker = "io"
"""


LAUNCH = ("import logging, sys; from pathlib import Path; "
          "from spikeflow.service.graph import load_graph; from spikeflow.service.daemon import Daemon; "
          "logging.basicConfig(filename=sys.argv[3], level=logging.INFO, "
          "format='%(asctime)s daemon[%(process)d] %(name)s %(levelname)s %(message)s'); "
          "sys.exit(Daemon(load_graph(sys.argv[1]), run_dir=sys.argv[2], log_file=sys.argv[3], "
          "spare=sys.argv[4] == 'spare').run())")


class Run:
    """One daemon (with or without the warm spare) and a subscriber to its publish node."""

    def __init__(self, tmp: Path, mode: str):
        from spikeflow.service.client import Subscriber
        from spikeflow.service.runtime import free_tcp_port

        self.mode = mode
        ep = f"tcp://127.0.0.1:{free_tcp_port()}"
        d = tmp / mode
        d.mkdir()
        g = d / "g.toml"
        g.write_text(graph(ep).replace('name = "gapbench"', f'name = "gap{mode}"'))
        self.run_dir, self.log = d / "run", d / "daemon.log"
        self.sub = Subscriber(ep, rcvhwm=10_000)
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(g), str(self.run_dir), str(self.log), mode],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.info_file = self.run_dir / f"gap{mode}.json"
        self.client = None
        self.gaps: dict[str, list[float]] = {"filter": [], "source": []}
        self.ready: dict[str, list[float]] = {"filter": [], "source": []}

    def wait_ready(self) -> None:
        from spikeflow.service.control import ControlClient

        deadline = time.monotonic() + 120
        while True:
            try:
                info = json.loads(self.info_file.read_text())
                if info.get("pid") == self.proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"daemon ({self.mode}) did not start; see {self.log}")
            time.sleep(0.05)
        self.client = ControlClient(info["control"], timeout_s=15)

    def kill_once(self, target: str) -> float:
        worker = "io" if target == "filter" else "main"
        deadline = time.monotonic() + 120
        while self.mode == "spare":  # a restart uses the spare only once it is warm
            sp = self.client.status()["spare"]
            if sp and sp["warm"]:
                break
            if time.monotonic() > deadline:
                raise SystemExit("no warm spare within 120 s")
            self.sub.recv(100)
        fresh = 0
        while fresh < 20:  # steady state (no backlog from the previous restart) before each kill
            pkt = self.sub.recv(200)
            if pkt is not None:
                fresh = fresh + 1 if time.time_ns() - pkt.sent_ns < 100_000_000 else 0
        pid = self.client.status()["workers"][worker]["pid"]
        kill_ns = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        gap = float("nan")
        stop_at = time.monotonic() + 60
        while time.monotonic() < stop_at:
            pkt = self.sub.recv(100)
            if pkt is not None and pkt.sent_ns > kill_ns:
                gap = (time.time_ns() - kill_ns) / 1e9
                break
        self.gaps[target].append(gap)
        ready = float("nan")
        while time.monotonic() < stop_at:
            lr = self.client.status()["workers"][worker]["last_restart"]
            if "ready_s" in lr:
                ready = lr["ready_s"]
                break
            time.sleep(0.05)
        self.ready[target].append(ready)
        return gap

    def close(self) -> int:
        self.sub.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--target", choices=("filter", "source", "both"), default="both")
    ap.add_argument("--mode", choices=("spare", "fresh", "both"), default="both",
                    help="restart into the warm spare, into a fresh process, or compare both (interleaved)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sf-gap-"))
    modes = ["spare", "fresh"] if args.mode == "both" else [args.mode]
    targets = ["filter", "source"] if args.target == "both" else [args.target]
    runs = [Run(tmp, m) for m in modes]
    try:
        for r in runs:
            r.wait_ready()
        for rnd in range(args.kills):
            for target in targets:
                for r in runs:
                    gap = r.kill_once(target)
                    print(f"round {rnd} {r.mode:5s} kill {target:6s}: restart gap {gap * 1e3:6.0f} ms "
                          f"(worker ready after {r.ready[target][-1] * 1e3:6.0f} ms)", flush=True)
        print("\n| restart into | killed worker | median gap kill -> first packet (ms) | min | max "
              "| median ready (ms) | kills |")
        print("|---|---|---|---|---|---|---|")
        for target in targets:
            for r in runs:
                g, rd = r.gaps[target], r.ready[target]
                print(f"| {r.mode} | {target} | {statistics.median(g) * 1e3:.0f} | {min(g) * 1e3:.0f} | "
                      f"{max(g) * 1e3:.0f} | {statistics.median(rd) * 1e3:.0f} | {len(g)} |")
        for r in runs:
            print(f"{r.mode}: restarts counted {r.client.status()['restarts']}")
        print(f"load average: {os.getloadavg()}")
    finally:
        for r in runs:
            r.close()
        print(f"logs under {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
