"""End-to-end replay benchmark of the gesture pipeline: recording -> noise filter -> encoder ->
spiking layers -> classifier -> scoreboard/publish, on the runtime.

    .venv/bin/python bench/bench_e2e.py [--repeats 3] [--quick] [--write-docs]

Graph and state: the bundled gesture model (``recordings/gesture_model.npz``). Data: the
bundled test clips (the model's own playlist, simulated DVS128 gestures) and the 10 real DVS128
Gesture clips in ../shared/recordings/slayer-dvsgesture (.bs2, sensor_size [128,128,2]),
replayed as files. Modes:

- one worker, this process pinned to one CPU with ``os.sched_setaffinity`` (the source thread
  and the node thread share that core);
- the graph split over two worker processes under the daemon (source+filter+encoder | spiking
  layers+classifier+sinks), not pinned (the machine has 2 cores).

Flat out (speed 0): events/s and real-time factor over the stream (first source packet -> last
node activity; process start-up excluded), decision latency p50/p99 (wall clock, source
emission -> label packet, which at speed 0 is mostly queueing behind the flood). Reference in
the same run, same affinity: the same nodes driven in-process by ``LocalChain`` with the same
replay packets, no runtime; ratio = runtime / reference. Paced (speed 1, real time): the decision
latency a live user sees. Medians over ``--repeats`` after one discarded warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLAYER = (ROOT / ".." / "shared" / "recordings" / "slayer-dvsgesture").resolve()
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## End-to-end gesture pipeline"
TRUENORTH_MS = 105.0


def MODES(one: set, all_cpus: set):
    """(workers, CPU affinity, label, graph overrides)."""
    return [(1, one, f"1 worker, pinned to CPU {min(one)}", ()),
            (2, all_cpus, f"2 workers ({len(all_cpus)} CPUs, not pinned)", ()),
            (2, all_cpus, "2 workers, 10 ms source packets", ("nodes.src.params.window_us=10000",))]


def datasets(quick: bool):
    out = [("bundled test clips (simulated DVS128, 11)", None, None)]
    if SLAYER.is_dir():
        files = sorted(SLAYER.glob("*.bs2"), key=lambda p: int(p.stem))
        files = files[:3] if quick else files
        out.append((f"DVS128 Gesture real clips ({len(files)}, .bs2)", [str(f) for f in files], (128, 128, 2)))
    else:
        print(f"note: {SLAYER} is absent; only the bundled clips are measured", file=sys.stderr)
    return out


def measure(label, paths, size, workers, cpus, repeats, paced, overrides=()):
    from spikeflow.service.cli_bench import bench, build_spec

    os.sched_setaffinity(0, cpus)
    spec, state = build_spec(None, data_paths=paths, sensor_size=size, speed=0.0, workers=workers,
                             overrides=list(overrides))
    flat = bench(spec, state, repeats=repeats, warmup=1, reference=True,
                 progress=lambda i, f, ref: print(f"  {label} / {workers} worker(s) run {i}: "
                                                  f"{f['events_per_s'] / 1e6:.3f} M ev/s, ref "
                                                  f"{ref['events_per_s'] / 1e6:.3f}", file=sys.stderr, flush=True))
    out = {"flat": flat}
    if paced:
        spec1, _ = build_spec(None, data_paths=paths, sensor_size=size, speed=1.0, workers=workers,
                              overrides=list(overrides))
        out["paced"] = bench(spec1, state, repeats=1, warmup=0)
    return out


def row(label, mode, res) -> dict:
    m = res["flat"]["median"]
    ref = res["flat"]["reference"]
    d = m["decision_latency_us"]
    r = {"data": label, "mode": mode, "events": m["events"], "sensor_s": res["flat"]["input"]["sensor_s"],
         "mev_s": m["events_per_s"] / 1e6, "rtf": m["real_time_factor"], "ref_mev_s": ref["events_per_s"] / 1e6,
         "ref_rtf": res["flat"]["input"]["sensor_s"] / ref["wall_s"], "ratio": m["runtime_vs_reference"],
         "cpu_s": m.get("cpu_total_s"), "ref_cpu_s": ref.get("cpu_total_s"), "ratio_cpu": m.get("runtime_vs_reference_cpu"),
         "flat_p50_ms": d["p50_us"] / 1e3, "flat_p99_ms": d["p99_us"] / 1e3, "drops": m["dropped_packets"],
         "rss_mib": m["rss_peak_mib"], "decisions": d["count"],
         "restarts": sum(x.get("restarts", 0) for x in res["flat"]["runs"])}
    sb = m.get("scoreboard") or {}  # sensor-time figures: the same flat out and paced (lossless edges)
    r.update(accuracy=sb.get("accuracy"), onset_p50_ms=sb.get("onset_to_first_correct_p50_ms"),
             onset_p99_ms=sb.get("onset_to_first_correct_p99_ms"))
    if "paced" in res:
        p = res["paced"]["median"]
        pd = p["decision_latency_us"]
        r.update(paced_p50_ms=pd["p50_us"] / 1e3, paced_p99_ms=pd["p99_us"] / 1e3, paced_rtf=p["real_time_factor"],
                 paced_drops=p["dropped_packets"])
    return r


def table(rows) -> str:
    head = ("| data | mode | events | sensor s | runtime M ev/s | real-time factor | reference M ev/s "
            "(RTF) | runtime / reference, wall | CPU s, runtime / reference | runtime / reference, CPU "
            "| decision p50 / p99 ms, flat out | decision p50 / p99 ms, real time "
            "| onset -> first correct p50 / p99 ms (sensor) | accuracy | drops | peak RSS MiB |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        paced = (f"{r['paced_p50_ms']:.1f} / {r['paced_p99_ms']:.1f}" if "paced_p50_ms" in r else "-")
        onset = (f"{r['onset_p50_ms']:.0f} / {r['onset_p99_ms']:.0f}" if r.get("onset_p50_ms") is not None else "n/a")
        acc = f"{100 * r['accuracy']:.0f} %" if r.get("accuracy") is not None else "n/a"
        restarts = f" ({r['restarts']} worker restarts)" if r.get("restarts") else ""
        lines.append(f"| {r['data']} | {r['mode']} | {r['events']:,} | {r['sensor_s']:.2f} | {r['mev_s']:.3f} | "
                     f"{r['rtf']:.2f} | {r['ref_mev_s']:.3f} ({r['ref_rtf']:.2f}) | {r['ratio']:.2f} | "
                     f"{_f(r.get('cpu_s'))} / {_f(r.get('ref_cpu_s'))} | {_f(r.get('ratio_cpu'))} | "
                     f"{r['flat_p50_ms']:.1f} / {r['flat_p99_ms']:.1f} | {paced} | {onset} | {acc} | "
                     f"{r['drops']}{'/' + str(r['paced_drops']) if 'paced_drops' in r else ''}{restarts} | "
                     f"{r['rss_mib']:.0f} |")
    return "\n".join(lines)


def _f(v, fmt=".2f") -> str:
    return "-" if v is None else format(v, fmt)


def write_docs(text: str) -> None:
    """Replace (or append) only our section of docs/benchmarks.md, re-read right before writing."""
    doc = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pat = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    block = text.rstrip() + "\n\n"
    doc = pat.sub(lambda _: block, doc, count=1) if pat.search(doc) else doc.rstrip() + "\n\n" + block
    DOCS.write_text(doc.rstrip() + "\n")


def docs_text(md: str, args, rows, t0, load0, load1, cmp_md=None, notes="") -> str:
    cmd = f".venv/bin/python bench/bench_e2e.py --repeats {args.repeats}" + (" --quick" if args.quick else "") + \
          " --json run.json --write-docs"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))
    paced = [r for r in rows if "paced_p50_ms" in r and "10 ms" not in r["mode"]]
    one = [r for r in rows if r["mode"].startswith("1 worker") and r.get("onset_p50_ms") is not None]
    lat = (f", paced p50 {min(r['paced_p50_ms'] for r in paced):.1f}-{max(r['paced_p50_ms'] for r in paced):.1f} ms"
           f" and p99 {min(r['paced_p99_ms'] for r in paced):.1f}-{max(r['paced_p99_ms'] for r in paced):.1f} ms"
           f" with 1 ms packets" if paced else "")
    onset = (f", p50 {one[0]['onset_p50_ms']:.0f} ms and p99 {one[0]['onset_p99_ms']:.0f} ms on the bundled clips"
             if one else "")
    compare = ""
    if cmp_md:
        meta = getattr(args, "compare_meta", None) or {}
        run = (f" ({args.compare_label}: the run of {time.strftime('%H:%M', time.gmtime(meta['t0']))}-"
               f"{time.strftime('%H:%M UTC', time.gmtime(meta['end']))}, load average {meta['load0'][0]:.1f} -> "
               f"{meta['load1'][0]:.1f})" if meta.get("t0") and meta.get("end") else "")
        compare = f"""
