"""Graph files: every validation error names its key path; metadata flows through setup()."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from spikeflow.nodes.base import Node, PortMeta, Source, param
from spikeflow.service import registry
from spikeflow.service.errors import GraphError, ParamError
from spikeflow.service.events import SensorSize
from spikeflow.service.graph import (apply_override, check_graph, default_graph_path, load_graph, metas_from_json,
                                     metas_to_json)


# Small node types for structural cases the built-ins cannot produce (labels ports, two inputs,
# an endpoint parameter). Registered once, under names no real module uses.
@dataclass(frozen=True)
class _LabelsParams:
    pass


class _LabelsSource(Source):
    type_name = "test_graph_labels_source"
    outputs = {"labels_out": "labels"}

    def setup(self, meta):
        return {"labels_out": PortMeta("labels", SensorSize(0, 0, 0))}


class _Merge(Node):
    type_name = "test_graph_merge"
    inputs = {"a_in": "events", "b_in": "events"}


@dataclass(frozen=True)
class _EndpointParams:
    endpoint: str = param("tcp://127.0.0.1:5999", "where to bind")
    bind: bool = param(True, "bind (true) or connect (false)")


class _Binder(Node):
    type_name = "test_graph_binder"
    Params = _EndpointParams
    outputs = {}


for _cls in (_LabelsSource, _Merge, _Binder):
    if _cls.type_name not in registry.all_types():
        registry.register(_cls)


@pytest.fixture
def nmnist(shared):
    return str(shared("recordings/tonic-testdata/sample_nmnist.bin"))


@pytest.fixture
def gen4(shared):
    return str(shared("recordings/faery-testdata/gen4.dat"))


def graph(nmnist_path: str, extra: str = "", filt: str = 'inputs = { events_in = "src.events_out" }') -> str:
    return f"""
[graph]
name = "t"
[nodes.src]
type = "replay"
params = {{ path = "{nmnist_path}", speed = 0 }}
[nodes.f]
type = "noise_filter"
{filt}
{extra}
"""


def err(text: str, **kw) -> GraphError:
    with pytest.raises(GraphError) as ei:
        spec = load_graph(text, **kw)
        check_graph(spec)
    return ei.value


def test_valid_graph_builds_with_metas(nmnist, tmp_path):
    spec = load_graph(graph(nmnist, f"""
[nodes.rec]
type = "record"
inputs = {{ events_in = "f.events_out" }}
params = {{ path = "{tmp_path / 'x.sfe'}" }}
worker = "io"
"""))
    assert spec.order == ["src", "f", "rec"]
    assert spec.workers == {"main": ["src", "f"], "io": ["rec"]}
    assert [(n, i.port) for n, i in spec.cross_edges()] == [("rec", "events_in")]
    metas = check_graph(spec)
    assert metas[("src", "events_out")] == PortMeta("events", SensorSize(34, 34, 2))
    assert metas[("f", "events_out")].sensor_size == SensorSize(34, 34, 2)
    assert metas_from_json(metas_to_json(metas)) == metas
    assert not (tmp_path / "x.sfe").exists()  # a dry build touches no output file


def test_graph_from_file_and_overrides(nmnist, tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(graph(nmnist))
    spec = load_graph(p, overrides=["nodes.f.params.window_us=123", "nodes.src.params.loop=true",
                                    "nodes.src.params.sensor_size=[40, 40, 2]"])
    assert spec.nodes["f"].params.window_us == 123
    assert spec.nodes["src"].params.loop is True
    assert spec.nodes["src"].params.sensor_size == (40, 40, 2)
    assert spec.source == str(p)
    assert check_graph(spec)[("f", "events_out")].sensor_size == SensorSize(40, 40, 2)


def test_default_graph_parses():
    spec = load_graph(default_graph_path())
    assert spec.nodes["src"].type == "replay" and spec.nodes["denoise"].type == "noise_filter"


def test_unknown_node_type(nmnist):
    e = err(graph(nmnist).replace('type = "noise_filter"', 'type = "noise_filtr"'))
    assert e.key == "nodes.f.type" and "unknown node type 'noise_filtr'" in str(e) and "noise_filter" in str(e)


def test_unknown_parameter(nmnist):
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out" }\nparams = { windw_us = 5 }'))
    assert isinstance(e, ParamError) and e.key == "nodes.f.params.windw_us" and "window_us" in str(e)


def test_ill_typed_parameter(nmnist):
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out" }\nparams = { window_us = "5ms" }'))
    assert e.key == "nodes.f.params.window_us" and "expected an integer" in str(e)


def test_out_of_range_parameter(nmnist):
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out" }\nparams = { window_us = 0 }'))
    assert e.key == "nodes.f.params.window_us" and "must be >= 1" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out" }\nparams = { neighbourhood = 6 }'))
    assert e.key == "nodes.f.params.neighbourhood" and "one of [4, 8]" in str(e)


def test_missing_input(nmnist):
    e = err(graph(nmnist, filt=""))
    assert e.key == "nodes.f.inputs.events_in" and "missing input" in str(e)


def test_unknown_input_port(nmnist):
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out", spikes_in = "src.events_out" }'))
    assert e.key == "nodes.f.inputs.spikes_in" and "unknown input port" in str(e)


def test_unknown_upstream_node_and_port(nmnist):
    e = err(graph(nmnist, filt='inputs = { events_in = "sorce.events_out" }'))
    assert e.key == "nodes.f.inputs.events_in" and "unknown node 'sorce'" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = "src.spikes_out" }'))
    assert e.key == "nodes.f.inputs.events_in" and "no output port 'spikes_out'" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = "src" }'))
    assert e.key == "nodes.f.inputs.events_in" and 'expected "node.port"' in str(e)


def test_cycle_is_reported_with_its_path(nmnist):
    e = err(graph(nmnist, """
