"""`spikeflow bench [GRAPH.toml | MODEL.npz] --data SOURCE`: replay recordings through a graph and
measure it.

    spikeflow bench                                        # bundled gesture model, its 11 test clips
    spikeflow bench model.npz --data slayer-gesture:../shared/recordings/slayer-dvsgesture
    spikeflow bench my.toml --data a.bs2 b.bs2 --sensor-size 128,128,2 --speed 1 --json out.json
    spikeflow bench --workers 2 --repeats 3

The graph runs on the real runtime (one worker in this process, or several worker processes under
a foreground daemon with ``--workers 2`` or a graph that names workers), as fast as the graph
accepts (``--speed 0``, the default) or paced (``--speed 1`` = real time). Reported, per node and
end to end: events and packets per second, the real-time factor (sensor seconds per wall
second), decision latency p50/p99 (wall clock, source emission -> label packet, from the
runtime's histograms; the scoreboard's decision age beside it), dropped packets, and the peak
resident memory of this process and every worker process (sampled with psutil). ``--json``
writes everything, per repeat and as medians over ``--repeats``. See docs/bench.md.

``--data`` takes what ``spikeflow train`` takes (``bundled``, ``dir:PATH``, ``slayer-gesture:PATH``,
``dvs128:PATH``, ``tonic:NAME:ROOT``, ...; split ``--split``) or plain recording paths. Dataset
samples are written once to temporary labeled ``.sfe`` files (the labels let the graph's
``scoreboard`` score them) unless they already are labeled ``.sfe`` files; plain paths are
replayed as they are (``--sensor-size``/``--format`` for files that do not carry them). They
become the playlist of the graph's ``replay`` source.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SPIKING_TYPES = ("snn_conv", "snn_pool", "loihi_emulator")
"""Where ``--workers 2`` cuts a graph by default: the first spiking layer starts worker 2."""

RSS_PERIOD_S = 0.02


def add_arguments(parser):
    parser.add_argument("graph", nargs="?",
                        help="graph TOML file or model bundle .npz (default: the bundled gesture model)")
    parser.add_argument("--data", nargs="+", metavar="SOURCE",
                        help="bundled | dir:PATH | slayer-gesture:PATH | slayer-nmnist:PATH | dvs128:PATH | "
                             "tonic:NAME:ROOT, or recording files (default: the graph's own source)")
    parser.add_argument("--split", default="test", choices=("train", "test", "all"),
                        help="dataset split to replay (default: test)")
    parser.add_argument("--max-samples", type=int, default=0, help="replay only the first N dataset samples")
    parser.add_argument("--sensor-size", metavar="W,H,C", help="sensor size for recording files without one (.bs2)")
    parser.add_argument("--format", default="", help="reader format of the recording files (default: detect)")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="replay speed: 0 = as fast as possible (default), 1 = real time, N = N x real time")
    parser.add_argument("--workers", type=int, choices=(1, 2),
                        help="1: every node in one worker (this process); 2: split the graph over two worker "
                             "processes at --split-at (default: the graph's own placement)")
    parser.add_argument("--split-at", metavar="NODE",
                        help="with --workers 2: first node of the second worker (default: first spiking layer)")
    parser.add_argument("--repeats", type=int, default=1, help="runs; figures are medians (default 1)")
    parser.add_argument("--warmup", type=int, default=0, help="runs before the measured ones, discarded")
    parser.add_argument("--reference", action="store_true",
                        help="also drive the same nodes in-process without the runtime (LocalChain) and report "
                             "the runtime's throughput as a ratio to it")
    parser.add_argument("--cpus", metavar="LIST", help="pin this process and its workers to these CPUs, e.g. 0 or 0,1")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON to this file ('-' = stdout)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a graph value (repeatable)")
    parser.add_argument("--model", help="load learned state from this model bundle or snapshot into the graph")
    parser.add_argument("--keep-endpoints", action="store_true",
                        help="keep publish endpoints as in the graph (default: free loopback ports)")
    parser.add_argument("--show", action="store_true", help="let the scoreboard print its decisions and summary")
    parser.add_argument("--quiet", action="store_true", help="no table (with --json)")


# -- inputs ----------------------------------------------------------------------------------

def parse_sensor_size(text: str | None):
    if not text:
        return None
    from spikeflow.service.errors import ParamError

    try:
        w, h, c = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise ParamError("--sensor-size", f"expected W,H,C (e.g. 128,128,2), got {text!r}") from None
    return (w, h, c)


def _is_dataset_spec(items: list[str]) -> bool:
    if len(items) != 1:
        return False
    s = items[0]
    kind, sep, rest = s.partition(":")
    if s == "bundled" or (sep and kind in ("dir", "slayer-gesture", "slayer-nmnist", "dvs128", "tonic") and rest):
        return True
    return Path(s).is_dir() and (Path(s) / "labels.csv").exists()


def _recording_files(items: list[str]) -> list[str]:
    """Files as given; a directory (without labels.csv) stands for the recordings in it."""
    from spikeflow.service.errors import SpikeflowError

    out = []
    for s in items:
        p = Path(s).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and f.suffix not in (".json", ".csv", ".txt", ".md"))
            if not files:
                raise SpikeflowError(f"--data {s}: no recordings in this directory")
            out += [str(f.resolve()) for f in files]
        elif p.is_file():
            out.append(str(p.resolve()))
        else:
            raise SpikeflowError(f"--data {s}: no such file, directory or dataset source "
                                 f"(bundled, dir:PATH, slayer-gesture:PATH, ...)")
    return out


def _labeled_sfe(path: Path, label: int) -> bool:
    """True if ``path`` is a native recording whose header already carries ``label``."""
    if path.suffix != ".sfe" or not path.exists():
        return False
    from spikeflow.drivers.recording import open_recording

    try:
        with open_recording(path) as rec:
            return int(rec.info.extra.get("label", -10**9)) == int(label)
    except Exception:  # noqa: BLE001 - anything unreadable is simply rewritten
        return False


def materialize(dataset, out_dir: Path, max_samples: int = 0) -> tuple[list[str], dict[str, Any]]:
    """The dataset's samples as labeled recordings: its own files where they already are labeled
    ``.sfe``, else ``out_dir/NNNN.sfe`` written with ``extra = {label, name}``."""
    from spikeflow.drivers.datasets import LabeledDirectory
    from spikeflow.drivers.recording import open_writer

    classes, base = tuple(getattr(dataset, "classes", ()) or ()), int(getattr(dataset, "label_base", 0))
    direct = isinstance(dataset, LabeledDirectory)
    paths, events, written = [], 0, 0
    t0 = time.perf_counter()
    if direct and all(_labeled_sfe(dataset.root / f, lab) for f, lab, _ in dataset._rows[: max_samples or None]):
        rows = dataset._rows[: max_samples or None]
        from spikeflow.drivers.recording import open_recording

        for f, _, _ in rows:
            p = dataset.root / f
            paths.append(str(p.resolve()))
            with open_recording(p) as rec:
                events += sum(len(c) for c in rec)
        return paths, {"samples": len(paths), "events": events, "written": 0, "seconds": time.perf_counter() - t0}
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(dataset):
        if max_samples and i >= max_samples:
            break
        k = int(s.label) - base
        name = classes[k] if 0 <= k < len(classes) else str(s.label)
        p = out_dir / f"{i:05d}.sfe"
        with open_writer(p, s.sensor_size, extra={"label": int(s.label), "name": str(name), "id": str(s.id)}) as w:
            w.write(s.events)
        paths.append(str(p))
        events += len(s.events)
        written += 1
    if not paths:
        from spikeflow.service.errors import SpikeflowError

        raise SpikeflowError("the data source holds no samples")
    return paths, {"samples": len(paths), "events": events, "written": written, "seconds": time.perf_counter() - t0}


# -- the graph -------------------------------------------------------------------------------

def replay_sources(spec) -> list[str]:
    return [n for n in spec.order if spec.nodes[n].type == "replay"]


def bench_overrides(spec, *, paths: list[str] | None, sensor_size=None, fmt: str = "", speed: float | None = 0.0,
                    free_endpoints: bool = True, show: bool = False) -> list[str]:
    """``--set`` strings that point the replay source at ``paths``, set every source's speed,
    move publish endpoints to free loopback ports and quiet the scoreboard.

    Free ports are ``tcp://127.0.0.1:*``: ZeroMQ picks one when the node binds. (A port found
    free beforehand can be taken by another process before the bind, which on a busy machine
    failed whole bench runs with "Address already in use".)"""
    import json

    from spikeflow.service.errors import GraphError

    out = []
    if paths is not None:
        srcs = replay_sources(spec)
        if len(srcs) != 1:
            raise GraphError("nodes", f"bench --data needs exactly one replay source in the graph, found {srcs}")
        key = f"nodes.{srcs[0]}.params"
        out += [f"{key}.path=\"\"", f"{key}.paths={json.dumps(list(paths))}"]
        if sensor_size:
            out.append(f"{key}.sensor_size={json.dumps(list(sensor_size))}")
        if fmt:
            out.append(f"{key}.format={json.dumps(fmt)}")
    for name, ns in spec.nodes.items():
        fields = getattr(ns.params, "__dataclass_fields__", {})
        if speed is not None and ns.cls.is_source and "speed" in fields:
            out.append(f"nodes.{name}.params.speed={float(speed)!r}")
        if free_endpoints and ns.type == "publish" and getattr(ns.params, "bind", True):
            out.append(f"nodes.{name}.params.endpoint=\"tcp://127.0.0.1:*\"")
        if ns.type == "scoreboard" and not show:
            out += [f"nodes.{name}.params.show=\"none\"", f"nodes.{name}.params.summary=false"]
    return out


def split_workers(spec, split_at: str | None = None) -> dict[str, str]:
    """Node -> worker for a two-process run: ``split_at`` (default the first spiking layer, else the
    classifier, else the middle of the chain) and everything downstream of it go to ``snn``, the
    rest (source, filters, encoder) to ``io``. Downstream, not "later in the file", so no edge
    ever runs back from ``snn`` to ``io`` (a worker-level cycle could not drain)."""
    from spikeflow.service.errors import GraphError

    order = spec.order
    if split_at is None:
        cand = [n for n in order if spec.nodes[n].type in SPIKING_TYPES or spec.nodes[n].type.startswith("snn")]
        cand = cand or [n for n in order if spec.nodes[n].type == "classifier"]
        if not cand:
            inner = [n for n in order if not spec.nodes[n].cls.is_source]
            cand = inner[len(inner) // 2:] if inner else []
        if not cand:
            raise GraphError("nodes", "cannot split a graph without processing nodes over two workers")
        split_at = cand[0]
    if split_at not in spec.nodes:
        raise GraphError(f"nodes.{split_at}", f"--split-at: no such node; nodes: {order}")
    if spec.nodes[split_at].cls.is_source:
        raise GraphError(f"nodes.{split_at}", "--split-at must name a processing node, not a source")
    down = {split_at}
    for n in order:
        if any(i.node in down for i in spec.nodes[n].inputs.values()):
            down.add(n)
    return {n: ("snn" if n in down else "io") for n in order}


def build_spec(graph: str | None = None, *, data_paths: list[str] | None = None, sensor_size=None, fmt: str = "",
               speed: float | None = 0.0, workers: int | None = None, split_at: str | None = None,
               overrides: list[str] | None = None, model: str | None = None, free_endpoints: bool = True,
               show: bool = False):
    """``(spec, state)``: the graph (or bundle, default the bundled gesture model) with the bench's
    data, speed and worker placement applied; ``state`` is what to load into its nodes."""
    from argparse import Namespace

    from spikeflow.service.cli_run import resolve
    from spikeflow.service.graph import load_graph

    source, ov, state = resolve(Namespace(graph=graph, overrides=list(overrides or []), model=model, demo=False))
    spec = load_graph(source, overrides=ov)
    ov += bench_overrides(spec, paths=data_paths, sensor_size=sensor_size, fmt=fmt, speed=speed,
                          free_endpoints=free_endpoints, show=show)
    spec = load_graph(source, overrides=ov)
    if workers is not None:
        raw = spec.raw
        place = split_workers(spec, split_at) if workers == 2 else {n: "main" for n in spec.order}
        for n, w in place.items():
            raw["nodes"][n]["worker"] = w
        spec = load_graph(raw)
    text = isinstance(source, str) and "\n" in source
    spec.source = (str(state) if state is not None else "<text>") if text else str(source)
    return spec, state


# -- measuring ------------------------------------------------------------------------------

class RssSampler:
    """Peak resident memory of this process and its children (worker processes), sampled with
    psutil every ``period_s`` in a thread; ``peak_total`` is the largest sum seen at one sample."""

    def __init__(self, period_s: float = RSS_PERIOD_S):
        import threading

        import psutil

        self.period_s = period_s
        self.me = psutil.Process()
        self.peak: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def sample(self) -> None:
        import psutil

        procs = [self.me]
        try:
            procs += self.me.children(recursive=True)
        except psutil.Error:
            pass
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                if not self.names.get(p.pid, "").startswith(("worker:", "bench", "spare")):
                    self.names[p.pid] = _proc_label(p, self.me.pid)  # again: a fresh child may not have exec'd yet
            except psutil.Error:
                continue
            total += rss
            if rss > self.peak.get(p.pid, 0):
                self.peak[p.pid] = rss
        self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2.0)
        self.sample()

    def report(self) -> dict[str, Any]:
        by = {}
        for pid, v in self.peak.items():
            label = self.names.get(pid, str(pid))
            by[label] = max(by.get(label, 0.0), v / 2**20)
        return {"rss_peak_mib": self.peak_total / 2**20, "rss_peak_by_process_mib": by}


def _proc_label(p, me: int) -> str:
    if p.pid == me:
        return "bench"
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001
        return f"pid{p.pid}"
    if "spikeflow.service.runtime" in cmd and cmd[-1].endswith(".json"):  # <worker>[-<incarnation>].json
        import re

        return "worker:" + re.sub(r"-\d+$", "", Path(cmd[-1]).stem)
    if "spikeflow.service.supervisor" in cmd:
        return "spare"
    return f"{Path(cmd[0]).name if cmd else 'pid'}:{p.pid}"


def source_pass(spec) -> dict[str, Any]:
    """What the sources will emit, measured by iterating them once at speed 0 without consumers:
    events, packets, and the sensor time the stream covers (first window start -> last window
    end, playlist gaps included), the basis of the real-time factor."""
    from dataclasses import replace

    out = {"events": 0, "packets": 0, "sensor_s": 0.0, "recordings_s": 0.0}
    for name in spec.order:
        ns = spec.nodes[name]
        if not ns.cls.is_source:
            continue
        params = replace(ns.params, speed=0.0) if "speed" in ns.params.__dataclass_fields__ else ns.params
        node = ns.cls(name, params)
        node.setup({})
        t_first = t_last = None
        seg_start, seg_end, rec_us = None, None, 0
        try:
            for _, pkt in node.packets():
                out["events"] += pkt.count
                out["packets"] += 1
                t_first = pkt.t0_us if t_first is None else t_first
                t_last = pkt.t1_us
                onset = (pkt.data or {}).get("truth", {}).get("onset_us") if pkt.data else None
                if seg_start is None or (onset is not None and onset != seg_start):
                    rec_us += (seg_end - seg_start) if seg_start is not None else 0
                    seg_start = pkt.t0_us if onset is None else onset
                seg_end = pkt.t1_us
        finally:
            node.close()
        if seg_start is not None:
            rec_us += seg_end - seg_start
        if t_first is not None:
            out["sensor_s"] = max(out["sensor_s"], (t_last - t_first) / 1e6)
        out["recordings_s"] += rec_us / 1e6
    return out


def _load_state_arrays(state) -> dict | None:
    if state is None:
        return None
    if isinstance(state, dict):
        return state
    from spikeflow.service.control import read_snapshot

    return read_snapshot(state)


def run_runtime(spec, state=None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """One run of the graph on the runtime; raw node metrics, edge stats, wall times, RSS."""
    import tempfile

    from spikeflow.service.metrics import merge_node_dicts, summarize

    t0 = time.perf_counter()
    cpu0, children0 = time.process_time(), _children_cpu_s()
    log_tail = ""
    with RssSampler() as rss:
        if len(spec.workers) == 1:
            from spikeflow.service.runtime import run_inline

            worker = run_inline(spec, state=_load_state_arrays(state))
            m = worker.snapshot_metrics()
            raw = {n: {**d, "worker": worker.worker} for n, d in m["nodes"].items()}
            edges = {k: {v["side"]: v} for k, v in m["edges"].items()}
            summary = summarize(raw, edges)
            code, failures, restarts = worker.exit_code, list(worker.failures), 0
        else:
            from spikeflow.service.daemon import Daemon

            tmp = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="sfbench-"))
            d = Daemon(spec, run_dir=tmp, exit_when_done=True, snapshot=state)
            import threading

            code = d.run(install_signals=threading.current_thread() is threading.main_thread())
            raw = {}
            for w in d.supervisor.workers.values():
                cur = w.metrics.get("nodes") or {}
                for name in w.nodes:
                    raw[name] = {**merge_node_dicts(w.previous.get(name), cur.get(name) or {}),
                                 "stats": (cur.get(name) or {}).get("stats", {}), "worker": w.name,
                                 "type": spec.nodes[name].type, "sink": (cur.get(name) or {}).get("sink", False)}
            summary = d.final_metrics
            edges = summary.get("edges", {})
            failures = [f"{w.name}: {w.last_error}" for w in d.supervisor.workers.values()
                        if w.state == "failed" or w.exit_code not in (0, None)]
            restarts = d.supervisor.total_restarts
            if code or failures:
                try:
                    log_tail = "\n".join(d.log_file.read_text().splitlines()[-20:])
                except OSError:
                    pass
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + _children_cpu_s() - children0
    return {"code": code, "failures": failures, "restarts": restarts, "wall_total_s": wall, "cpu_total_s": cpu,
            "raw": raw,
            "summary": summary, "edges": edges, **rss.report(), "log_tail": log_tail}


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) children: the daemon's workers."""
    t = os.times()
    return t.children_user + t.children_system


