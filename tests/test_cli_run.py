"""`spikeflow run` and `spikeflow nodes` as real subprocesses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np

import naive_filters as naive
from spikeflow import recordings
from spikeflow.drivers.recording import read_recording


def spikeflow(*args, timeout=180, **kw):
    return subprocess.run([sys.executable, "-m", "spikeflow", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def stat(text: str, label: str) -> int:
    m = re.search(rf"{label} ([\d,]+)", text)
    assert m, f"no '{label}' in:\n{text}"
    return int(m.group(1).replace(",", ""))


def test_run_without_arguments_runs_the_bundled_gesture_model():
    """No argument: the bundled model replays the 11 bundled test clips through its trained
    spiking graph, prints live predictions against the clips' labels and a summary."""
    from spikeflow.service.runtime import free_tcp_port

    r = spikeflow("run", "--speed", "0", "--set", f"nodes.out.params.endpoint=tcp://127.0.0.1:{free_tcp_port()}")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\[score\] t= +[\d.]+ s  \w+ +conf [\d.]+  truth: hand_clapping", r.stdout)
    m = re.search(r"summary: 11 labeled recordings, accuracy ([\d.]+) %", r.stdout)
    assert m, r.stdout[-2000:]
    assert float(m.group(1)) >= 60.0  # 90.9 % measured (10/11); chance is 9 %
    out = r.stdout + r.stderr
    assert stat(out, "events in") > 100_000  # 11 clips
    assert re.search(r"^cls +classifier +main ", out, re.M)


def test_run_demo_runs_the_plain_default_graph():
    """--demo: the embedded default replays a bundled recording through the noise filter and
    prints statistics whose counts match the recording and the filter."""
    from spikeflow.service.runtime import free_tcp_port

    r = spikeflow("run", "--demo", "--speed", "0", "--set",
                  f"nodes.out.params.endpoint=tcp://127.0.0.1:{free_tcp_port()}")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    ev, info = read_recording(recordings.path("gesture_04_right_arm_clockwise_s0.sfe"))
    kept = int(naive.background_activity(ev, info.sensor_size, 5000).sum())
    assert stat(out, "events in") == len(ev)
    assert stat(out, "events out") == kept
    assert re.search(r"rate [\d.]+ M events/s; end-to-end latency p50 \d+ us, p99 \d+ us", out)
    assert "[show] events src.events_out seq=0 " in r.stdout  # the print node's lines
    assert re.search(r"^out +publish +main +[\d.]+k +0 ", out, re.M)  # published every kept event


def test_run_a_graph_file_with_overrides(shared, tmp_path):
    src = shared("recordings/tonic-testdata/sample.aedat4")
    out = tmp_path / "out.sfe"
    g = tmp_path / "g.toml"
    g.write_text(f"""
[graph]
name = "cli"
[nodes.src]
type = "replay"
params = {{ path = "{src}", window_us = 1000 }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "/nonexistent/dir/x.sfe" }}
""")
    r = spikeflow("run", str(g), "--speed", "0", "--set", f"nodes.rec.params.path={out}",
                  "--set", "nodes.denoise.params.window_us=1500", "--set", "nodes.src.params.window_us=20000")
    assert r.returncode == 0, r.stderr
    ev, info = read_recording(src)
    want = ev[naive.background_activity(ev, info.sensor_size, 1500)]
    got, got_info = read_recording(out)
    np.testing.assert_array_equal(got, want)
    assert got_info.sensor_size == (320, 240, 2)
    assert stat(r.stdout, "events in") == len(ev) == 111_954
    assert stat(r.stdout, "events out") == len(want)


