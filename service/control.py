"""The control plane: the daemon's control socket protocol, its client, the worker link, snapshots.

Control socket (ZeroMQ ROUTER in the daemon, REQ in clients; loopback only). Requests and
replies are single JSON frames, so any language can drive it::

    {"cmd": "status"}                     -> {"ok": true, "name": ..., "workers": {...}, ...}
    {"cmd": "metrics"}                    -> {"ok": true, "nodes": {...}, "workers": {...}}
    {"cmd": "stop"}                       -> {"ok": true, "state": "stopping"}   (graceful drain)
    {"cmd": "snapshot", "path": "x.npz"}  -> {"ok": true, "path": ..., "arrays": n}
    {"cmd": "load", "path": "x.npz"}      -> {"ok": true, "loaded": [nodes]}
    anything else                         -> {"ok": false, "error": "..."}

Worker link (DEALER in each worker -> ROUTER in the daemon), JSON frames plus raw array
frames for learned state: ``hello``, ``heartbeat`` (with metrics and the sources' settled
positions, every ``heartbeat_s``), ``state`` (reply to a snapshot), ``reply``, ``done``,
``fatal``; the daemon sends ``resume`` (where a restarted worker's sources start), ``start``
(open the sources' gate), ``stop``, ``snapshot`` and ``load``. A worker whose parent (the
daemon) is gone drains and exits.

Snapshots are one npz of ``node/key`` arrays, written to a temporary file in the same
directory, fsynced, then renamed over the target (atomic on POSIX: a reader sees the old or
the new snapshot, never half of one).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from spikeflow.service.errors import ModelError, SpikeflowError

log = logging.getLogger("spikeflow.control")

DEFAULT_TIMEOUT_S = 10.0


# -- snapshots --------------------------------------------------------------------------------

def save_snapshot(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``node/key -> array`` atomically (temp file, fsync, rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_snapshot(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a snapshot; a ModelError names the file when it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{path}: not a readable snapshot: {e}") from None


def carry_over(arrays: dict[str, np.ndarray], previous: dict[str, np.ndarray], nodes) -> list[str]:
    """Add to ``arrays`` the keys of ``nodes`` that it lacks, taken from ``previous``.

    A snapshot taken while a worker is not there to answer (starting, restarting, finished)
    keeps that worker's nodes' state from the snapshot before it, which is also what the
    worker itself restarts from: a snapshot never silently loses learned state. Returns the
    keys carried, sorted."""
    nodes = set(nodes)
    carried = sorted(k for k in previous if k.partition("/")[0] in nodes and k not in arrays)
    for k in carried:
        arrays[k] = previous[k]
    return carried


# -- array frames ---------------------------------------------------------------------------

def pack_arrays(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> list:
    """``[json header (with an 'arrays' list of [key, dtype, shape]), raw buffers...]``."""
    items, bufs = [], []
    for k, v in arrays.items():
        v = np.ascontiguousarray(v)
        if v.dtype.hasobject:
            raise SpikeflowError(f"state array {k!r} has dtype {v.dtype}: object arrays cannot be snapshotted")
        items.append([k, v.dtype.str, list(v.shape)])
        bufs.append(memoryview(v).cast("B") if v.size else b"")
    return [json.dumps({**header, "arrays": items}).encode(), *bufs]


def unpack_arrays(frames: list) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    header = json.loads(bytes(frames[0]))
    out = {}
    items = header.get("arrays") or []
    if len(items) != len(frames) - 1:
        raise SpikeflowError(f"state message lists {len(items)} arrays but carries {len(frames) - 1}")
    for (k, dt, shape), buf in zip(items, frames[1:]):
        dtype = np.dtype(dt)
        if dtype.hasobject:
            raise SpikeflowError(f"state array {k!r}: object dtype refused")
        out[k] = np.frombuffer(bytes(buf), dtype=dtype).reshape(shape).copy()
    return header, out


# -- control client ---------------------------------------------------------------------------

class ControlClient:
    """Talk to a daemon's control socket. One fresh REQ socket per request (a timed-out REQ is
    unusable), so a client survives a daemon restart."""

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._ctx = context or zmq.Context.instance()

    @classmethod
    def find(cls, run_dir: str | Path | None = None, name: str | None = None, **kw) -> ControlClient:
        info = find_daemon(run_dir, name)
        return cls(info["control"], **kw)

    def request(self, cmd: str, timeout_s: float | None = None, **args) -> dict[str, Any]:
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            sock.send(json.dumps({"cmd": cmd, **args}).encode())
            t = self.timeout_s if timeout_s is None else timeout_s
            if not sock.poll(int(t * 1000), zmq.POLLIN):
                raise SpikeflowError(f"control {self.endpoint}: no reply to {cmd!r} within {t:g}s "
                                     f"(is the daemon running?)")
            reply = json.loads(sock.recv())
        finally:
            sock.close(0)
        if not reply.get("ok"):
            raise SpikeflowError(f"control {self.endpoint}: {cmd} failed: {reply.get('error', reply)}")
        return reply

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def metrics(self) -> dict[str, Any]:
        return self.request("metrics")

    def stop(self) -> dict[str, Any]:
        return self.request("stop")

    def snapshot(self, path: str | Path | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.request("snapshot", timeout_s=timeout_s, **({"path": str(path)} if path else {}))

    def load(self, path: str | Path, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.request("load", timeout_s=timeout_s, path=str(path))

    def wait_for(self, predicate, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition"):
        """Poll ``metrics`` until ``predicate(metrics)`` is truthy; returns it (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.metrics()
                got = predicate(last)
                if got:
                    return got
            except SpikeflowError:
                pass
            time.sleep(interval_s)
        raise TimeoutError(f"{what} not reached within {timeout_s}s; last metrics: "
                           f"{json.dumps(last)[:2000] if last else None}")


# -- daemon discovery -------------------------------------------------------------------------

def default_run_dir() -> Path:
    """Where daemons keep pid, info and log files: $SPIKEFLOW_RUN_DIR, else ~/.cache/spikeflow/run."""
    env = os.environ.get("SPIKEFLOW_RUN_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikeflow" / "run"


def info_path(run_dir: str | Path, name: str) -> Path:
    return Path(run_dir) / f"{name}.json"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its parent, is not running)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def find_daemon(run_dir: str | Path | None = None, name: str | None = None) -> dict[str, Any]:
    """The info record (pid, control endpoint, graph, log) of a running daemon.

    Without ``name``, the only daemon running in ``run_dir``; an error lists them if several.
    """
    run_dir = Path(run_dir) if run_dir else default_run_dir()
    cands = [info_path(run_dir, name)] if name else sorted(run_dir.glob("*.json"))
    live = []
    for p in cands:
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and "control" in info and pid_alive(int(info.get("pid", 0))):
            live.append(info)
    if not live:
        raise SpikeflowError(f"no running daemon{' named ' + repr(name) if name else ''} in {run_dir}")
    if len(live) > 1:
        raise SpikeflowError(f"{len(live)} daemons run in {run_dir}: {[i['name'] for i in live]}; pass --name")
    return live[0]


# -- worker side of the link ------------------------------------------------------------------

def resumable_sources(worker) -> list[str]:
    """The worker's source nodes that can restart their stream at a packet (``resume_at``)."""
    return [n for n in worker.names if worker.nodes[n].is_source and hasattr(worker.nodes[n], "resume_at")]


class SourcePositions:
    """Where each resumable source of a worker may restart without losing a packet.

    The runtime counts, on its node thread, the packets the chain has taken from a source
    (``packets_out``); the chain handles one packet at a time, so at a heartbeat every packet
    before ``resume_seq + taken - 1`` (the last one may still be in its send) has been handed to
    the outgoing edges. Reported positions lag one heartbeat behind that ("settled"), so what
    they count has had ``heartbeat_s`` to leave the process: credit flow control keeps every
    edge's unacknowledged window within the receiver's queue, so it is not stuck in ZeroMQ's
    buffers when the process dies. Positions are therefore a lower bound of what downstream
    received: a restart from them loses nothing and repeats at most about two heartbeats of
    packets (the repeats carry their original ``seq``; receivers drop them, see
    :mod:`spikeflow.service.repeats`).

    A node of the worker that persists what it receives (``record``: ``committed()`` maps the
    streams it has received to the last seq it holds in its file) caps the position of the
    source of such a stream at that seq + 1: what the process still buffered is sent again.
    """

    def __init__(self, worker):
        self.worker = worker
        self.names = resumable_sources(worker)
        self._committing = [node for node in (worker.nodes[n] for n in worker.names)
                            if callable(getattr(node, "committed", None))]
        self._pending: dict[str, int] = {}

    def settled(self) -> dict[str, int]:
        """Positions as of the previous call (call it once per heartbeat)."""
        out = dict(self._pending)
        w = self.worker
        for n in self.names:
            taken = int(w.metrics[n].counters["packets_out"])   # (read before the commits: they can only be newer)
            start = int(getattr(w.nodes[n], "resume_seq", 0))
            pos = start + max(0, taken - 1)
            for node in self._committing:
                for stream, seq in node.committed().items():
                    if stream.partition(".")[0] == n:   # the source's own stream (seq kept)
                        pos = min(pos, max(int(seq) + 1, start))
            self._pending[n] = pos
        return out


class WorkerLink:
    """A worker's thread talking to the daemon: heartbeats with metrics, and commands."""

    def __init__(self, endpoint: str, worker: str, incarnation: int, heartbeat_s: float):
        self.endpoint, self.worker, self.incarnation = endpoint, worker, incarnation
        self.heartbeat_s = heartbeat_s
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.IDENTITY, f"{worker}#{incarnation}".encode())
        self._sock.setsockopt(zmq.LINGER, 2000)
        self._sock.connect(endpoint)
        self._parent = os.getppid()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._outbox: list[list] = []
        self._lock = threading.Lock()

    def _send(self, msg: dict[str, Any]) -> None:
        self._sock.send(json.dumps(msg).encode())

    def send_fatal(self, error: str) -> None:
        """Before the thread runs: report a worker that cannot even be built, then close."""
        self._send({"type": "fatal", "worker": self.worker, "pid": os.getpid(), "error": error})
        self._sock.close(2000)

    def start(self, worker) -> None:
        self._send({"type": "hello", "worker": self.worker, "incarnation": self.incarnation, "pid": os.getpid()})
        self._thread = threading.Thread(target=self._loop, args=(worker,), name="daemon-link", daemon=True)
        self._thread.start()

    def finish(self, worker) -> None:
        """After the worker ran: stop the thread, send final metrics, close (lingering for delivery)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._send({"type": "done", "worker": self.worker, "pid": os.getpid(), "failures": worker.failures,
                    "metrics": worker.snapshot_metrics()})
        self._sock.close(2000)

    def _loop(self, worker) -> None:
        next_beat = 0.0
        pending: list[tuple[dict, threading.Event, dict]] = []
        positions = SourcePositions(worker)
        while not self._done.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                self._send({"type": "heartbeat", "worker": self.worker, "pid": os.getpid(),
                            "metrics": worker.snapshot_metrics(), "positions": positions.settled()})
                if os.getppid() != self._parent:
                    log.warning("daemon (pid %d) is gone: draining", self._parent)
                    worker.request_stop()
            for item in list(pending):
                req, ev, box = item
                if ev.is_set():
                    pending.remove(item)
                    self._reply(req, box)
            if self._sock.poll(int(min(self.heartbeat_s, 0.05) * 1000), zmq.POLLIN):
                try:
                    msg = json.loads(self._sock.recv())
                except ValueError:
                    continue
                cmd = msg.get("cmd")
                if cmd == "stop":
                    worker.request_stop()
                elif cmd == "resume":  # always before "start": sources wait at the gate until then
                    for name, seq in (msg.get("positions") or {}).items():
                        if name in positions.names:
                            worker.nodes[name].resume_at(int(seq))
                            log.info("source %s resumes at packet %d", name, int(seq))
                elif cmd == "start":
                    worker.open_gate()
                elif cmd in ("snapshot", "load"):
                    ev, box = threading.Event(), {}

                    def job(msg=msg, ev=ev, box=box):
                        try:
                            box["value"] = (worker.state() if msg["cmd"] == "snapshot"
                                            else worker.load_state(msg["path"]))
                        except Exception as e:  # noqa: BLE001 - reported to the daemon
                            box["error"] = f"{type(e).__name__}: {e}"
                        ev.set()

                    worker.submit(job)
                    pending.append((msg, ev, box))

    def _reply(self, req: dict, box: dict) -> None:
        head = {"type": "state" if req["cmd"] == "snapshot" else "reply", "id": req.get("id"),
                "worker": self.worker, "ok": "error" not in box, "error": box.get("error")}
        if req["cmd"] == "snapshot" and "error" not in box:
            try:
                self._sock.send_multipart(pack_arrays(head, box["value"]), copy=False)
                return
            except SpikeflowError as e:
                head.update(ok=False, error=str(e))
        elif "error" not in box:
            head["result"] = box.get("value")
        self._send(head)