[nodes.g]
type = "noise_filter"
inputs = { events_in = "h.events_out" }
[nodes.h]
type = "refractory_filter"
inputs = { events_in = "g.events_out" }
"""))
    assert e.key in ("nodes.g.inputs.events_in", "nodes.h.inputs.events_in")
    assert "cycle: g -> h -> g" in str(e) or "cycle: h -> g -> h" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = "f.events_out" }'))
    assert e.key == "nodes.f.inputs.events_in" and "cycle: f -> f" in str(e)


def test_bad_edge_policy_and_queue(nmnist):
    e = err(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", policy = "fast" } }'))
    assert e.key == "nodes.f.inputs.events_in.policy" and "lossless" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", queue = 0 } }'))
    assert e.key == "nodes.f.inputs.events_in.queue"
    e = err(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", qeue = 3 } }'))
    assert e.key == "nodes.f.inputs.events_in.qeue" and "queue_bytes" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", queue_bytes = 0 } }'))
    assert e.key == "nodes.f.inputs.events_in.queue_bytes" and ">= 1" in str(e)
    e = err(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", queue_bytes = "1M" } }'))
    assert e.key == "nodes.f.inputs.events_in.queue_bytes"
    e = err(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", policy = "realtime", '
                               'queue_bytes = 1000 } }'))
    assert e.key == "nodes.f.inputs.events_in.queue_bytes" and "only lossless" in str(e)


def test_edge_queue_defaults_follow_the_policy(nmnist):
    """Lossless: 256 packets in flight and a 16 MiB byte budget; realtime: a queue of 64
    packets (no byte budget); both overridable."""
    from spikeflow.service.graph import DEFAULT_QUEUE_BYTES

    inp = load_graph(graph(nmnist, filt='inputs = { events_in = "src.events_out" }')).nodes["f"].inputs["events_in"]
    assert (inp.policy, inp.queue, inp.queue_bytes) == ("lossless", 256, DEFAULT_QUEUE_BYTES) == \
           ("lossless", 256, 16 << 20)
    inp = load_graph(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", policy = "realtime" } }')
                     ).nodes["f"].inputs["events_in"]
    assert (inp.policy, inp.queue) == ("realtime", 64)
    inp = load_graph(graph(nmnist, filt='inputs = { events_in = { from = "src.events_out", queue = 8, '
                                        'queue_bytes = 100_000 } }')).nodes["f"].inputs["events_in"]
    assert (inp.queue, inp.queue_bytes) == (8, 100_000)


def test_record_refuses_a_realtime_edge(nmnist, tmp_path):
    e = err(graph(nmnist, f"""
[nodes.rec]
type = "record"
inputs = {{ events_in = {{ from = "f.events_out", policy = "realtime" }} }}
params = {{ path = "{tmp_path / 'x.sfe'}" }}
"""))
    assert e.key == "nodes.rec.inputs.events_in.policy" and "only 'lossless'" in str(e)


def test_port_kind_mismatch(nmnist):
    e = err(graph(nmnist, """
[nodes.lab]
type = "test_graph_labels_source"
[nodes.g]
type = "noise_filter"
inputs = { events_in = "lab.labels_out" }
"""))
    assert e.key == "nodes.g.inputs.events_in" and "port kind mismatch" in str(e) and "'labels'" in str(e)


def test_sensor_size_mismatch(nmnist, gen4):
    e = err(graph(nmnist, f"""