def test_run_multi_worker_graph_under_a_foreground_daemon(shared, tmp_path):
    src = shared("recordings/tonic-testdata/sample_nmnist.bin")
    out = tmp_path / "out.sfe"
    g = tmp_path / "mw.toml"
    g.write_text(f"""
[graph]
name = "mw"
[nodes.src]
type = "replay"
params = {{ path = "{src}", speed = 0 }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 2000 }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "{out}" }}
worker = "io"
""")
    r = spikeflow("run", str(g), "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "graph mw: 2 worker(s)" in r.stdout
    ev, info = read_recording(src)
    want = ev[naive.background_activity(ev, info.sensor_size, 2000)]
    np.testing.assert_array_equal(read_recording(out)[0], want)
    assert stat(r.stdout, "events out") == len(want)
    assert not (tmp_path / "run" / "mw.pid").exists()


def test_run_stops_cleanly_on_sigint(shared, tmp_path):
    """Ctrl-C on an endless stream: drain, complete file, statistics, exit 0."""
    src = shared("recordings/tonic-testdata/sample_nmnist.bin")
    out = tmp_path / "out.sfe"
    g = tmp_path / "loop.toml"
    g.write_text(f"""
[nodes.src]
type = "replay"
params = {{ path = "{src}", loop = true }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "src.events_out" }}
params = {{ path = "{out}" }}
""")
    p = subprocess.Popen([sys.executable, "-m", "spikeflow", "run", str(g)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size > 0):  # the writer has written its header
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else ""
        time.sleep(0.02)
    time.sleep(0.4)  # let some of the (real-time) stream through; the assertion below needs > 0 events
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    got, _ = read_recording(out)
    assert stat(stdout, "events in") == len(got) > 0
    ev, _ = read_recording(src)
    np.testing.assert_array_equal(got[: min(len(got), len(ev))], ev[: min(len(got), len(ev))])


def test_run_reports_graph_errors_with_the_key(tmp_path):
    g = tmp_path / "bad.toml"
    g.write_text('[nodes.a]\ntype = "replay"\nparams = { path = "x.sfe", speed = -1 }\n')
    r = spikeflow("run", str(g))
    assert r.returncode == 2
    assert "spikeflow run: error: nodes.a.params.speed: must be >= 0.0, got -1" in r.stderr
    r = spikeflow("run", "--demo", "--set", "nodes.src.params.path=/nonexistent.raw")
    assert r.returncode == 2 and "nodes.src.params.path" in r.stderr and "/nonexistent.raw" in r.stderr
    # the bundled gesture model plays a playlist: setting `path` as well is ambiguous
    r = spikeflow("run", "--set", "nodes.src.params.path=clip.sfe")
    assert r.returncode == 2 and "nodes.src.params.path: give exactly one of `path` or `paths`" in r.stderr


def test_nodes_lists_types_with_parameters():
    r = spikeflow("nodes")
    assert r.returncode == 0, r.stderr
    for t in ("replay", "simulate", "record", "print", "noise_filter", "refractory_filter", "tonic_transform"):
        assert re.search(rf"^{t}  \(", r.stdout, re.M), t
    assert re.search(r"window_us\s+int\s+default 5000  \[1, 1000000000\]", r.stdout)
    assert "an event survives if a neighbour pixel fired within this many µs" in r.stdout
    r = spikeflow("nodes", "noise_filter", "--json")
    info = json.loads(r.stdout)
    params = {p["name"]: p for p in info["noise_filter"]["params"]}
    assert params["neighbourhood"]["choices"] == [4, 8] and params["window_us"]["default"] == 5000
    assert info["noise_filter"]["inputs"] == {"events_in": "events"}
    r = spikeflow("nodes", "nope")
    assert r.returncode == 2 and "unknown node type 'nope'" in r.stderr


def test_simulate_source_runs_through_a_graph(tmp_path):
    out = tmp_path / "bars.sfe"
    g = tmp_path / "sim.toml"
    g.write_text(f"""
[nodes.sim]
type = "simulate"
params = {{ scene = "bars", size = 32, duration_us = 200000, window_us = 5000, speed = 0 }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "sim.events_out" }}
params = {{ path = "{out}" }}
""")
    r = spikeflow("run", str(g))
    assert r.returncode == 0, r.stderr
    ev, info = read_recording(out)
    assert info.sensor_size == (32, 32, 2) and len(ev) > 100
    assert np.all(np.diff(ev["t"]) >= 0) and ev["t"].max() < 200_000
    # a vertical bar sweeping right: event x positions advance with time
    early, late = ev[ev["t"] < 50_000], ev[ev["t"] >= 100_000]
    assert np.median(late["x"]) > np.median(early["x"])
    assert stat(r.stdout, "events in") == len(ev)
