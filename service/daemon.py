"""The daemon: runs a graph's workers as processes, serves the control socket, supervises.

    spikeflow serve graph.toml            # foreground; --detach to run in the background

One process per worker group (one per graph unless nodes say ``worker = "name"``). The daemon
writes ``<run_dir>/<name>.pid``, ``<name>.json`` (pid, control endpoint, graph, log file: what
``spikeflow status``/``stop``/``top`` read) and logs to ``<name>.log``; nodes keep what must
outlive a worker in ``<name>.state/`` (emptied at start, removed at exit). It binds 127.0.0.1 only
(control socket, worker link, tcp edges) unless the graph or the command line allows more.

SIGTERM/SIGINT (or the ``stop`` command): every worker is told to drain (sources stop, in-flight
packets are processed, sinks flushed and closed); the daemon waits for them, removes its pid
and info files and exits 0. Workers run in their own session, so a terminal's Ctrl-C reaches
the daemon only and the drain happens in order.

Restarts (see :mod:`spikeflow.service.supervisor`): a restarted worker's sources get their
resume positions before their gate opens, and the outgoing edges of a worker that finished
its stream are held open by the daemon (:class:`EndedEdge`), which answers any receiver that
connects later (a restarted consumer) with the end-of-stream marker its upstream already sent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from spikeflow.service.control import (
    carry_over,
    default_run_dir,
    info_path,
    pid_alive,
    read_snapshot,
    save_snapshot,
    unpack_arrays,
)
from spikeflow.service.errors import GraphError, SpikeflowError
from spikeflow.service.graph import (
    LOOPBACK_HOSTS,
    GraphSpec,
    check_graph,
    endpoint_host,
    metas_to_json,
)
from spikeflow.service.metrics import merge_node_dicts, summarize
from spikeflow.service.protocol import encode
from spikeflow.service.runtime import edge_endpoints, edge_key, eos_packet
from spikeflow.service.supervisor import (
    Supervisor,
    spare_command,
    spare_marker,
    worker_command,
)

log = logging.getLogger("spikeflow.daemon")

DEFAULT_CONTROL = "tcp://127.0.0.1:*"
LOOP_S = 0.05

CREDIT = struct.Struct("<cIQ")
"""An edge receiver's credit message: b"K", receiver id u32 LE, messages consumed u64 LE (the
edge protocol of :mod:`spikeflow.service.edges`)."""

EOS_REPEAT_S = 1.0
"""An end-of-stream a receiver has not consumed after this long is sent again."""


class EndedEdge:
    """The sending end of an edge whose worker has finished, held open by the daemon.

    A worker that exits 0 has sent everything, end-of-stream last, on each outgoing edge. A
    consumer restarted after that (or one that lost the marker with its dead predecessor's
    socket) would wait for it forever; so the daemon binds the finished worker's endpoint and
    sends the marker to any receiver that connects. It sends only to an idle receiver, one
    that repeats the same credit (an edge receiver repeats its credit only while it waits on an
    empty queue), so the marker never overtakes data the finished worker sent before it: the
    consumer loses nothing it already accepted and ends its input as if the worker were there.
    """

    def __init__(self, context: zmq.Context, key: str, endpoint: str, stream: str):
        self.key, self.endpoint = key, endpoint
        self._frames = [bytes(f) for f in encode(eos_packet(stream))]
        self.sock = context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError:
            self.sock.close(0)
            raise
        self._credit: dict[bytes, tuple[int, int]] = {}   # peer -> its last (receiver id, consumed)
        self._sent: dict[tuple[int, int], float] = {}     # (receiver id, consumed) -> when the marker went
        self.markers_sent = 0

    def pump(self) -> None:
        """Read credits; send the marker to receivers that wait on an empty queue."""
        while self.sock.poll(0, zmq.POLLIN):
            frames = self.sock.recv_multipart()
            if len(frames) != 2 or len(frames[1]) != CREDIT.size or frames[1][:1] != b"K":
                continue
            peer = frames[0]
            _, rid, consumed = CREDIT.unpack(frames[1])
            previous, self._credit[peer] = self._credit.get(peer), (rid, consumed)
            sent = self._sent.get((rid, consumed))
            if previous != (rid, consumed) or (sent is not None and time.monotonic() - sent < EOS_REPEAT_S):
                continue
            try:
                self.sock.send_multipart([peer, *self._frames], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                continue  # the peer went away meanwhile
            self._sent[(rid, consumed)] = time.monotonic()
            self.markers_sent += 1
            log.info("edge %s: end-of-stream sent on behalf of its finished upstream", self.key)

    def close(self) -> None:
        self.sock.close(0)


class Daemon:
    """Owns the workers of one graph. ``run()`` blocks until stopped (or, with
    ``exit_when_done``, until every worker has finished its stream) and returns the exit code."""

    def __init__(self, spec: GraphSpec, *, run_dir: str | Path | None = None, control: str = DEFAULT_CONTROL,
                 exit_when_done: bool = False, allow_remote: bool = False, snapshot: str | Path | None = None,
                 log_file: str | Path | None = None, spare: bool | None = None):
        self.spec = spec
        self.name = spec.name
        self.run_dir = Path(run_dir) if run_dir else default_run_dir()
        self.allow_remote = allow_remote or spec.options.allow_remote
        host = endpoint_host(control)
        if host is not None and host not in LOOPBACK_HOSTS and not self.allow_remote:
            raise GraphError("control", f"control socket {control!r} is not loopback; pass --allow-remote to expose it")
        self.control_endpoint = control
        self.exit_when_done = exit_when_done
        self.last_snapshot = str(Path(snapshot).resolve()) if snapshot else None
        self.log_file = Path(log_file) if log_file else self.run_dir / f"{self.name}.log"
        self.pid_file = self.run_dir / f"{self.name}.pid"
        self.info_file = info_path(self.run_dir, self.name)
        self.state_dir = self.run_dir / f"{self.name}.state"   # node files that outlive a worker
        self.stopping = False
        self.started = time.time()
        self._stop_deadline = 0.0
        self._snap: dict[str, Any] | None = None
        self._next_id = 1
        self._next_checkpoint = None
        self._started = False
        self._ctx = zmq.Context()
        self._scratch: Path | None = None
        self.supervisor: Supervisor | None = None
        self.final_metrics: dict[str, Any] | None = None
        self.ended_edges: dict[str, EndedEdge] = {}   # edge key -> held open for a finished upstream
        # a warm spare for long-lived daemons (serve); a run to completion (run, benchmarks) has
        # no CPU to spare for an idle process's warm-up
        self.use_spare = (not exit_when_done) if spare is None else spare
        self._spare: subprocess.Popen | None = None   # a warm process waiting to replace a dead worker

    # -- start ------------------------------------------------------------------------------
    def start(self) -> None:
        if self.last_snapshot:
            read_snapshot(self.last_snapshot)  # refuse an unreadable snapshot before anything runs
        self.metas = check_graph(self.spec)  # kinds and sensor sizes, before any process starts
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._claim_pid_file()
        shutil.rmtree(self.state_dir, ignore_errors=True)   # a previous daemon's: nothing resumes from it
        self.state_dir.mkdir(exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(prefix=f"sf-{self.name[:16]}-"))
        self.control = self._ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.bind(self.control_endpoint)
        self.control_endpoint = self.control.getsockopt_string(zmq.LAST_ENDPOINT)
        self.link = self._ctx.socket(zmq.ROUTER)
        self.link.setsockopt(zmq.LINGER, 0)
        self.link.bind("tcp://127.0.0.1:*")
        self.link_endpoint = self.link.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoints = edge_endpoints(self.spec, self._scratch)
        self.supervisor = Supervisor(self.spec.workers, self.spec.options, self._launch)
        self.supervisor.start_all()
        if self.spec.options.checkpoint_s > 0:
            self._next_checkpoint = time.monotonic() + self.spec.options.checkpoint_s
        info = {"name": self.name, "pid": os.getpid(), "control": self.control_endpoint,
                "graph": self.spec.source, "log": str(self.log_file), "run_dir": str(self.run_dir),
                "started": self.started, "workers": sorted(self.spec.workers)}
        tmp = self.info_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, self.info_file)  # its appearance means "ready": write it last, atomically
        log.info("daemon %s (pid %d) serving %s; control %s; workers %s", self.name, os.getpid(),
                 self.spec.source, self.control_endpoint, ", ".join(self.spec.workers))

    def _claim_pid_file(self) -> None:
        if self.pid_file.exists():
            try:
                old = int(self.pid_file.read_text().strip() or 0)
            except ValueError:
                old = 0
            if old and old != os.getpid() and pid_alive(old):
                raise SpikeflowError(f"a daemon named {self.name!r} already runs (pid {old}, {self.pid_file}); "
                                     f"stop it or rename the graph")
        self.pid_file.write_text(f"{os.getpid()}\n")

    def _launch(self, worker: str, incarnation: int) -> subprocess.Popen:
        cfg = {"graph": self.spec.raw, "worker": worker, "incarnation": incarnation, "daemon": self.link_endpoint,
               "metas": metas_to_json(self.metas), "endpoints": self.endpoints,
               "snapshot": self.last_snapshot, "allow_remote": self.allow_remote, "state_dir": str(self.state_dir)}
        path = self._scratch / f"{worker}-{incarnation}.json"
        path.write_text(json.dumps(cfg))
        spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            try:
                spare.stdin.write(f"{path}\n".encode())
                spare.stdin.close()
                log.info("worker %s: incarnation %d runs in the warm spare (pid %d)", worker, incarnation, spare.pid)
                return spare
            except OSError as e:  # it died meanwhile: start a fresh process
                log.warning("warm spare (pid %d) unusable: %s", spare.pid, e)
                _dismiss(spare)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as logf:
            return subprocess.Popen(worker_command(str(path)), stdin=subprocess.DEVNULL, stderr=logf,
                                    start_new_session=True)

    def _keep_spare(self) -> None:
        """Keep one warm spare while the graph runs, started when no worker is starting (a spare
        warming up competes for the CPU with starting workers)."""
        if not self.use_spare or not self._started or self.stopping:
            return
        if self._spare is not None and self._spare.poll() is None:
            return
        if any(w.state in ("starting", "restarting") for w in self.supervisor.workers.values()):
            return
        if self._spare is not None:  # a spare only exits when told to: something is wrong with it
            log.warning("warm spare (pid %d) exited with status %s; restarts start fresh processes from now on",
                        self._spare.pid, self._spare.returncode)
            self._spare, self.use_spare = None, False
            return
        path = self._scratch / "spare.json"
        path.write_text(json.dumps({"graph": self.spec.raw, "metas": metas_to_json(self.metas),
                                    "allow_remote": self.allow_remote, "warm_dir": str(self._scratch)}))
        with open(self.log_file, "ab") as logf:
            self._spare = subprocess.Popen(spare_command(str(path)), stdin=subprocess.PIPE, stderr=logf,
                                           start_new_session=True)

    # -- main loop --------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        old = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, lambda signum, _f: self.request_stop(f"signal {signum}"))
        try:
            if self.supervisor is None:
                self.start()
            return self._loop()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            self._cleanup()

    def request_stop(self, why: str = "stop request") -> None:
        if self.stopping:
            return
        log.info("daemon %s: %s: draining workers", self.name, why)
        self.stopping = True
        self.supervisor.stopping = True
        if self._spare is not None:
            _dismiss(self._spare, wait_s=0)
        self._stop_deadline = time.monotonic() + self.spec.options.drain_timeout_s + 10.0
        for w in self.supervisor.live():
            self._tell(w, {"cmd": "stop"})

    def _loop(self) -> int:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.link, zmq.POLLIN)
        sup = self.supervisor
        while True:
            for sock, _ in poller.poll(int(LOOP_S * 1000)):
                while sock.poll(0, zmq.POLLIN):
                    frames = sock.recv_multipart(copy=False)
                    if sock is self.control:
                        self._on_control(frames)
                    else:
                        self._on_link(frames)
            sup.check()
            self._hold_ended_edges()
            self._maybe_start()
            self._keep_spare()
            self._timers()
            if self.stopping:
                if not sup.live():
                    break
                if time.monotonic() > self._stop_deadline:
                    sup.kill_remaining()
                    break
            elif self.exit_when_done and sup.all_finished():
                break
        self._drain_link()
        self.final_metrics = self.metrics()
        failed = [w.name for w in sup.workers.values() if w.state == "failed" or (
            w.exit_code not in (0, None) and w.state != "done" and not self.stopping)]
        log.info("daemon %s exits (%s)", self.name, f"failed workers: {failed}" if failed else "clean")
        return 1 if failed and self.exit_when_done else 0

    def _hold_ended_edges(self) -> None:
        """Hold open the outgoing edges of finished workers (:class:`EndedEdge`) and serve them."""
        for e in self.ended_edges.values():
            e.pump()
        if self.stopping:
            return
        workers = self.supervisor.workers
        for consumer, inp in self.spec.cross_edges():
            key = edge_key(inp, consumer)
            up = workers[self.spec.nodes[inp.node].worker]
            if key in self.ended_edges or up.state != "done" or up.alive:
                continue
            if workers[self.spec.nodes[consumer].worker].state in ("done", "failed"):
                continue
            try:
                self.ended_edges[key] = EndedEdge(self._ctx, key, self.endpoints[key], f"{inp.node}.{inp.out_port}")
            except zmq.ZMQError as e:  # retried on the next turn of the loop
                log.warning("edge %s: cannot hold %s open for its finished upstream: %s", key,
                            self.endpoints[key], e)

    def _drain_link(self) -> None:
        """Read the final messages (``done`` with metrics) the workers sent before exiting."""
        while self.link.poll(100, zmq.POLLIN):
            self._on_link(self.link.recv_multipart(copy=False))

    def _timers(self) -> None:
        now = time.monotonic()
        snap = self._snap
        if snap is not None:
            for name, inc in list(snap["waiting"].items()):  # a worker that died cannot answer
                w = self.supervisor.workers[name]
                if w.incarnation != inc or not w.alive:
                    del snap["waiting"][name]
                    snap["absent"].append(name)
                    if snap["cmd"] == "load":
                        snap["errors"].append(f"{name}: died before it loaded the state")
            if not snap["waiting"]:
                self._finish_request()
            elif now > snap["deadline"]:
                self._finish_request(error=f"workers {sorted(snap['waiting'])} did not answer {snap['cmd']} in time")
        if self._next_checkpoint is not None and now >= self._next_checkpoint and self._started and not self.stopping:
            # from the graph's start on: before it, no node has changed the state it was built with
            self._next_checkpoint = now + self.spec.options.checkpoint_s
            if self._snap is None:
                self._begin_request("snapshot", None, str(self.run_dir / f"{self.name}-checkpoint.npz"))

    def _tell(self, w, msg: dict) -> None:
        try:
            self.link.send_multipart([w.identity, json.dumps(msg).encode()], flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.warning("cannot reach worker %s: %s", w.name, e)

    def _on_link(self, frames) -> None:
        identity = frames[0].bytes
        w = self.supervisor.by_identity(identity)
        if w is None:
            return
        try:
            head, arrays = json.loads(frames[1].bytes), {}
            if not isinstance(head, dict):
                return
            if "arrays" in head:
                head, arrays = unpack_arrays(frames[1:])
        except (ValueError, SpikeflowError) as e:
            log.warning("bad message from worker %s: %s", w.name, e)
            return
        kind = head.get("type")
        if kind in ("state", "reply"):
            self._on_reply(w.name, head, arrays)
            w.last_seen = time.monotonic()
        else:
            self.supervisor.on_message(w, head)
        if kind == "hello":
            if self.stopping:
                self._tell(w, {"cmd": "stop"})
            elif self._started:
                self._start(w)  # a restarted worker joins a running graph
            else:
                self._maybe_start()

    def _start(self, w) -> None:
        """Open a worker's source gate; a restarted one first learns where its sources resume."""
        if any(w.positions.values()):
            self._tell(w, {"cmd": "resume", "positions": w.positions})
            log.info("worker %s: sources resume at %s", w.name,
                     ", ".join(f"{n} packet {s}" for n, s in sorted(w.positions.items())))
        self._tell(w, {"cmd": "start"})

    def _maybe_start(self) -> None:
        """Once every worker is connected (or given up on), open all source gates together."""
        ws = self.supervisor.workers.values()
        if not self._started and all(x.hello or x.state == "failed" for x in ws):
            self._started = True
            for x in ws:
                if x.alive:
                    self._start(x)

    # -- control requests -------------------------------------------------------------------
    def _on_control(self, frames) -> None:
        if len(frames) < 3:
            return
        client = [frames[0].bytes, b""]
        try:
            req = json.loads(frames[-1].bytes)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            cmd = req.get("cmd")
            if cmd == "status":
                reply = self.status()
            elif cmd == "metrics":
                reply = self.metrics()
            elif cmd == "stop":
                self.request_stop("stop command")
                reply = {"state": "stopping"}
            elif cmd in ("snapshot", "load"):
                if self._snap is not None:
                    raise SpikeflowError(f"a {self._snap['cmd']} is already in progress")
                path = req.get("path") or str(self.run_dir / f"{self.name}-snapshot.npz")
                if cmd == "load":
                    read_snapshot(path)
                self._begin_request(cmd, client, str(Path(path).resolve()))
                return  # answered when the workers have
            else:
                raise SpikeflowError(f"unknown command {cmd!r}; commands: status, metrics, stop, snapshot, load")
            self._answer(client, {"ok": True, **reply})
        except (ValueError, SpikeflowError) as e:
            self._answer(client, {"ok": False, "error": str(e)})

    def _answer(self, client: list | None, reply: dict) -> None:
        if client is not None:
            self.control.send_multipart([*client, json.dumps(reply).encode()])

    def _begin_request(self, cmd: str, client, path: str) -> None:
        """Ask every ready worker; a snapshot keeps the others' state from the last snapshot
        (:func:`carry_over`), so a checkpoint taken while a worker starts or restarts is whole."""
        workers = self.supervisor.workers.values()
        ready = [w for w in workers if w.alive and w.hello]
        rid = self._next_id
        self._next_id += 1
        self._snap = {"cmd": cmd, "id": rid, "client": client, "path": path, "arrays": {}, "loaded": [],
                      "waiting": {w.name: w.incarnation for w in ready}, "errors": [],
                      "absent": sorted(w.name for w in workers if w not in ready),
                      "deadline": time.monotonic() + self.spec.options.drain_timeout_s + 20.0}
        for w in ready:
            self._tell(w, {"cmd": cmd, "id": rid, "path": path})
        if not ready:
            self._finish_request()

    def _on_reply(self, worker: str, head: dict, arrays: dict) -> None:
        snap = self._snap
        if snap is None or head.get("id") != snap["id"] or worker not in snap["waiting"]:
            return
        del snap["waiting"][worker]
        if not head.get("ok"):
            snap["errors"].append(f"{worker}: {head.get('error')}")
        snap["arrays"].update(arrays)
        snap["loaded"] += list(head.get("result") or [])
        if not snap["waiting"]:
            self._finish_request()

    def _finish_request(self, error: str | None = None) -> None:
        snap, self._snap = self._snap, None
        errors = snap["errors"] + ([error] if error else [])
        if errors:
            log.error("%s failed: %s", snap["cmd"], "; ".join(errors))
            self._answer(snap["client"], {"ok": False, "error": "; ".join(errors)})
            return
        if snap["cmd"] == "snapshot":
            carried = self._carry_absent(snap)
            save_snapshot(snap["path"], snap["arrays"])
            self.last_snapshot = snap["path"]
            log.info("snapshot of %d arrays saved to %s%s", len(snap["arrays"]), snap["path"],
                     f" ({len(carried)} carried over from the last snapshot for workers not ready: "
                     f"{', '.join(sorted(snap['absent']))})" if carried else "")
            self._answer(snap["client"], {"ok": True, "path": snap["path"], "arrays": len(snap["arrays"]),
                                          "keys": sorted(snap["arrays"]), "carried": carried})
        else:
            self.last_snapshot = snap["path"]   # (what a worker started from now on loads)
            log.info("state loaded from %s into %s", snap["path"], snap["loaded"])
            # a worker already starting when the load began was launched with the previous snapshot
            late = [n for n in snap["absent"] if self.supervisor.workers[n].alive]
            if late:
                log.warning("load: workers %s were starting and keep their previous state; load again once "
                            "they run", ", ".join(late))
            self._answer(snap["client"], {"ok": True, "path": snap["path"], "loaded": sorted(snap["loaded"]),
                                          "not_loaded": late})

    def _carry_absent(self, snap: dict) -> list[str]:
        if not snap["absent"] or not self.last_snapshot:
            return []
        try:
            previous = read_snapshot(self.last_snapshot)
        except SpikeflowError as e:
            log.warning("cannot carry over state of workers %s: %s", ", ".join(snap["absent"]), e)
            return []
        nodes = [n for w in snap["absent"] for n in self.supervisor.workers[w].nodes]
        return carry_over(snap["arrays"], previous, nodes)

    # -- reports ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        workers = {}
        for w in self.supervisor.workers.values():
            workers[w.name] = {"pid": w.pid, "state": w.state, "alive": w.alive, "restarts": w.restarts,
                               "incarnation": w.incarnation, "nodes": w.nodes, "exit_code": w.exit_code,
                               "heartbeat_age_s": round(now - w.last_seen, 3), "error": w.last_error,
                               "last_restart": w.last_restart, "positions": w.positions,
                               "duplicates_dropped": _duplicates(w.metrics)}
        return {"name": self.name, "pid": os.getpid(), "graph": self.spec.source,
                "state": "stopping" if self.stopping else "running", "uptime_s": round(time.time() - self.started, 3),
                "control": self.control_endpoint, "restarts": self.supervisor.total_restarts,
                "ended_edges": {k: e.markers_sent for k, e in sorted(self.ended_edges.items())},
                "spare": self._spare_status(),
                "last_snapshot": self.last_snapshot, "log": str(self.log_file), "workers": workers}

    def _spare_status(self) -> dict[str, Any] | None:
        sp = self._spare
        if sp is None or sp.poll() is not None:
            return None
        return {"pid": sp.pid, "warm": spare_marker(self._scratch, sp.pid).exists()}

    def metrics(self) -> dict[str, Any]:
        nodes, edges, workers = {}, {}, {}
        for w in self.supervisor.workers.values():
            cur = w.metrics.get("nodes") or {}
            for name in w.nodes:
                d = cur.get(name) or {}
                merged = merge_node_dicts(w.previous.get(name), d)
                nodes[name] = {**merged, "worker": w.name, "type": self.spec.nodes[name].type,
                               "stats": d.get("stats", {}), "sink": d.get("sink", False)}
            for key, st in (w.metrics.get("edges") or {}).items():
                edges.setdefault(key, {})[st.get("side", "?")] = st
            workers[w.name] = {"state": w.state, "pid": w.pid, "restarts": w.restarts,
                               "inbox": w.metrics.get("inbox", 0), "uptime_s": w.metrics.get("uptime_s", 0.0)}
        return {"name": self.name, "time": time.time(), "workers": workers, "edges": edges,
                "restarts": self.supervisor.total_restarts, **summarize(nodes, edges)}

    # -- cleanup ----------------------------------------------------------------------------
    def _cleanup(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stopping = True
            self.supervisor.kill_remaining()
        if self._spare is not None:
            _dismiss(self._spare, wait_s=0.5)
            self._spare = None
        for e in self.ended_edges.values():
            e.close()
        for sock in ("control", "link"):
            s = getattr(self, sock, None)
            if s is not None:
                s.close(0)
        self._ctx.term()
        if self._scratch is not None:   # (it was ours: the pid file was claimed before it was made)
            shutil.rmtree(self.state_dir, ignore_errors=True)
        for p in (self.info_file, self.pid_file):
            _remove_if_ours(p)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _duplicates(metrics: dict[str, Any]) -> int:
    """Repeats of resumed sources dropped in a worker (its incoming edges and its nodes), as of
    its last heartbeat."""
    n = sum(int(e.get("duplicates_dropped") or 0) for e in (metrics.get("edges") or {}).values()
            if e.get("side") == "recv")
    return n + sum(int((d.get("stats") or {}).get("duplicates_dropped") or 0)
                   for d in (metrics.get("nodes") or {}).values())


def _dismiss(spare: subprocess.Popen, wait_s: float = 5.0) -> None:
    """End a warm spare: end of its stdin makes it exit; SIGKILL if it does not within ``wait_s``."""
    try:
        spare.stdin.close()
    except OSError:
        pass
    if wait_s <= 0:
        return
    try:
        spare.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        spare.kill()
        spare.wait(timeout=5)


def _remove_if_ours(path: Path) -> None:
    """Remove a pid/info file only if it names this process (a successor may own it by now)."""
    try:
        text = path.read_text()
        pid = json.loads(text).get("pid") if path.suffix == ".json" else int(text.strip() or 0)
    except (OSError, ValueError, AttributeError):
        return
    if pid == os.getpid():
        path.unlink(missing_ok=True)


def detach(argv: list[str], run_dir: Path, name: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Start ``spikeflow serve`` (without --detach) in the background and wait until it is ready."""
    import sys

    run_dir.mkdir(parents=True, exist_ok=True)
    info = info_path(run_dir, name)
    with open(run_dir / f"{name}.log", "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "spikeflow", *argv], stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=logf, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SpikeflowError(f"daemon exited with status {proc.returncode} during start; see {run_dir / (name + '.log')}")
        try:
            d = json.loads(info.read_text())
            if d.get("pid") == proc.pid:
                return d
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise SpikeflowError(f"daemon not ready within {timeout_s}s; see {run_dir / (name + '.log')}")
