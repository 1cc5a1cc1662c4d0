"""The supervisor: keeps each worker process alive, the Paranoid Pirate way.

A worker is declared dead when its process exits with a non-zero status or a signal (kill -9,
a crash) or when no heartbeat arrived for ``liveness_s`` (a hung process, which is then killed
with SIGKILL). A dead worker is restarted with its learned state loaded from the daemon's last
snapshot, while the other workers keep running: edges reconnect by themselves (lossless
upstream senders wait meanwhile; realtime ones drop and count). Restarts are counted and logged;
a worker that dies more than ``max_restarts`` times within ``restart_window_s`` is marked
``failed`` and left down. A worker that exits 0 has finished its stream (``done``).

A warm spare shortens restarts: once the graph runs, the daemon keeps one spare process
(:func:`spare_main`) that has done what every worker start costs (interpreter, imports of
numpy, numba, ZeroMQ and every node module, and a dry build of the graph's nodes, which loads
their numba kernels) and then waits on its stdin. A dead worker's successor is that spare, told
the path of its spec; a new spare is started once the successor is up.

Sources resume: heartbeats carry each resumable source's settled position (see
:class:`spikeflow.service.control.SourcePositions`); the supervisor keeps the latest across
incarnations, and the daemon hands it to the restarted worker before its sources start. Each
restart is timed (death seen -> hello, i.e. built and warmed up -> first packets moving) and
shown in ``status`` as ``last_restart``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    positions: dict[str, int] = field(default_factory=dict)     # source -> settled resume seq (all incarnations)
    said_done: bool = False                                     # this incarnation sent its final message
    died_at: float | None = None                                # monotonic time the last death was seen
    last_restart: dict[str, Any] = field(default_factory=dict)  # timings of the last restart (seconds)

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
        w.state, w.hello, w.exit_code, w.restart_at, w.said_done = "starting", False, None, None, False
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
        now = w.last_seen = time.monotonic()
        kind = msg.get("type")
        if kind == "hello":
            w.hello = True
            if w.state == "starting":
                w.state = "running"
            if w.died_at is not None:
                w.last_restart["ready_s"] = round(now - w.died_at, 3)
        elif kind in ("heartbeat", "done"):
            w.hello = True
            for name, seq in (msg.get("positions") or {}).items():
                if isinstance(seq, int) and seq > w.positions.get(name, -1):
                    w.positions[name] = seq
            m = msg.get("metrics") or {}
            if m:
                w.metrics = m
                st = m.get("state")
                if st in ("running", "draining") and w.state in ("starting", "running", "draining"):
                    w.state = st
                if w.died_at is not None and "flowing_s" not in w.last_restart and _moved(m):
                    w.last_restart["flowing_s"] = round(now - w.died_at, 3)
                    log.info("worker %s flows again %.2fs after it died (ready after %.2fs)", w.name,
                             now - w.died_at, w.last_restart.get("ready_s", float("nan")))
            if kind == "done":
                w.said_done = True
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
                if now - w.last_seen > limit and w.said_done:
                    # its stream is over and its final metrics are in: a process stuck on its way
                    # out (e.g. in ZeroMQ's context termination) is ended, not restarted
                    log.warning("worker %s (pid %d) finished its stream but has not exited after %.1fs: killing it",
                                w.name, w.pid, now - w.last_seen)
                    self._kill(w)
                    w.state = "failed" if w.last_error else "done"
                elif now - w.last_seen > limit:
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
        w.died_at = now
        w.last_restart = {"why": why}
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


def _moved(metrics: dict[str, Any]) -> bool:
    """A worker's metrics show packets through its nodes (its incarnation is doing work)."""
    return any((d.get("counters") or {}).get("packets_in", 0) or (d.get("counters") or {}).get("packets_out", 0)
               for d in (metrics.get("nodes") or {}).values())


def worker_command(spec_path: str) -> list[str]:
    """The command line of a worker process."""
    return [sys.executable, "-m", "spikeflow.service.runtime", spec_path]


def spare_command(spare_cfg_path: str) -> list[str]:
    """The command line of a warm spare (:func:`spare_main`); its stdin must be a pipe."""
    return [sys.executable, "-m", "spikeflow.service.supervisor", spare_cfg_path]


def spare_marker(warm_dir: str | Path, pid: int) -> Path:
    """The file a spare creates when its warm-up is over."""
    return Path(warm_dir) / f"spare-{pid}.warm"


def warm_up(spec, metas) -> list[str]:
    """Dry-build (set up, then close) every node of ``spec`` that opens no endpoint; returns them.

    ``setup`` is where nodes load their numba kernels (from numba's cache, or compile them), so
    afterwards this process holds them in memory (``replay`` decodes a first chunk there, so its
    format decoder's kernels load too). Nodes with an endpoint parameter (``publish``, ``zmq_input``) are left out:
    their setup binds sockets a live worker may hold. Failures are ignored (the spare only
    prepares; the real build reports errors).
    """
    from spikeflow.service.graph import resolve_metas

    done = []
    for name in spec.order:
        fields = [f.name for f in dataclasses.fields(spec.nodes[name].params)] \
            if dataclasses.is_dataclass(spec.nodes[name].params) else []
        if any(f == "endpoint" or f.endswith("_endpoint") for f in fields):
            continue
        try:
            _, built = resolve_metas(spec, metas, only=[name])
        except Exception as e:  # noqa: BLE001 - see the docstring
            log.debug("warm-up of %s skipped: %s", name, e)
            continue
        for node in built.values():
            try:
                node.close()
            except Exception as e:  # noqa: BLE001
                log.debug("closing %s after its warm-up: %s", name, e)
        done.append(name)
    return done


def spare_main(argv: list[str]) -> int:
    """A warm spare: prepare (imports, :func:`warm_up`), then wait for a worker spec path on stdin
    and run that worker in this process. End of stdin (the daemon dismissed it or is gone): exit 0."""
    cfg = json.loads(Path(argv[0]).read_text())
    from spikeflow.service import control, runtime  # noqa: F401 - imported now, not at the restart
    from spikeflow.service.graph import load_graph, metas_from_json

    try:
        spec = load_graph(cfg["graph"], allow_remote=cfg.get("allow_remote", False))
        warm_up(spec, metas_from_json(cfg["metas"]))
    except Exception as e:  # noqa: BLE001 - a spare that could not warm up still serves, just colder
        print(f"spare[{os.getpid()}]: warm-up failed: {type(e).__name__}: {e}", file=sys.stderr)
    Path(spare_marker(cfg["warm_dir"], os.getpid())).touch()  # "warm" (the daemon's status shows it)
    line = sys.stdin.readline().strip()
    if not line:
        return 0
    sys.stdin.close()
    return runtime.main([line])


if __name__ == "__main__":
    sys.exit(spare_main(sys.argv[1:]))
