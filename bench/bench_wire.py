"""Wire protocol benchmark: our edges (protocol v1 + credit flow control) against raw pyzmq.

For 0 hops (direct call, as chained nodes in one worker), 1 hop and 2 hops (a relay worker in
the middle) over inproc (threads, one process), ipc and tcp (one process per worker), and for
packets of 1k, 10k and 100k real DvsGesture events, it measures:

* throughput at the sink (packets/s, M events/s; first to last packet, median of repeats) for
  ours (``EdgeSender``/``EdgeReceiver``: encode, credits, zero-copy decode) and for raw pyzmq
  PUSH/PULL ``send_multipart`` of the very same frames (no encode, no decode) in the same run;
* latency p50/p99 per chain for 1 ms packets at DVS128 rates (real 1 ms windows, ~100 events),
  paced at 1 kHz, send-to-receive wall clock, ours and raw measured the same way.

    .venv/bin/python bench/bench_wire.py                  # prints the tables
    .venv/bin/python bench/bench_wire.py --write          # also updates docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GESTURES = REPO.parent / "shared" / "recordings" / "slayer-dvsgesture"
DVS128 = (128, 128, 2)
WINDOW = 32  # credit window of our edges == HWM of the raw sockets (same memory bound)
WARMUP = 40  # packets sent before timing starts (connections up, caches warm)
_CPU = {"clock": time.thread_time}  # process_time in worker processes (counts ZeroMQ's I/O thread)


def load_events() -> np.ndarray:
    """The ten real DvsGesture clips, one after the other on the time axis."""
    import tonic.io

    from spikeflow.service.events import make_events

    parts, offset = [], 0
    for i in range(1, 11):
        raw = tonic.io.read_mnist_file(str(GESTURES / f"{i}.bs2"),
                                       dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
        parts.append(make_events(raw["t"] + offset, raw["x"], raw["y"], raw["p"]))
        offset += 1_450_000
    return np.concatenate(parts)


def make_packets(events: np.ndarray, size: int | None, limit: int):
    """Packets of ``size`` events (or real 1 ms windows when size is None), as views."""
    from spikeflow.service.packet import Packet

    out = []
    if size is None:
        t = events["t"]
        for k, t0 in enumerate(range(0, int(t[-1]), 1000)):
            i0, i1 = np.searchsorted(t, [t0, t0 + 1000])
            out.append(Packet("events", "dvs", k, DVS128, t0, t0 + 1000, 0, events[i0:i1]))
            if len(out) == limit:
                break
        return out
    for k in range(min(limit, len(events) // size)):
        ev = events[k * size:(k + 1) * size]
        out.append(Packet("events", "dvs", k, DVS128, int(ev["t"][0]), int(ev["t"][-1]) + 1, 0, ev))
    return out


# -- roles (each runs in a thread or a process) ----------------------------------------------

def source(ctx, ours, ep, packets, n, pace_s, out):
    import zmq

    from spikeflow.service.edges import EdgeSender
    from spikeflow.service.protocol import encode

    sent_ns = np.zeros(n, np.int64)
    n += WARMUP
    if ours:
        tx = EdgeSender(ep, policy="lossless", queue=WINDOW, context=ctx)
    else:
        tx = ctx.socket(zmq.PUSH)
        tx.setsockopt(zmq.SNDHWM, WINDOW)
        tx.bind(ep)
        frames = [encode(p) for p in packets]
    m = len(packets)
    t_next = time.perf_counter()
    for i in range(n):
        if i == WARMUP:
            time.sleep(0.2)  # let the warm-up drain: timing starts on an idle chain
            t_next = time.perf_counter()
            cpu0 = _CPU["clock"]()
        if pace_s:
            t_next += pace_s
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if i >= WARMUP:
            sent_ns[i - WARMUP] = time.time_ns()
        if ours:
            p = packets[i % m]
            p.seq = i
            tx.send(p)
        else:
            tx.send_multipart(frames[i % m], copy=False)
    out["cpu_s"] = _CPU["clock"]() - cpu0
    if ours:
        tx.drain(30_000)
        tx.close()
    else:
        tx.close(linger=30_000)
    out["sent_ns"] = sent_ns


def relay(ctx, ours, ep_in, ep_out, n, out):
    import zmq

    n += WARMUP
    from spikeflow.service.edges import EdgeReceiver, EdgeSender

    if ours:
        rx = EdgeReceiver(ep_in, context=ctx)
        tx = EdgeSender(ep_out, policy="lossless", queue=WINDOW, context=ctx)
        for i in range(n):
            if i == WARMUP:
                cpu0 = _CPU["clock"]()
            tx.send(rx.recv())
        out["cpu_s"] = _CPU["clock"]() - cpu0
        tx.drain(30_000)
        tx.close()
        rx.close()
    else:
        rx, tx = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        rx.setsockopt(zmq.RCVHWM, WINDOW)
        tx.setsockopt(zmq.SNDHWM, WINDOW)
        rx.connect(ep_in)
        tx.bind(ep_out)
        for i in range(n):
            if i == WARMUP:
                cpu0 = _CPU["clock"]()
            tx.send_multipart(rx.recv_multipart(copy=False), copy=False)
        out["cpu_s"] = _CPU["clock"]() - cpu0
        tx.close(linger=30_000)
        rx.close()


def sink(ctx, ours, ep, n, out):
    import zmq

    from spikeflow.service.edges import EdgeReceiver

    recv_ns = np.zeros(n + WARMUP, np.int64)
    events = 0
    if ours:
        rx = EdgeReceiver(ep, context=ctx)
        for i in range(n + WARMUP):
            if i == WARMUP:
                cpu0 = _CPU["clock"]()
            p = rx.recv()
            recv_ns[i] = time.time_ns()
            events += len(p.events) if i >= WARMUP else 0
        assert rx.stats()["missing"] == 0 and rx.stats()["rejected_total"] == 0
    else:
        rx = ctx.socket(zmq.PULL)
        rx.setsockopt(zmq.RCVHWM, WINDOW)
        rx.connect(ep)
        for i in range(n + WARMUP):
            if i == WARMUP:
                cpu0 = _CPU["clock"]()
            frames = rx.recv_multipart(copy=False)
            recv_ns[i] = time.time_ns()
            events += len(frames[2]) // 14 if i >= WARMUP else 0
    out["cpu_s"] = _CPU["clock"]() - cpu0
    rx.close()
    out["recv_ns"], out["events"] = recv_ns[WARMUP:], events


def endpoints(transport: str, hops: int) -> list[str]:
    eps = []
    for k in range(hops):
        if transport == "inproc":
            eps.append(f"inproc://bench{k}")
        elif transport == "ipc":
            eps.append(f"ipc://{tempfile.gettempdir()}/sf-bench-{os.getpid()}-{k}.sock")
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                eps.append(f"tcp://127.0.0.1:{s.getsockname()[1]}")
    return eps


def _in_process(role, args, conn):
    import zmq

    _CPU["clock"] = time.process_time
    ctx = zmq.Context()
    out: dict = {}
    role(ctx, *args, out)
    ctx.term()
    conn.send(out)


def run_chain(transport, hops, ours, packets, n, pace_s=0.0):
    """Run source -> (relay) -> sink; returns (send times, receive times, events received)."""
    eps = endpoints(transport, hops)
    roles = [(source, (ours, eps[0], packets, n, pace_s))]
    roles += [(relay, (ours, eps[k], eps[k + 1], n)) for k in range(hops - 1)]
    roles += [(sink, (ours, eps[-1], n))]
    if transport == "inproc":
        import zmq

        ctx = zmq.Context()
        outs = [dict() for _ in roles]
        threads = [threading.Thread(target=r, args=(ctx, *a, o)) for (r, a), o in zip(roles, outs)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        ctx.term()
    else:
        fork = mp.get_context("fork")
        pipes = [fork.Pipe(duplex=False) for _ in roles]
        procs = [fork.Process(target=_in_process, args=(r, a, w)) for (r, a), (_, w) in zip(roles, pipes)]
        for p in procs:
            p.start()
        outs = [rd.recv() for rd, _ in pipes]
        for p in procs:
            p.join()
    return outs[0]["sent_ns"], outs[-1]["recv_ns"], outs[-1]["events"], max(o["cpu_s"] for o in outs)


def throughput(recv_ns, events, n):
    span_s = (recv_ns[-1] - recv_ns[0]) / 1e9
    return (n - 1) / span_s, events * (n - 1) / n / span_s / 1e6


def direct_call(packets, n):
    """0 hops: the packet handed to the next node by a function call (operator chaining)."""
    got = []
    t0 = time.perf_counter()
    for i in range(n):
        got.append(packets[i % len(packets)])
        got.pop()
    return n / (time.perf_counter() - t0)


def codec(packets, n):
    """0 hops, serialised: encode + decode in one process (what a hop adds in CPU)."""
    from spikeflow.service.protocol import decode, encode

    t0 = time.perf_counter()
    for i in range(n):
        decode(encode(packets[i % len(packets)]))
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply packet counts (shorter/longer runs)")
    ap.add_argument("--write", action="store_true", help="update the '## Wire protocol' section of docs/benchmarks.md")
    args = ap.parse_args(argv)
    events = load_events()
    counts = {1_000: 8000, 10_000: 2000, 100_000: 300}
    rows, lat_rows = [], []
    for size, n in counts.items():
        n = max(50, int(n * args.scale))
        packets = make_packets(events, size, limit=n)
        d = statistics.median(direct_call(packets, n * 10) for _ in range(args.repeats))
        c = statistics.median(codec(packets, n) for _ in range(args.repeats))
        rows.append(("direct call", 0, size, d, d * size / 1e6, None, None, None, None, None, None))
        rows.append(("codec (encode+decode)", 0, size, c, c * size / 1e6, d, d * size / 1e6, c / d, None, None, None))
        for transport in ("inproc", "ipc", "tcp"):
            for hops in (1, 2):
                res = {}
                for ours in (True, False):
                    figures = []
                    for _ in range(args.repeats):
                        _, recv_ns, ev, cpu_s = run_chain(transport, hops, ours, packets, n)
                        figures.append((*throughput(recv_ns, ev, n), n / cpu_s))
                    res[ours] = tuple(statistics.median(f[k] for f in figures) for k in range(3))
                rows.append((transport, hops, size, *res[True][:2], *res[False][:2], res[True][0] / res[False][0],
                             res[True][2], res[False][2], res[True][2] / res[False][2]))
                print(f"{transport:7s} hops={hops} size={size:>7,}: ours {res[True][1]:8.1f} Mev/s "
                      f"raw {res[False][1]:8.1f} Mev/s ratio {res[True][0] / res[False][0]:.2f} "
                      f"cpu-bound ratio {res[True][2] / res[False][2]:.2f}", flush=True)
    n_lat = max(100, int(600 * args.scale))
    ms_packets = make_packets(events, None, limit=100_000)
    ms_packets = ms_packets[::max(1, len(ms_packets) // n_lat)][:n_lat]   # spread over all ten clips
    mean_events = float(np.mean([len(p.events) for p in ms_packets[:n_lat]]))
    for transport in ("inproc", "ipc", "tcp"):
        for hops in (1, 2):
            res = {}
            for ours in (True, False):
                lats = []
                for _ in range(args.repeats):
                    sent, recv, _, _ = run_chain(transport, hops, ours, ms_packets, n_lat, pace_s=1e-3)
                    lats.append((recv - sent) / 1e3)   # µs
                lat = np.concatenate(lats)
                res[ours] = (np.percentile(lat, 50), np.percentile(lat, 99))
            lat_rows.append((transport, hops, *res[True], *res[False]))
            print(f"latency {transport:7s} hops={hops}: ours p50 {res[True][0]:.0f} us p99 {res[True][1]:.0f} us, "
                  f"raw p50 {res[False][0]:.0f} us p99 {res[False][1]:.0f} us", flush=True)
    text = render(rows, lat_rows, args, mean_events, n_lat)
    print(text)
    if args.write:
        write_section(REPO / "docs" / "benchmarks.md", text)
    return 0


def render(rows, lat_rows, args, mean_events, n_lat) -> str:
    cmd = "`.venv/bin/python bench/bench_wire.py --write" + (f" --repeats {args.repeats}" if args.repeats != 3 else "") \
          + (f" --scale {args.scale:g}" if args.scale != 1 else "") + "`"
    load = os.getloadavg()[0]
    lines = [
        "## Wire protocol", "",
        f"Command: {cmd} ({time.strftime('%Y-%m-%d')}, the shared 2-core machine, load average "
        f"{load:.1f} at the end of the run; medians of {args.repeats} repeats). Data: the ten real "
        "DvsGesture clips cut into packets of N events. *Ours* = `EdgeSender` → (`EdgeReceiver` → "
        "`EdgeSender` relay) → `EdgeReceiver`: protocol v1 encode, lossless credit window of "
        f"{WINDOW}, zero-copy decode, gap and reject accounting. *Raw* = pyzmq PUSH/PULL "
        f"`send_multipart` of the same pre-encoded frames (HWM {WINDOW}) and `recv_multipart` "
        "without decoding, same topology, same run. inproc runs the workers as threads of one "
        "process; ipc and tcp run one process per worker. Throughput is measured at the sink. "
        "*CPU-bound packets/s* = packets / CPU seconds of the busiest worker (thread CPU time for "
        "inproc, process CPU time, ZeroMQ's I/O thread included, for ipc/tcp): the rate the chain "
        "would reach with a core per worker, which the loaded 2-core machine does not give; its "
        "ratio is steadier than the wall-clock one.", "",
        "| transport | hops | events/packet | ours packets/s | ours M ev/s | raw packets/s | raw M ev/s | ours/raw wall | CPU-bound packets/s ours / raw | ours/raw CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    dash = "—"
    for tr, hops, size, op, oe, rp, re_, ratio, oc, rc, cratio in rows:
        raw_p = dash if rp is None else f"{rp:,.0f}"
        raw_e = dash if re_ is None else f"{re_:,.1f}"
        rat = dash if ratio is None else f"{ratio:.2f}"
        cpu = dash if oc is None else f"{oc:,.0f} / {rc:,.0f}"
        crat = dash if cratio is None else f"{cratio:.2f}"
        lines.append(f"| {tr} | {hops} | {size:,} | {op:,.0f} | {oe:,.1f} | {raw_p} | {raw_e} | {rat} | {cpu} | {crat} |")
    lines += ["", "Rows at 0 hops: *direct call* is how chained nodes in one worker pass packets "
              "(no serialisation); *codec* is encode+decode of the packet in one process, with the "
              "direct call as its reference.", "",
              f"Latency, send to receive, for real 1 ms DvsGesture windows (mean {mean_events:.0f} events, "
              f"DVS128), paced at 1 kHz, {n_lat} packets per repeat:", "",
              "| transport | hops | ours p50 µs | ours p99 µs | raw p50 µs | raw p99 µs |",
              "|---|---:|---:|---:|---:|---:|"]
    for tr, hops, o50, o99, r50, r99 in lat_rows:
        lines.append(f"| {tr} | {hops} | {o50:,.0f} | {o99:,.0f} | {r50:,.0f} | {r99:,.0f} |")
    sock_rows = [r for r in rows if r[1] > 0]
    ratios = [r[7] for r in sock_rows]
    met = [r for r in sock_rows if r[7] >= 0.8]
    cratios = [r[10] for r in sock_rows]
    cmet = [r for r in sock_rows if r[10] >= 0.8]
    ipc1 = max(r[4] for r in sock_rows if r[0] == "ipc" and r[1] == 1)
    p99_1 = {r[0]: r[3] for r in lat_rows if r[1] == 1}
    lines += ["", "Goals, from this run:",
              f"- ours/raw ≥ 0.8: met in {len(met)} of {len(sock_rows)} socket rows "
              f"(median ratio {statistics.median(ratios):.2f}, range {min(ratios):.2f}–{max(ratios):.2f}); "
              f"in CPU terms met in {len(cmet)} of {len(sock_rows)} (median {statistics.median(cratios):.2f}, "
              f"range {min(cratios):.2f}–{max(cratios):.2f}).",
              f"- ≥ 50 M events/s through one ipc hop: best {ipc1:,.1f} M ev/s "
              f"({'met' if ipc1 >= 50 else 'not met'}).",
              "- p99 hop latency < 1 ms for 1 ms DVS128 packets (1 hop): "
              + ", ".join(f"{k} {v:,.0f} µs" for k, v in p99_1.items())
              + f" ({'met' if all(v < 1000 for v in p99_1.values()) else 'not met everywhere'}).",
              "",
              "Reading it: our per-message cost is fixed Python work (msgpack header with explicit "
              "limits, field checks, Packet construction, seq/credit bookkeeping: about 12 µs of CPU "
              "per message on each end of a hop on this loaded machine, from 20–22 µs before the "
              "hot path bypassed pyzmq's Python layer), while payloads of 64 KiB and more are "
              "never copied by us (zero-copy send and `np.frombuffer` receive). So the ratio to raw "
              "pyzmq, which does none of that work, is lowest for 1k-event packets and on inproc, "
              "where raw pyzmq only passes pointers, and approaches 1 where bytes dominate (ipc/tcp, "
              "10k–100k events). The relay of a 2-hop chain decodes and re-encodes, as a worker does. "
              "Latency: the p50 of one hop is 0.1–0.35 ms on every transport. The p99 tails, "
              "clustered around 4–5 ms, are runs of other engineers' processes (load average about 8 "
              "on 2 cores) holding the core when a packet arrives; a worker that spends more CPU per "
              "message, as ours does, is likelier to wait a scheduler slice. They vary by several ms "
              "between runs, for both columns; measure on an idle machine before trusting them."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace (or append) our ``## Wire protocol`` section, leaving other sections untouched."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    start = doc.find("\n## Wire protocol\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start + 1] + text + ("" if end < 0 else "\n" + doc[end + 1:])
    path.write_text(doc)


if __name__ == "__main__":
    sys.exit(main())
