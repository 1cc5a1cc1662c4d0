"""Graph runtime throughput and latency across 0, 1 and 2 worker hops, against raw pyzmq.

    .venv/bin/python bench/runtime_hops.py [--repeats 3] [--quick] [--only throughput|latency] [--sizes 1000 ...]
                                           [--threads]

Graph: zmq_input (fed from memory) -> refractory_filter (0 µs: passes everything, one kernel
pass that reads every event, no copy) -> refractory_filter -> print sink, with the nodes spread over 1, 2 or 3
worker processes (0, 1, 2 hops) by the daemon, edges lossless over ipc or tcp. The source is a
``zmq_input`` (``check_events = false``) that this script feeds from a PUSH socket with 1 ms
packets of K events held in memory and encoded before the clock starts, so the runtime (not a
file decoder) is measured; the feeding connection uses the graph's transport. Throughput = sink
packets / (sink's last packet - sink's first packet) (scaled by N/(N-1)), so process start-up is
excluded. Reference, measured in the same run: raw pyzmq PUSH/PULL between processes carrying
the same protocol-v1 frames (the feeder's, one set per packet, encoded before the clock starts;
no decode) over the same socket path (the feeding
connection plus one per hop). Latency: the same graphs fed in real time (1 ms packets of 1k
events, i.e. 1 M events/s, a busy DVS128, stamped when sent), end-to-end p50/p99 from the
sink's histogram. Medians over ``--repeats`` runs.

CPU per packet: the pipeline processes' CPU time (user + system, all threads; the daemon and the
feeder excluded, on both sides) over the same span, per packet, sampled from /proc every 5 ms
(psutil). Wall-clock throughput on a shared 2-core machine follows the load of other jobs;
CPU per packet barely does, so ``cpu ratio`` (raw CPU / ours) is the steadier comparison of
what each side costs per packet. Every ratio pairs ours and raw pyzmq of the same repeat.
``--threads`` splits that CPU per process and thread (a worker's main thread is its node thread;
ZeroMQ's I/O thread; the rest), for ours and for raw pyzmq's relays, to show where they differ.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from spikeflow.service.events import EVENT_DTYPE, SensorSize
from spikeflow.service.graph import load_graph

SIZE = SensorSize(128, 128, 2)


def synthetic(per_packet: int, packets: int) -> list[np.ndarray]:
    """``packets`` windows of 1 ms, each with ``per_packet`` events at random pixels (in memory)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(packets):
        ev = np.zeros(per_packet, EVENT_DTYPE)
        ev["t"] = k * 1000 + np.sort(rng.integers(0, 1000, per_packet))
        ev["x"] = rng.integers(0, 128, per_packet)
        ev["y"] = rng.integers(0, 128, per_packet)
        ev["p"] = rng.integers(0, 2, per_packet)
        out.append(ev)
    return out


def feed_packet(k: int, ev: np.ndarray, sent_ns: int = 0):
    """Packet ``k`` of the feeder's stream ``feed``: window [k ms, k+1 ms)."""
    from spikeflow.service.packet import Packet

    return Packet("events", "feed", k, SIZE, k * 1000, (k + 1) * 1000, sent_ns, ev)


def feed_frames(windows: list[np.ndarray]) -> list[list[bytes]]:
    """The protocol-v1 frames of ``windows`` as the unpaced feeder sends them, one set per packet."""
    from spikeflow.service.protocol import encode

    return [[bytes(f) for f in encode(feed_packet(k, ev))] for k, ev in enumerate(windows)]


def feed(endpoint: str, windows: list[np.ndarray], paced: bool, stop: threading.Event, started=None) -> None:
    """Push ``windows`` into the graph's zmq_input, then an end-of-stream heartbeat.

    Unpaced: every packet is encoded before the first send (the clock runs at the sink anyway).
    Paced: one packet per ms of wall clock, stamped (``sent_ns``) and encoded when it is sent,
    from when ``started()`` is true (the daemon opened the sources' gates), so worker start-up
    is not counted as latency.
    """
    import zmq

    from spikeflow.service.packet import Packet, now_ns
    from spikeflow.service.protocol import encode

    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 10_000)
    push.bind(endpoint)   # the graph's zmq_input connects: nothing goes before it is there
    encoded = None if paced else feed_frames(windows)
    if paced and started is not None:
        while not started() and not stop.is_set():
            time.sleep(0.01)
        time.sleep(0.3)   # the source thread is polling its socket by now
    t_next = time.perf_counter()
    for k, ev in enumerate(windows):
        if stop.is_set():
            break
        if paced:
            t_next += 1e-3
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            frames = encode(feed_packet(k, ev, now_ns()))
        else:
            frames = encoded[k]
        push.send_multipart(frames, copy=False)
    push.send_multipart(encode(Packet("heartbeat", "feed", sent_ns=now_ns(), data={"eos": True})))
    push.close()
    ctx.term()