### Before and after: the two full runs (same script and options)

`{args.compare_label}` -> now{run}. `.venv/bin/python bench/bench_e2e.py --load run.json --compare
before.json --write-docs` rebuilds this section from the two saved runs.

{cmp_md}
"""
    return f"""{SECTION}

Command: `{cmd}` ({when}; the shared 2-core machine, load average {load0[0]:.1f} at the start and
{load1[0]:.1f} at the end, from other engineers' jobs: absolute rates are pessimistic and noisy;
the CPU-time columns and ratios measured in the same run are steadier). Each row is also what
`spikeflow bench` reports (docs/bench.md): a one-worker row is `spikeflow bench --workers 1
--cpus 1 --reference --warmup 1 --repeats {args.repeats}` (plus `--data FILES --sensor-size
128,128,2` for the real clips, `--speed 1` for the real-time column), a two-worker row the same
with `--workers 2` and no `--cpus`.

Graph and state: the bundled gesture model (`recordings/gesture_model.npz`: replay -> noise filter
-> polarity encoder (50 ms windows, 64x64) -> snn_conv/snn_pool x2 -> sliding-window classifier
(300 ms of evidence, a decision every 50 ms) -> scoreboard + publish on loopback). Data: the
model's own playlist of bundled test clips (simulated, labeled) and the 10 real DVS128 Gesture
clips of ../shared/recordings/slayer-dvsgesture replayed as `.bs2` files with
`sensor_size=[128,128,2]` (unlabeled as files, so no accuracy; the model was trained on simulated
gestures only). Playlist items are separated by 300 ms of sensor time, included in "sensor s".