def run_reference(spec, state=None) -> dict[str, Any]:
    """The same nodes and packets without the runtime: the replay node's packets fed straight
    into a :class:`LocalChain` of every other node (sinks included) in this thread."""
    from dataclasses import replace

    from spikeflow.service.errors import GraphError
    from spikeflow.service.pipeline import LocalChain

    sources = [n for n in spec.order if spec.nodes[n].cls.is_source]
    if len(sources) != 1:
        raise GraphError("nodes", f"the in-process reference needs exactly one source, found {sources}")
    cpu0 = time.process_time()
    src = sources[0]
    ns = spec.nodes[src]
    params = replace(ns.params, speed=0.0) if "speed" in ns.params.__dataclass_fields__ else ns.params
    node = ns.cls(src, params)
    metas = node.setup({})
    arrays = _load_state_arrays(state) or {}
    chain = LocalChain(spec, {(src, p): m for p, m in metas.items()}, keep_sinks=True)
    try:
        per: dict[str, dict] = {}
        for k, v in arrays.items():
            n, _, key = k.partition("/")
            if n in chain.nodes:
                per.setdefault(n, {})[key] = v
        for n, st in per.items():
            chain.nodes[n].load_state(st)
        events = packets = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for port, pkt in node.packets():
            events += pkt.count
            packets += 1
            chain.feed(src, port, pkt)
        chain.flush()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        chain.close()
        node.close()
    cpu_total = time.process_time() - cpu0
    return {"events": events, "packets": packets, "wall_s": wall, "events_per_s": events / wall if wall else 0.0,
            "cpu_s": cpu, "cpu_total_s": cpu_total, "events_per_cpu_s": events / cpu_total if cpu_total else 0.0,
            "busy_s": {n: v / 1e9 for n, v in chain.busy_ns.items()}}