def graph_text(src_ep: str, hops: int, transport: str) -> str:
    workers = {0: ("main", "main", "main"), 1: ("main", "w1", "w1"), 2: ("w1", "w2", "w2")}[hops]
    return f"""
[graph]
name = "bench{hops}{transport}"
transport = "{transport}"
[nodes.src]
type = "zmq_input"
params = {{ endpoint = "{src_ep}", bind = false, sensor_size = [128, 128, 2], check_events = false, stop_on_eos = true }}
[nodes.f1]
type = "refractory_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ refractory_us = 0 }}
worker = "{workers[0]}"
[nodes.f2]
type = "refractory_filter"
inputs = {{ events_in = "f1.events_out" }}
params = {{ refractory_us = 0 }}
worker = "{workers[1]}"
[nodes.sink]
type = "print"
inputs = {{ events_in = "f2.events_out" }}
params = {{ every = 1000000000 }}
worker = "{workers[2]}"
"""


class CpuSampler:
    """CPU time (user + system, all threads) of some processes, sampled every ``period_s`` with
    wall-clock stamps, so that the CPU they spent between two instants can be read afterwards."""

    def __init__(self, pids, period_s: float = 0.005, by_thread: bool = False):
        self.pids, self.period_s, self.by_thread = pids, period_s, by_thread
        self.series: dict[int, list[tuple[int, float]]] = {}
        self.thread_series: dict[tuple[int, int], list[tuple[int, float]]] = {}
        self.thread_names: dict[tuple[int, int], str] = {}
        self._procs: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while True:
            for pid in self.pids():
                try:
                    proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                    ct = proc.cpu_times()
                    threads = proc.threads() if self.by_thread else ()
                except psutil.Error:
                    continue
                now = time.time_ns()
                self.series.setdefault(pid, []).append((now, ct.user + ct.system))
                for th in threads:
                    key = (pid, th.id)
                    if self.thread_names.get(key, "?") in ("?", "python"):  # (ZeroMQ names its threads
                        try:                                                  # once they run)
                            self.thread_names[key] = Path(f"/proc/{pid}/task/{th.id}/comm").read_text().strip()
                        except OSError:
                            self.thread_names[key] = "?"
                    self.thread_series.setdefault(key, []).append((now, th.user_time + th.system_time))
            if self._stop.wait(self.period_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def threads_between(self, t0_ns: int, t1_ns: int, names: dict[int, str]) -> dict[str, float]:
        """CPU seconds per thread role between two instants: ``<process> main`` (the main
        thread: a worker's node thread, a relay's loop), ``<process> zmq-io`` (ZeroMQ's I/O
        threads) and ``<process> other`` (the rest), where ``names`` maps pid -> process name.
        psutil reads clock ticks (10 ms), so a role needs well over a second of CPU per run."""
        out: dict[str, float] = {}
        for (pid, tid), pts in self.thread_series.items():
            comm = self.thread_names.get((pid, tid), "?")
            role = "main" if tid == pid else ("zmq-io" if comm.startswith("ZMQbg/IO") else "other")
            key = f"{names.get(pid, pid)} {role}"
            out[key] = out.get(key, 0.0) + _spent(pts, t0_ns, t1_ns)
        return out

    def between(self, t0_ns: int, t1_ns: int) -> float:
        """Seconds of CPU all sampled processes spent between two wall-clock instants (linear
        interpolation between samples)."""
        return sum(_spent(pts, t0_ns, t1_ns) for pts in self.series.values())


def _spent(pts: list[tuple[int, float]], t0_ns: int, t1_ns: int) -> float:
    """CPU seconds a sampled series ``[(wall ns, CPU s)]`` grew by between two instants (linear
    interpolation between samples)."""
    ts = np.array([t for t, _ in pts], dtype=np.float64)
    cs = np.array([c for _, c in pts])
    return float(np.interp(t1_ns, ts, cs) - np.interp(t0_ns, ts, cs))


def run_graph(windows: list[np.ndarray], hops: int, transport: str, paced: bool, tmp: Path,
              by_thread: bool = False) -> dict:
    from spikeflow.service.daemon import Daemon

    src_ep = f"ipc://{tmp}/feed{hops}.sock" if transport == "ipc" else f"tcp://127.0.0.1:{_port()}"
    spec = load_graph(graph_text(src_ep, hops, transport))
    d = Daemon(spec, run_dir=tmp / "run", exit_when_done=True)
    d.start()   # the dry build (which opens and closes a zmq_input too) is over before we feed
    cpu = CpuSampler(lambda: [w.pid for w in d.supervisor.workers.values() if w.alive], by_thread=by_thread)
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(src_ep, windows, paced, stop, lambda: d._started), daemon=True)
    feeder.start()
    try:
        assert d.run(install_signals=False) == 0, "bench graph failed; see " + str(d.log_file)
    finally:
        stop.set()
        feeder.join(30)
        cpu.stop()
    m = d.final_metrics["nodes"]
    sink = m["sink"]
    t0_ns, t1_ns = _span(d, "sink", "sink")
    names = {w.pid: f"{w.name} [{', '.join(w.nodes)}]" for w in d.supervisor.workers.values()}
    return {"events": sink["events_in"], "packets": sink["packets_in"], "span_s": (t1_ns - t0_ns) / 1e9,
            "cpu_s": cpu.between(t0_ns, t1_ns), "p50_us": sink["latency"]["p50_us"],
            "p99_us": sink["latency"]["p99_us"], "threads_s": cpu.threads_between(t0_ns, t1_ns, names)}