- **runtime M ev/s, real-time factor**: flat out (speed 0), events replayed / wall time from the
  first source packet to the last node activity (worker start-up excluded, numba's first-call
  loading in fresh worker processes included); real-time factor = sensor seconds / those wall
  seconds. Medians of {args.repeats} runs after one discarded warm-up.
- **reference**: the same nodes with the same state, fed the same replay packets in-process by
  `LocalChain` (no runtime: no threads, inbox, metrics or sockets), same CPU affinity, same run.
  **runtime / reference, wall** is the runtime's throughput as a fraction of that.
- **CPU s, runtime / reference, CPU**: CPU seconds of a whole run (every thread of the bench
  process and every worker process; start-up included: for two workers that is fresh Python
  processes importing numpy/numba/zmq and loading kernels) and of the reference (from building
  its nodes); the ratio is in events per CPU second. On a loaded machine the wall ratio is
  unreliable: the scheduler shares a busy core per thread, so the runtime (a source and a worker
  thread) gets more of a loaded core than the one-thread reference.
- **decision latency**: wall clock from the emission of the source packet that closed the
  classifier's last window to the label packet leaving the classifier (the runtime's latency
  histogram of the classifier). Flat out this is mostly queueing behind the flood; **real time**
  (speed 1, one run) is what a live user sees.
- **onset -> first correct**: the scoreboard's sensor-time delay from a labeled recording's onset
  to the first correct confident decision (evidence accumulation included); sensor time, so the
  same flat out and paced; accuracy: per recording, scores summed over its decisions.
- **modes**: the third one is the two-worker split with the replay cutting 10 ms packets
  instead of 1 ms (`--set nodes.src.params.window_us=10000`): same events and decisions, ten
  times fewer packets across the worker boundary.
- **drops**: flat out / paced; lossless edges, so 0 means every packet arrived. Worker restarts
  over the flat-out runs (the supervisor kills a worker silent for `liveness_s`: 3 s before this session, 10 s now) are shown beside them.

{md}
{compare}
Against TrueNorth (Amir et al. 2017, DVS Gesture, 105 ms): their figure is from gesture onset to
the classifier's decision, i.e. it includes the time needed to accumulate evidence. Our comparable
figure is the onset -> first correct decision column (sensor time{onset}, one worker). It is set
by the classifier's 50 ms stride and 300 ms evidence window rather than by compute, and it is
measured on simulated clips, not on the DVS Gesture test set, so it is no like-for-like
comparison. The wall-clock decision latency (compute and queueing only{lat}) is a different
quantity: it adds to the onset delay, and it must stay below the 50 ms decision stride for the
pipeline to keep up in real time.

