"""`spikeflow bench` as a real subprocess on two bundled clips: one worker in-process, and the
graph split over two worker processes under the daemon. Figures are checked for sanity and
consistency (event counts, per-node rows, latency fields), never against a time budget."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spikeflow import recordings
from spikeflow.drivers.recording import read_recording

CLIPS = ["gesture_01_hand_clapping_s4.sfe", "gesture_01_hand_clapping_s5.sfe"]  # the test split's first two


def bundled_graph():
    from spikeflow.service.model import bundled_model_path, load_bundle
    from spikeflow.service.training import bundle_graph

    return bundle_graph(load_bundle(bundled_model_path()))


SPEC = bundled_graph()
GESTURE_NODES = list(SPEC.order)
TYPES = {n: SPEC.nodes[n].type for n in GESTURE_NODES}


def bench(tmp_path, *args, name="bench.json"):
    out = tmp_path / name
    r = subprocess.run([sys.executable, "-m", "spikeflow", "bench", *args, "--json", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout


@pytest.fixture(scope="module")
def clips():
    paths = [str(recordings.path(c)) for c in CLIPS]
    return paths, sum(len(read_recording(p)[0]) for p in paths)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, clips):
    paths, _ = clips
    return bench(tmp_path_factory.mktemp("b1"), "--data", *paths, "--workers", "1", "--reference")


def check_sane(rep, n_events, workers):
    m = rep["median"]
    assert m["events"] == n_events == rep["input"]["events"] == m["events_expected"]
    assert m["packets"] == rep["input"]["packets"] > 0
    assert m["real_time_factor"] > 0 and m["events_per_s"] > 0 and m["packets_per_s"] > 0
    assert 0 < m["stream_s"] <= m["wall_total_s"]
    assert rep["input"]["sensor_s"] >= rep["input"]["recordings_s"] > 2.0  # two ~1.45 s clips + gap
    assert sorted(m["nodes"]) == sorted(GESTURE_NODES)
    assert {n: r["worker"] for n, r in m["nodes"].items()} == workers
    by_type = {t: [n for n in GESTURE_NODES if TYPES[n] == t] for t in set(TYPES.values())}
    (src,), (cls,), (score,) = by_type["replay"], by_type["classifier"], by_type["scoreboard"]
    assert m["nodes"][src]["events_out"] == n_events
    assert m["nodes"][score]["events_in"] == n_events  # the scoreboard's truth edge carries all events
    for n in GESTURE_NODES:
        if n != src:
            assert m["nodes"][n]["packets_in"] > 0, n
            assert m["nodes"][n]["latency_us"]["count"] > 0, n
    dec = m["decision_latency_us"]
    assert dec["count"] == m["nodes"][cls]["packets_out"] > 0
    assert 0 < dec["p50_us"] <= dec["p99_us"] <= dec["max_us"]
    sb = m["scoreboard"]
    assert sb["scored"] == 2 and sb["decisions"] == dec["count"]
    assert sb["decision_age_p50_us"] > 0 and sb["decision_age_p99_us"] >= sb["decision_age_p50_us"]
    assert m["dropped_packets"] == 0 and m["errors"] == 0
    assert m["rss_peak_mib"] > 20
    assert not rep["failures"]


def test_bench_one_worker_on_recording_files(one_worker, clips):
    rep, stdout = one_worker
    _, n = clips
    check_sane(rep, n, dict.fromkeys(GESTURE_NODES, "main"))
    assert rep["workers"] == {"main": GESTURE_NODES}
    assert rep["data"] == {"source": "files", "files": 2}
    assert list(rep["median"]["rss_peak_by_process_mib"]) == ["bench"]
    assert f"end to end: {n:,} events" in stdout
    assert "real-time factor" in stdout and "decision latency: p50" in stdout
    for node in GESTURE_NODES:
        assert any(line.startswith(node + " ") for line in stdout.splitlines()), node


def test_bench_e2e_tabulates_the_figures_the_cli_prints(one_worker):
    """bench/bench_e2e.py's table rows and `spikeflow bench`'s printout come from one report:
    the same throughput, real-time factor, decision latency, CPU time and reference ratios."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_e2e.py"
    spec = importlib.util.spec_from_file_location("bench_e2e", path)
    e2e = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(e2e)
    rep, stdout = one_worker
    r = e2e.row("clips", "1 worker", {"flat": rep})
    m, ref = rep["median"], rep["reference"]
    assert r["events"] == m["events"] and r["decisions"] == m["decision_latency_us"]["count"] > 0
    assert r["cpu_s"] == m["cpu_total_s"] > 0 and r["ref_cpu_s"] == ref["cpu_total_s"] > 0
    assert r["ratio"] == m["events_per_s"] / ref["events_per_s"]
    assert r["ratio_cpu"] == (m["events"] / m["cpu_total_s"]) / (ref["events"] / ref["cpu_total_s"])
    assert f"throughput: {r['mev_s']:.3f} M events/s" in stdout
    assert f"real-time factor {r['rtf']:.2f}; CPU {r['cpu_s']:.2f} s" in stdout
    assert f"decision latency: p50 {r['flat_p50_ms']:.2f} ms, p99 {r['flat_p99_ms']:.2f} ms" in stdout
    assert (f"{r['ref_mev_s']:.3f} M events/s (real-time factor {r['ref_rtf']:.2f}) in {ref['wall_s']:.3f} s, "
            f"CPU {r['ref_cpu_s']:.2f} s") in stdout
    assert f"runtime / reference = {r['ratio']:.2f} (wall), {r['ratio_cpu']:.2f} (events per CPU second)" in stdout
    line = e2e.table([r]).splitlines()[-1]
    assert f"| {r['mev_s']:.3f} | {r['rtf']:.2f} | {r['ref_mev_s']:.3f} ({r['ref_rtf']:.2f}) | {r['ratio']:.2f} |" in line