def _span(d, first: str, last: str) -> tuple[int, int]:
    """Wall-clock ns of ``first``'s first packet and ``last``'s last packet."""
    from spikeflow.service.metrics import NodeMetrics

    spans = {}
    for w in d.supervisor.workers.values():
        for name, nd in (w.metrics.get("nodes") or {}).items():
            spans[name] = NodeMetrics.from_dict(nd)
    return spans[first].first_ns, spans[last].last_ns


# -- raw pyzmq reference ----------------------------------------------------------------------

def _raw_relay(pull_ep: str, push_ep: str | None, n: int, ready, done) -> None:
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(pull_ep)
    push = None
    if push_ep:
        push = ctx.socket(zmq.PUSH)
        push.connect(push_ep)
    ready.set()
    for _ in range(n):
        frames = pull.recv_multipart(copy=False)
        if push is not None:
            push.send_multipart(frames, copy=False)
    if push is None:
        done.put((time.perf_counter(), time.time_ns()))
    ctx.destroy(linger=1000)


def raw_pyzmq(windows: list[np.ndarray], hops: int, transport: str, tmp: Path,
              threads: dict | None = None) -> tuple[float, float]:
    """Seconds to push ``windows`` as protocol frames through ``hops`` raw PUSH/PULL hops, and
    the CPU seconds the relay processes spent meanwhile (per thread role into ``threads``, if
    given)."""
    import zmq

    # the very frames the graph's feeder sends (one set per packet, as in memory there): sending
    # one cached set over and over would spare the reference the reads a real stream costs
    encoded = feed_frames(windows)
    packets = len(encoded)
    ctx_mp = mp.get_context("spawn")
    eps = [f"ipc://{tmp}/raw{hops}-{i}" if transport == "ipc" else f"tcp://127.0.0.1:{_port()}"
           for i in range(hops)]
    done = ctx_mp.Queue()
    procs, readies = [], []
    for i in range(hops):
        r = ctx_mp.Event()
        p = ctx_mp.Process(target=_raw_relay, args=(eps[i], eps[i + 1] if i + 1 < hops else None, packets, r, done))
        p.start()
        procs.append(p)
        readies.append(r)
    for r in readies:
        r.wait(60)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(eps[0])
    pids = [p.pid for p in procs]
    cpu = CpuSampler(lambda: pids, by_thread=threads is not None)
    time.sleep(0.2)  # connections established (and CPU sampled) before the clock starts
    t0, t0_ns = time.perf_counter(), time.time_ns()
    for frames in encoded:
        push.send_multipart(frames, copy=False)
    t1, t1_ns = done.get(timeout=300)
    cpu.stop()
    for p in procs:
        p.join(30)
    ctx.destroy(linger=0)
    if threads is not None:
        names = {pid: (f"relay {i + 1}" if i + 1 < hops else "final") for i, pid in enumerate(pids)}
        threads.update(cpu.threads_between(t0_ns, t1_ns, names))
    return t1 - t0, cpu.between(t0_ns, t1_ns)


def print_thread_split(split: list[tuple[dict, dict]]) -> None:
    """Per process and thread role, CPU µs per packet (median over repeats), ours then raw."""
    for side, label in ((0, "ours"), (1, "raw pyzmq")):
        keys = sorted({k for s in split for k in s[side]})
        parts = [f"{k} {statistics.median(s[side].get(k, 0.0) for s in split) * 1e6:.1f}" for k in keys]
        print(f"{'':>10}   {label}: " + "; ".join(p for p in parts if not p.endswith(" 0.0")), flush=True)