def figures(spec, run: dict[str, Any], src_info: dict[str, Any]) -> dict[str, Any]:
    """Per-node and end-to-end figures of one run."""
    from spikeflow.service.metrics import NodeMetrics

    raw, rows = run["raw"], run["summary"]["nodes"]
    ms = {n: NodeMetrics.from_dict(d) for n, d in raw.items()}
    sources = [n for n in spec.order if spec.nodes[n].cls.is_source]
    firsts = [ms[n].first_ns for n in sources if n in ms and ms[n].first_ns]
    lasts = [m.last_ns for m in ms.values() if m.last_ns]
    stream_s = (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else run["wall_total_s"]
    stream_s = max(stream_s, 1e-9)
    nodes = {}
    for n in spec.order:
        m = ms.get(n)
        if m is None:
            continue
        c = m.counters
        is_src = spec.nodes[n].cls.is_source
        ev = c["events_out"] if is_src else c["events_in"]
        pk = c["packets_out"] if is_src else c["packets_in"]
        busy = m.proc.total / 1e9
        row = rows.get(n, {})
        nodes[n] = {"type": spec.nodes[n].type, "worker": spec.nodes[n].worker, **c,
                    "events_per_s": ev / stream_s, "packets_per_s": pk / stream_s, "busy_s": busy,
                    "busy_frac": busy / stream_s, "capacity_events_per_s": (ev / busy) if busy > 0 else None,
                    "latency_us": m.latency.summary_us(), "proc_us": m.proc.summary_us(),
                    "drops": int(row.get("drops", 0)), "queue": int(row.get("queue", 0))}
    ev_in = sum(ms[n].counters["events_out"] for n in sources if n in ms)
    pk_in = sum(ms[n].counters["packets_out"] for n in sources if n in ms)
    deciders = [n for n in spec.order if "labels" in spec.nodes[n].cls.outputs.values() and n in ms]
    score = [n for n in spec.order if spec.nodes[n].type == "scoreboard" and n in rows]
    if deciders:
        from spikeflow.service.metrics import Histogram

        h = Histogram()
        for n in deciders:
            h.merge(ms[n].latency)
        dec = {"what": f"source emission -> label packet out of {', '.join(deciders)} (wall clock)", **h.summary_us()}
    else:
        dec = {"what": "source emission -> sink (no label-emitting node; end-to-end latency)",
               **run["summary"].get("e2e", {})}
    sb = rows[score[0]].get("stats", {}) if score else {}
    drops = sum(r["drops"] for r in nodes.values())
    late = {k: v for n in sources for k, v in (rows.get(n, {}).get("stats") or {}).items() if k.startswith("late")}
    return {
        "events": ev_in, "packets": pk_in, "events_expected": src_info.get("events"),
        "stream_s": stream_s, "wall_total_s": run["wall_total_s"], "sensor_s": src_info.get("sensor_s"),
        "recordings_s": src_info.get("recordings_s"),
        "events_per_s": ev_in / stream_s, "packets_per_s": pk_in / stream_s,
        "real_time_factor": (src_info.get("sensor_s") or 0.0) / stream_s,
        "cpu_total_s": run.get("cpu_total_s"),
        "events_per_cpu_s": ev_in / run["cpu_total_s"] if run.get("cpu_total_s") else None,
        "decision_latency_us": dec,
        "scoreboard": {k: sb.get(k) for k in ("accuracy", "scored", "decisions", "decision_age_p50_us",
                                              "decision_age_p99_us", "onset_to_first_correct_p50_ms",
                                              "onset_to_first_correct_p99_ms")} if sb else None,
        "e2e_latency_us": run["summary"].get("e2e", {}),
        "dropped_packets": drops, "errors": sum(r["errors"] for r in nodes.values()), "source_late": late,
        "rss_peak_mib": run["rss_peak_mib"], "rss_peak_by_process_mib": run["rss_peak_by_process_mib"],
        "restarts": run["restarts"], "nodes": nodes,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median of numeric leaves over runs (structure of the first run)."""
    def med(vals):
        first = vals[0]
        if isinstance(first, dict):
            return {k: med([v.get(k) for v in vals if isinstance(v, dict)]) for k in first}
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums and len(nums) == len(vals):
            m = statistics.median(nums)
            return int(m) if all(isinstance(v, int) for v in nums) and m == int(m) else m
        return first

    return med(runs)


def bench(spec, state=None, *, repeats: int = 1, warmup: int = 0, reference: bool = False,
          progress=None) -> dict[str, Any]:
    """Run the graph ``warmup + repeats`` times (and the in-process reference as many times);
    returns per-run figures and their medians."""
    src_info = source_pass(spec)
    runs, refs, failures = [], [], []
    for i in range(warmup + repeats):
        r = run_runtime(spec, state)
        if r["code"] or r["failures"]:
            failures.append({"run": i, "code": r["code"], "failures": r["failures"], "log_tail": r["log_tail"]})
        f = figures(spec, r, src_info)
        ref = run_reference(spec, state) if reference else None
        if i >= warmup:
            runs.append(f)
            if ref is not None:
                refs.append(ref)
        if progress:
            progress(i, f, ref)
    report = {"graph": spec.name, "source": spec.source, "workers": {w: ns for w, ns in spec.workers.items()},
              "speed": _speed(spec), "repeats": repeats, "warmup": warmup, "input": src_info,
              "median": medians(runs), "runs": runs, "failures": failures}
    if refs:
        ref_m = medians(refs)
        report["reference"] = {"what": "same nodes and packets driven in-process by LocalChain (no runtime)",
                               **ref_m, "runs": refs}
        report["median"]["runtime_vs_reference"] = (report["median"]["events_per_s"] / ref_m["events_per_s"]
                                                    if ref_m["events_per_s"] else None)
        cpu_rt = report["median"].get("events_per_cpu_s")
        report["median"]["runtime_vs_reference_cpu"] = (cpu_rt / ref_m["events_per_cpu_s"]
                                                        if cpu_rt and ref_m.get("events_per_cpu_s") else None)
    return report


def _speed(spec) -> float | None:
    for ns in spec.nodes.values():
        if ns.cls.is_source and "speed" in ns.params.__dataclass_fields__:
            return float(ns.params.speed)
    return None


# -- output ---------------------------------------------------------------------------------

def _si(v) -> str:
    if v is None:
        return "-"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.2f}{unit}"
    return f"{v:.0f}"


def format_report(rep: dict[str, Any]) -> str:
    m = rep["median"]
    speed = rep["speed"]
    pace = "as fast as possible" if not speed else f"{speed:g}x real time"
    ws = ", ".join(f"{w}: {' '.join(ns)}" for w, ns in rep["workers"].items())
    inp = rep["input"]
    lines = [f"spikeflow bench: graph {rep['graph']} ({rep['source']}), {pace}, "
             f"{rep['repeats']} run(s){' (medians)' if rep['repeats'] > 1 else ''}",
             f"workers: {ws}",
             f"input: {inp['events']:,} events in {inp['packets']:,} packets, {inp['sensor_s']:.3f} s of sensor time "
             f"({inp['recordings_s']:.3f} s of recordings)"]
    if rep.get("data"):
        lines.append(f"data: {rep['data']}")
    head = (f"{'node':<14} {'type':<16} {'worker':<7} {'ev in':>8} {'ev out':>8} {'ev/s':>8} {'pkt/s':>8} "
            f"{'busy':>6} {'cap ev/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'drops':>6} {'err':>4}")
    lines += ["", head]
    for n, r in m["nodes"].items():
        lat = r["latency_us"]
        lines.append(f"{n[:14]:<14} {r['type'][:16]:<16} {r['worker'][:7]:<7} {_si(r['events_in']):>8} "
                     f"{_si(r['events_out']):>8} {_si(r['events_per_s']):>8} {_si(r['packets_per_s']):>8} "
                     f"{100 * r['busy_frac']:>5.1f}% {_si(r['capacity_events_per_s']):>9} "
                     f"{lat['p50_us'] / 1e3:>8.2f} {lat['p99_us'] / 1e3:>8.2f} {r['drops']:>6} {r['errors']:>4}")
    dec = m["decision_latency_us"]
    lines += ["",
              f"end to end: {m['events']:,} events, {m['packets']:,} packets in {m['stream_s']:.3f} s "
              f"(first source packet -> last node activity; {m['wall_total_s']:.2f} s with start-up)",
              f"throughput: {m['events_per_s'] / 1e6:.3f} M events/s, {m['packets_per_s']:,.0f} packets/s; "
              f"real-time factor {m['real_time_factor']:.2f}; CPU {m['cpu_total_s']:.2f} s for the whole run "
              f"({m['events_per_cpu_s'] / 1e6:.3f} M events per CPU second, start-up and every worker included)",
              f"decision latency: p50 {dec.get('p50_us', 0) / 1e3:.2f} ms, p99 {dec.get('p99_us', 0) / 1e3:.2f} ms, "
              f"max {dec.get('max_us', 0) / 1e3:.2f} ms over {dec.get('count', 0)} decisions ({dec['what']})"]
    sb = m.get("scoreboard")
    if sb and sb.get("accuracy") is not None:
        lat = sb.get("onset_to_first_correct_p50_ms")
        lines.append(f"scoreboard: accuracy {100 * sb['accuracy']:.1f} % over {sb['scored']} recordings; "
                     f"decision age p50 {(sb['decision_age_p50_us'] or 0) / 1e3:.2f} ms, "
                     f"p99 {(sb['decision_age_p99_us'] or 0) / 1e3:.2f} ms; onset -> first correct decision "
                     + ("n/a" if lat is None else f"p50 {lat:.0f} ms, p99 {sb['onset_to_first_correct_p99_ms']:.0f} ms")
                     + " (sensor time)")
    by = ", ".join(f"{k} {v:.0f}" for k, v in sorted(m["rss_peak_by_process_mib"].items()))
    lines.append(f"dropped packets {m['dropped_packets']}, errors {m['errors']}, restarts {m['restarts']}; "
                 f"peak RSS {m['rss_peak_mib']:.0f} MiB ({by})")
    if m.get("source_late"):
        lines.append("source lateness: " + ", ".join(f"{k} {v}" for k, v in m["source_late"].items()))
    if "reference" in rep:
        ref = rep["reference"]
        rtf = inp["sensor_s"] / ref["wall_s"] if ref["wall_s"] else 0.0
        lines.append(f"reference (same nodes in-process, no runtime): {ref['events_per_s'] / 1e6:.3f} M events/s "
                     f"(real-time factor {rtf:.2f}) in {ref['wall_s']:.3f} s, CPU {ref['cpu_total_s']:.2f} s with "
                     f"set-up; runtime / reference = "
                     f"{m['runtime_vs_reference'] or 0:.2f} (wall), {m['runtime_vs_reference_cpu'] or 0:.2f} "
                     f"(events per CPU second)")
    if m["events_expected"] is not None and m["events"] != m["events_expected"]:
        lines.append(f"WARNING: the sources emitted {m['events']:,} events, {m['events_expected']:,} expected")
    for f in rep["failures"]:
        lines.append(f"FAILED run {f['run']}: exit {f['code']}; {'; '.join(map(str, f['failures']))}")
        if f.get("log_tail"):
            lines.append(f["log_tail"])
    return "\n".join(lines)


def run(args) -> int:
    import json
    import logging
    import tempfile

    from spikeflow.service.errors import SpikeflowError

    if args.cpus:
        try:
            cpus = {int(c) for c in args.cpus.split(",") if c.strip()}
            os.sched_setaffinity(0, cpus)
        except (ValueError, AttributeError, OSError) as e:
            raise SpikeflowError(f"--cpus {args.cpus}: cannot pin: {e}") from None
    if args.repeats < 1:
        raise SpikeflowError("--repeats must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sensor_size = parse_sensor_size(args.sensor_size)
    tmp = Path(tempfile.mkdtemp(prefix="sfbench-data-"))
    try:
        data_desc, paths = None, None
        if args.data:
            if _is_dataset_spec(args.data):
                from spikeflow.drivers.datasets import open_dataset

                ds = open_dataset(args.data[0], split=args.split)
                paths, info = materialize(ds, tmp, args.max_samples)
                data_desc = {"source": args.data[0], "split": args.split, **info}
                sensor_size = None  # the written .sfe files carry it
            else:
                paths = _recording_files(args.data)[: args.max_samples or None]
                data_desc = {"source": "files", "files": len(paths)}
        spec, state = build_spec(args.graph, data_paths=paths, sensor_size=sensor_size, fmt=args.format,
                                 speed=args.speed, workers=args.workers, split_at=args.split_at,
                                 overrides=args.overrides, model=args.model, free_endpoints=not args.keep_endpoints,
                                 show=args.show)

        def progress(i, f, ref):
            if args.quiet:
                return
            tag = "warm-up" if i < args.warmup else f"run {i - args.warmup + 1}/{args.repeats}"
            extra = f", reference {ref['events_per_s'] / 1e6:.3f} M events/s" if ref else ""
            print(f"{tag}: {f['events_per_s'] / 1e6:.3f} M events/s, real-time factor {f['real_time_factor']:.2f}, "
                  f"decision p99 {f['decision_latency_us'].get('p99_us', 0) / 1e3:.2f} ms{extra}",
                  file=sys.stderr, flush=True)

        rep = bench(spec, state, repeats=args.repeats, warmup=args.warmup, reference=args.reference,
                    progress=progress)
        rep["data"] = data_desc
        rep["state"] = str(state) if state is not None else None
        rep["cpus"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        rep["machine"] = _machine()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if not args.quiet:
        print(format_report(rep))
    if args.json:
        text = json.dumps(rep, indent=1, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 1 if rep["failures"] else 0


def _machine() -> dict[str, Any]:
    import platform

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "loadavg": load, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