def test_bench_two_workers_under_the_daemon(tmp_path, one_worker, clips):
    """--workers 2 with the bundled test split as a dataset (its first two samples are the same
    two clips): encoder side in one process, spiking layers and classifier in the other; the
    lossless graph makes the same decisions as in one worker."""
    _, n = clips
    rep, _ = bench(tmp_path, "--data", "bundled", "--split", "test", "--max-samples", "2", "--workers", "2")
    first_layer = next(i for i, x in enumerate(GESTURE_NODES) if TYPES[x] == "snn_conv")
    io = GESTURE_NODES[:first_layer]  # source, filter, encoder; the rest is downstream of conv1
    assert {TYPES[x] for x in io} >= {"replay", "polarity_encoder"}
    check_sane(rep, n, {x: ("io" if x in io else "snn") for x in GESTURE_NODES})
    assert rep["workers"] == {"io": io, "snn": GESTURE_NODES[first_layer:]}
    assert rep["data"]["samples"] == 2 and rep["data"]["events"] == n and rep["data"]["written"] == 0
    procs = rep["median"]["rss_peak_by_process_mib"]
    assert {"worker:io", "worker:snn"} <= set(procs) and all(v > 20 for v in procs.values())
    one = one_worker[0]["median"]
    two = rep["median"]
    assert two["decision_latency_us"]["count"] == one["decision_latency_us"]["count"]
    assert two["scoreboard"]["accuracy"] == one["scoreboard"]["accuracy"]
    for node in GESTURE_NODES:
        for k in ("events_in", "events_out", "packets_in", "packets_out"):
            assert two["nodes"][node][k] == one["nodes"][node][k], (node, k)


def test_dataset_samples_become_labeled_recordings(shared, tmp_path):
    """A dataset without labeled files (SLAYER .bs2) is written as labeled .sfe recordings, which
    the replay node stamps with the truth the scoreboard needs."""
    from spikeflow.drivers.datasets import open_dataset
    from spikeflow.drivers.recording import open_recording
    from spikeflow.service.cli_bench import materialize

    root = shared("recordings/slayer-dvsgesture")
    paths, info = materialize(open_dataset(f"slayer-gesture:{root}", split="test"), tmp_path, max_samples=2)
    assert info["samples"] == info["written"] == 2 and len(paths) == 2
    assert info["events"] == 63_471 + 84_260  # 1.bs2 and 2.bs2 (MANIFEST counts)
    for p, label in zip(paths, (1, 2)):
        with open_recording(p) as rec:
            assert rec.info.extra["label"] == label
            assert tuple(rec.info.sensor_size) == (128, 128, 2)