def _port() -> int:
    from spikeflow.service.runtime import free_tcp_port

    return free_tcp_port()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer packets (a smoke run)")
    ap.add_argument("--only", choices=("throughput", "latency"), help="run one of the two tables")
    ap.add_argument("--sizes", type=int, nargs="+", choices=(1_000, 10_000, 100_000), default=None,
                    help="events per packet of the throughput table (default: all three)")
    ap.add_argument("--threads", action="store_true",
                    help="also split each row's CPU per packet by process and thread (main / ZeroMQ I/O / other), "
                         "ours and raw pyzmq, over 5x the packets (per-thread times come in 10 ms ticks); a "
                         "diagnosis: the per-thread sampling itself takes CPU from both sides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="sfbench-"))
    scale = 0.2 if args.quick else 1.0
    plan = {1_000: int(3000 * scale), 10_000: int(400 * scale), 100_000: int(60 * scale)}
    if args.threads:
        plan = {k: 5 * v for k, v in plan.items()}
    plan = {k: v for k, v in plan.items() if args.sizes is None or k in args.sizes}
    rows = []
    print(f"# throughput, medians of {args.repeats}; ratio = ours / raw pyzmq (same frames, same hops, "
          "paired per repeat); cpu = CPU us per packet of the pipeline processes; cpu ratio = raw / ours")
    print(f"{'events/pkt':>10} {'hops':>4} {'via':>4} {'pkt/s':>9} {'Mev/s':>7} {'raw pkt/s':>10} {'raw Mev/s':>9} "
          f"{'ratio':>6} {'cpu us':>7} {'raw cpu':>7} {'cpu ratio':>9}")
    for per, packets in (plan.items() if args.only != "latency" else ()):
        src = synthetic(per, packets)
        for hops in (0, 1, 2):
            for transport in (("ipc",) if hops == 0 else ("ipc", "tcp")):
                ours, raw, cpu, raw_cpu, split = [], [], [], [], []
                for _ in range(args.repeats):
                    r = run_graph(src, hops, transport, False, tmp, by_thread=args.threads)
                    assert r["events"] == per * packets, r
                    ours.append(r["span_s"] * packets / (packets - 1))  # sink span covers packets - 1 gaps
                    cpu.append(r["cpu_s"] / (packets - 1))
                    raw_threads = {} if args.threads else None
                    tr, cr = raw_pyzmq(src, hops + 1, transport, tmp, raw_threads)  # + the feeding connection
                    raw.append(tr)
                    raw_cpu.append(cr / packets)
                    split.append(({k: v / (packets - 1) for k, v in r["threads_s"].items()},
                                  {k: v / packets for k, v in (raw_threads or {}).items()}))
                t, tr = statistics.median(ours), statistics.median(raw)
                c, cr = statistics.median(cpu), statistics.median(raw_cpu)
                row = {"per": per, "hops": hops, "via": transport if hops else "-", "pkt_s": packets / t,
                       "mev_s": per * packets / t / 1e6, "raw_pkt_s": packets / tr,
                       "raw_mev_s": per * packets / tr / 1e6,
                       "ratio": statistics.median(b / a for a, b in zip(ours, raw)),
                       "cpu_us": c * 1e6, "raw_cpu_us": cr * 1e6,
                       "cpu_ratio": statistics.median(b / a for a, b in zip(cpu, raw_cpu))}
                rows.append(row)
                print(f"{per:>10} {hops:>4} {row['via']:>4} {row['pkt_s']:>9.0f} {row['mev_s']:>7.1f} "
                      f"{row['raw_pkt_s']:>10.0f} {row['raw_mev_s']:>9.1f} {row['ratio']:>6.2f} "
                      f"{row['cpu_us']:>7.1f} {row['raw_cpu_us']:>7.1f} {row['cpu_ratio']:>9.2f}", flush=True)
                if args.threads:
                    print_thread_split(split)
    print("\n# latency, paced real time: 1 ms packets of 1k events (1 M events/s), medians of p50/p99")
    print(f"{'hops':>4} {'via':>4} {'p50 us':>8} {'p99 us':>8}")
    src = synthetic(1000, int(2000 * scale))
    for hops in ((0, 1, 2) if args.only != "throughput" else ()):
        for transport in (("ipc",) if hops == 0 else ("ipc", "tcp")):
            res = [run_graph(src, hops, transport, True, tmp) for _ in range(args.repeats)]
            p50 = statistics.median(r["p50_us"] for r in res)
            p99 = statistics.median(r["p99_us"] for r in res)
            print(f"{hops:>4} {transport if hops else '-':>4} {p50:>8.0f} {p99:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
