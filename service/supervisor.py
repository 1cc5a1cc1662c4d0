"""The supervisor: keeps each worker process alive, the Paranoid Pirate way.

A worker is declared dead when its process exits with a non-zero status or a signal (kill -9,
a crash) or when no heartbeat arrived for ``liveness_s`` (a hung process, which is then killed
with SIGKILL). A dead worker is restarted with its learned state loaded from the daemon's last
snapshot, while the other workers keep running: edges reconnect by themselves (lossless
upstream senders wait meanwhile; realtime ones drop and count). Restarts are counted and logged;
a worker that dies more than ``max_restarts`` times within ``restart_window_s`` is marked
``failed`` and left down. A worker that exits 0 has finished its stream (``done``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from spikeflow.service.graph import GraphOptions

log = logging.getLogger("spikeflow.supervisor")

STARTUP_GRACE_S = 60.0
"""Time a new worker has to say hello (imports and numba compilation on a loaded machine)."""


@dataclass
class WorkerProc:
    """What the daemon knows about one worker group and its current process."""

    name: str
    nodes: list[str]
    incarnation: int = 0
    proc: subprocess.Popen | None = None
    state: str = "new"          # new, starting, running, draining, done, restarting, failed, stopped
    started: float = 0.0
    last_seen: float = 0.0      # monotonic time of the last message from this incarnation
    hello: bool = False
    restarts: int = 0
    restart_times: deque = field(default_factory=lambda: deque(maxlen=64))
    restart_at: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)       # latest of this incarnation
    previous: dict[str, Any] = field(default_factory=dict)      # merged node metrics of dead incarnations
    exit_code: int | None = None
    last_error: str = ""

    @property
    def identity(self) -> bytes:
        return f"{self.name}#{self.incarnation}".encode()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Spawns worker processes through ``launch(name, incarnation) -> Popen`` and watches them."""

    def __init__(self, workers: dict[str, list[str]], options: GraphOptions,
                 launch: Callable[[str, int], subprocess.Popen]):
        self.options = options
        self.launch = launch
        self.workers = {n: WorkerProc(n, list(nodes)) for n, nodes in workers.items()}
        self.total_restarts = 0
        self.stopping = False

    def start_all(self) -> None:
        for w in self.workers.values():
            self._spawn(w)

    def _spawn(self, w: WorkerProc) -> None:
        w.proc = self.launch(w.name, w.incarnation)
        w.state, w.hello, w.exit_code, w.restart_at = "starting", False, None, None
        w.started = w.last_seen = time.monotonic()
        log.info("worker %s started (pid %d, incarnation %d, nodes %s)", w.name, w.proc.pid, w.incarnation,
                 ", ".join(w.nodes))

    # -- messages from workers --------------------------------------------------------------
    def by_identity(self, identity: bytes) -> WorkerProc | None:
        name, _, inc = identity.decode(errors="replace").partition("#")
        w = self.workers.get(name)
        if w is None or str(w.incarnation) != inc:
            return None  # a message from a previous incarnation: ignored
        return w

    def on_message(self, w: WorkerProc, msg: dict[str, Any]) -> None:
        w.last_seen = time.monotonic()
        kind = msg.get("type")
        if kind == "hello":
            w.hello = True
            if w.state == "starting":
                w.state = "running"
        elif kind in ("heartbeat", "done"):
            w.hello = True
            m = msg.get("metrics") or {}
            if m:
                w.metrics = m
                st = m.get("state")
                if st in ("running", "draining") and w.state in ("starting", "running", "draining"):
                    w.state = st
            if kind == "done":
                w.last_error = "; ".join(msg.get("failures") or [])
        elif kind == "fatal":
            w.last_error = str(msg.get("error", ""))
            log.error("worker %s cannot start: %s", w.name, w.last_error)

    # -- watching ---------------------------------------------------------------------------
    def check(self) -> None:
        """Detect exits and silence; restart what died (called by the daemon loop)."""
        now = time.monotonic()
        for w in self.workers.values():
            if w.proc is None:
                continue
            code = w.proc.poll()
            if code is not None and w.state not in ("done", "failed", "stopped", "restarting"):
                w.exit_code = code
                if self.stopping:
                    w.state = "stopped"
                elif code == 0:
                    w.state = "done"
                    log.info("worker %s finished its stream", w.name)
                else:
                    why = f"signal {-code}" if code < 0 else f"exit status {code}"
                    self._died(w, f"{why}{': ' + w.last_error if w.last_error else ''}")
            elif code is None and not self.stopping and w.state in ("starting", "running", "draining"):
                limit = self.options.liveness_s if w.hello else max(STARTUP_GRACE_S, self.options.liveness_s)
                if now - w.last_seen > limit:
                    log.error("worker %s (pid %d) silent for %.1fs: killing it", w.name, w.pid, now - w.last_seen)
                    self._kill(w)
                    self._died(w, f"no heartbeat for {now - w.last_seen:.1f}s")
            if w.state == "restarting" and w.restart_at is not None and now >= w.restart_at and not self.stopping:
                w.incarnation += 1
                self._spawn(w)

    def _kill(self, w: WorkerProc) -> None:
        try:
            os.kill(w.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        w.exit_code = w.proc.returncode

    def _died(self, w: WorkerProc, why: str) -> None:
        from spikeflow.service.metrics import merge_node_dicts

        now = time.monotonic()
        for node, d in (w.metrics.get("nodes") or {}).items():  # keep what the dead incarnation counted
            w.previous[node] = merge_node_dicts(w.previous.get(node), d)
        w.metrics = {}
        w.restart_times.append(now)
        recent = sum(1 for t in w.restart_times if now - t <= self.options.restart_window_s)
        if recent > self.options.max_restarts:
            w.state = "failed"
            log.error("worker %s died (%s) %d times within %.0fs: giving up", w.name, why, recent,
                      self.options.restart_window_s)
            return
        w.restarts += 1
        self.total_restarts += 1
        w.state = "restarting"
        w.restart_at = now + min(5.0, 0.1 * 2 ** (recent - 1))
        log.warning("worker %s died (%s): restart %d (total %d)", w.name, why, w.restarts, self.total_restarts)

    # -- shutdown ---------------------------------------------------------------------------
    def live(self) -> list[WorkerProc]:
        return [w for w in self.workers.values() if w.alive]

    def all_finished(self) -> bool:
        """Every worker has ended for good (done or failed): a ``run`` is over."""
        return all(w.state in ("done", "failed", "stopped") and not w.alive for w in self.workers.values())

    def kill_remaining(self) -> None:
        for w in self.live():
            log.error("worker %s (pid %d) did not drain in time: killing it", w.name, w.pid)
            self._kill(w)
            w.state = "stopped"


def worker_command(spec_path: str) -> list[str]:
    """The command line of a worker process."""
    return [sys.executable, "-m", "spikeflow.service.runtime", spec_path]