{notes}
"""


class _CpuChain:
    """A ``LocalChain`` that charges each node the thread CPU time of its ``process()`` calls
    (steadier than wall time on a shared machine)."""

    @staticmethod
    def make(spec, metas):
        from spikeflow.service.pipeline import LocalChain

        class Chain(LocalChain):
            def _emit(self, node, port, packet):
                for consumer, in_port in self._routes.get((node, port), ()):
                    t0 = time.thread_time_ns()
                    out = self.nodes[consumer].process(in_port, packet)
                    self.busy_ns[consumer] += time.thread_time_ns() - t0
                    self._route(consumer, out)

        return Chain(spec, metas)


def per_node(repeats: int, quick: bool) -> list[dict]:
    """CPU µs per packet of every processing node (sinks left out), the default graph and the
    gesture model, on bundled and real clips: source packets made once, then fed ``repeats + 1``
    times to fresh nodes in this thread (first pass discarded); medians."""
    import statistics
    from dataclasses import replace

    from spikeflow.service.cli_bench import _load_state_arrays, build_spec

    default = str(ROOT / "service" / "graphs" / "default.toml")
    real = [p for _, p, _ in datasets(quick)[1:]]
    setups = [("default", default, "bundled clip (its own)", None, None),
              ("gesture model", None, "bundled test clips (11)", None, None)]
    if real:
        setups += [("default", default, f"real clips ({len(real[0])})", real[0], (128, 128, 2)),
                   ("gesture model", None, f"real clips ({len(real[0])})", real[0], (128, 128, 2))]
    out = []
    for graph_label, graph, data, paths, size in setups:
        spec, state = build_spec(graph, data_paths=paths, sensor_size=size, speed=0.0, workers=1)
        src = next(n for n in spec.order if spec.nodes[n].cls.is_source)
        node = spec.nodes[src].cls(src, replace(spec.nodes[src].params, speed=0.0))
        metas = node.setup({})
        pkts = list(node.packets())
        node.close()
        arrays = _load_state_arrays(state) or {}
        runs = []
        for _ in range(repeats + 1):
            chain = _CpuChain.make(spec, {(src, p): m for p, m in metas.items()})
            per = {}
            for k, v in arrays.items():
                n, _, key = k.partition("/")
                if n in chain.nodes:
                    per.setdefault(n, {})[key] = v
            for n, st in per.items():
                chain.nodes[n].load_state(st)
            c0 = time.thread_time_ns()
            for port, pkt in pkts:
                chain.feed(src, port, pkt)
            chain.flush()
            runs.append((time.thread_time_ns() - c0, dict(chain.busy_ns)))
            chain.close()
        runs = runs[1:]
        total = statistics.median(r[0] for r in runs)
        n_ev = sum(p.count for _, p in pkts)
        for n in chain.order:
            ns = statistics.median(r[1].get(n, 0) for r in runs)
            out.append({"graph": graph_label, "data": data, "packets": len(pkts), "events": n_ev, "node": n,
                        "type": spec.nodes[n].type, "cpu_us_per_packet": ns / 1e3 / len(pkts),
                        "share": ns / total if total else 0.0, "chain_cpu_s": total / 1e9})
    return out


def per_node_table(rows, before=None, before_label="before") -> str:
    old = {(r["graph"], r["data"], r["node"]): r for r in before or []}
    if before:
        head = (f"| graph | data | packets | node | type | CPU µs per packet, {before_label} -> now | share of the "
                f"chain's CPU, {before_label} -> now | chain CPU s, {before_label} -> now |")
        lines = [head, "|---|---|---:|---|---|---:|---:|---:|"]
    else:
        lines = ["| graph | data | packets | node | type | CPU µs per packet | share of the chain's CPU | chain CPU s |",
                 "|---|---|---:|---|---|---:|---:|---:|"]
    for r in rows:
        o = old.get((r["graph"], r["data"], r["node"]))
        if before and o:
            lines.append(f"| {r['graph']} | {r['data']} | {r['packets']:,} | {r['node']} | {r['type']} | "
                         f"{o['cpu_us_per_packet']:.2f} -> {r['cpu_us_per_packet']:.2f} "
                         f"({o['cpu_us_per_packet'] / r['cpu_us_per_packet']:.1f}x) | "
                         f"{100 * o['share']:.0f} % -> {100 * r['share']:.0f} % | "
                         f"{o['chain_cpu_s']:.3f} -> {r['chain_cpu_s']:.3f} |")
        else:
            lines.append(f"| {r['graph']} | {r['data']} | {r['packets']:,} | {r['node']} | {r['type']} | "
                         f"{r['cpu_us_per_packet']:.2f} | {100 * r['share']:.0f} % | {r['chain_cpu_s']:.3f} |")
    return "\n".join(lines)


def compare_table(before_rows, rows, before_label: str) -> str:
    """Before/after figures per (data, mode): throughput, CPU cost, decision latency, ratio."""
    old = {(r["data"], r["mode"]): r for r in before_rows}
    head = (f"| data | mode | M ev/s, {before_label} -> now | real-time factor | CPU s per run | "
            "M ev per CPU s | runtime / reference, CPU | decision p50 / p99 ms, flat out | "
            "decision p50 / p99 ms, real time |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o = old.get((r["data"], r["mode"]))
        if o is None:
            continue

        def pair(k, fmt=".2f", scale=1.0, rr=r, oo=o):
            a, b = oo.get(k), rr.get(k)
            if a is None or b is None:
                return "-"
            return f"{a * scale:{fmt}} -> {b * scale:{fmt}}"

        def lat(p50, p99, rr=r, oo=o):
            if oo.get(p50) is None or rr.get(p50) is None:
                return "-"
            return f"{oo[p50]:.1f} / {oo[p99]:.1f} -> {rr[p50]:.1f} / {rr[p99]:.1f}"

        o_ec = o["events"] / o["cpu_s"] / 1e6 if o.get("cpu_s") else None
        n_ec = r["events"] / r["cpu_s"] / 1e6 if r.get("cpu_s") else None
        ec = f"{o_ec:.3f} -> {n_ec:.3f} ({n_ec / o_ec:.2f}x)" if o_ec and n_ec else "-"
        lines.append(f"| {r['data']} | {r['mode']} | {pair('mev_s', '.3f')} ({r['mev_s'] / o['mev_s']:.2f}x) | "
                     f"{pair('rtf')} | {pair('cpu_s')} | {ec} | {pair('ratio_cpu')} | "
                     f"{lat('flat_p50_ms', 'flat_p99_ms')} | {lat('paced_p50_ms', 'paced_p99_ms')} |")
    return "\n".join(lines)


def rows_of(reports: dict) -> list[dict]:
    out = []
    for key, res in reports.items():
        if key.startswith("_"):
            continue
        label, _, mode = key.rpartition(" / ")
        out.append(row(label, mode, res))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3 real clips, no paced runs (a smoke run)")
    ap.add_argument("--no-paced", action="store_true", help="skip the real-time paced runs")
    ap.add_argument("--write-docs", action="store_true", help=f"write the table to docs/benchmarks.md ({SECTION})")
    ap.add_argument("--json", help="write every report as JSON here")
    ap.add_argument("--load", metavar="JSON", help="measure nothing: tabulate a run saved with --json")
    ap.add_argument("--compare", metavar="JSON", help="also tabulate before/after against a run saved with --json")
    ap.add_argument("--compare-label", default="before", help="what the --compare run was (default: before)")
    ap.add_argument("--notes", metavar="MD", help="a reading of the figures (markdown) to append to the docs section")
    ap.add_argument("--per-node", action="store_true",
                    help="only the per-node CPU cost in-process (LocalChain), default and gesture graphs; with "
                         "--json/--compare/--load as for the end-to-end runs")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.per_node:
        rows = json.loads(Path(args.load).read_text()) if args.load else per_node(args.repeats, args.quick)
        if args.json and not args.load:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        before = json.loads(Path(args.compare).read_text()) if args.compare else None
        print(per_node_table(rows, before, args.compare_label))
        return 0
    if args.load:
        reports = json.loads(Path(args.load).read_text())
        meta = reports.get("_meta", {})
        rows = rows_of(reports)
        t0, load0, load1 = meta.get("t0", 0.0), meta.get("load0", (0.0,)), meta.get("load1", (0.0,))
        args.repeats, args.quick = meta.get("repeats", args.repeats), meta.get("quick", args.quick)
    else:
        all_cpus = os.sched_getaffinity(0)
        one = {max(all_cpus)}
        paced = not (args.quick or args.no_paced)
        rows, reports = [], {}
        t0 = time.time()
        load0 = os.getloadavg()
        for label, paths, size in datasets(args.quick):
            for workers, cpus, mode, ov in MODES(one, all_cpus):
                res = measure(label, paths, size, workers, cpus, args.repeats, paced, ov)
                reports[f"{label} / {mode}"] = res
                rows.append(row(label, mode, res))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        os.sched_setaffinity(0, all_cpus)
        load1 = os.getloadavg()
        reports["_meta"] = {"t0": t0, "load0": load0, "load1": load1, "repeats": args.repeats, "quick": args.quick,
                            "end": time.time()}
    md = table(rows)
    print("\n" + md)
    cmp_md = None
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        args.compare_meta = before.get("_meta")
        cmp_md = compare_table(rows_of(before), rows, args.compare_label)
        print("\n" + cmp_md)
    if args.json and not args.load:
        Path(args.json).write_text(json.dumps(reports, indent=1, default=str))
    if args.write_docs:
        notes = Path(args.notes).read_text() if args.notes else ""
        write_docs(docs_text(md, args, rows, t0, load0, load1, cmp_md, notes))
        print(f"\nwritten to {DOCS} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