[nodes.big]
type = "replay"
params = {{ path = "{gen4}" }}
[nodes.m]
type = "test_graph_merge"
inputs = {{ a_in = "f.events_out", b_in = "big.events_out" }}
"""))
    assert e.key == "nodes.m.inputs.b_in" and "sensor-size mismatch" in str(e) and "(1280, 720, 2)" in str(e)


def test_setup_errors_name_the_node(nmnist):
    e = err(graph(nmnist, """
[nodes.tt]
type = "tonic_transform"
inputs = { events_in = "f.events_out" }
params = { transform = "ToFrame", kwargs = { n_time_bins = 3 } }
"""))
    assert e.key == "nodes.tt.params.transform" and "not events" in str(e)


def test_missing_recording_names_the_path_key(tmp_path):
    e = err(graph(str(tmp_path / "nothere.raw")))
    assert e.key == "nodes.src.params.path" and "nothere.raw" in str(e)


def test_unknown_sensor_size_is_refused(tmp_path):
    from spikeflow.drivers.recording import open_writer
    from spikeflow.service.events import make_events

    p = tmp_path / "nosize.sfe"
    with open_writer(p, (0, 0, 2)) as w:
        w.write(make_events([1, 2], [0, 1], [0, 0], [1, 0]))
    e = err(graph(str(p)))
    assert e.key == "nodes.src.params" and "set params.sensor_size" in str(e)


def test_non_loopback_bind_needs_permission(nmnist):
    text = graph(nmnist, """
[nodes.b]
type = "test_graph_binder"
inputs = { events_in = "f.events_out" }
params = { endpoint = "tcp://0.0.0.0:5999" }
""")
    e = err(text)
    assert e.key == "nodes.b.params.endpoint" and "allow_remote" in str(e)
    assert load_graph(text, allow_remote=True)                        # --allow-remote
    assert load_graph(text.replace('name = "t"', 'name = "t"\nallow_remote = true'))
    assert load_graph(text.replace("0.0.0.0", "127.0.0.1"))
    assert load_graph(text.replace("tcp://0.0.0.0:5999", "ipc:///tmp/x.sock"))
    assert load_graph(text.replace('5999" }', '5999", bind = false }'))  # connecting out is no bind
    e = err(text.replace("tcp://0.0.0.0:5999", "tcp://*:5999"))
    assert e.key == "nodes.b.params.endpoint"


def test_structure_errors(nmnist):
    e = err(graph(nmnist) + "\n[extra]\nx = 1\n")
    assert e.key == "extra"
    e = err(graph(nmnist).replace('name = "t"', 'name = "t"\nheartbeat = 1'))
    assert e.key == "graph.heartbeat" and "unknown graph option" in str(e)
    e = err(graph(nmnist).replace('name = "t"', 'name = "t"\nliveness_s = "x"'))
    assert e.key == "graph.liveness_s"
    e = err(graph(nmnist).replace('name = "t"', 'name = "t"\ntransport = "udp"'))
    assert e.key == "graph.transport"
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out" }\nworkr = "x"'))
    assert e.key == "nodes.f.workr"
    e = err(graph(nmnist, filt='inputs = { events_in = "src.events_out" }\nworker = "a b"'))
    assert e.key == "nodes.f.worker"
    e = err('[graph]\nname = "t"\n')
    assert e.key == "nodes"
    e = err('[nodes.src\ntype = "replay"')
    assert "invalid TOML" in str(e)
    e = err('[nodes."a.b"]\ntype = "replay"\n')
    assert e.key == "nodes.a.b"
    with pytest.raises(GraphError, match="cannot read graph file"):
        load_graph("/nonexistent/graph.toml")


def test_override_errors():
    raw = {"nodes": {"a": {"type": "x"}}}
    apply_override(raw, "nodes.a.params.k=3")
    assert raw["nodes"]["a"]["params"]["k"] == 3
    apply_override(raw, "nodes.a.params.s=hello world")
    assert raw["nodes"]["a"]["params"]["s"] == "hello world"
    with pytest.raises(GraphError, match="nodes.a.type: is not a table"):
        apply_override(raw, "nodes.a.type.x=1")
    with pytest.raises(GraphError, match="must look like key.path=value"):
        apply_override(raw, "nodes.a.type")


def test_a_node_that_cannot_start_names_itself(nmnist):
    """Any failure inside a node's setup (here: its port is taken) is a GraphError naming the node."""
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        e = err(graph(nmnist, f"""
[nodes.out]
type = "publish"
inputs = {{ events_in = "f.events_out" }}
params = {{ endpoint = "tcp://127.0.0.1:{port}" }}
"""))
        assert e.key == "nodes.out" and "setup failed" in str(e) and "Address already in use" in str(e)
    finally:
        sock.close(0)
