"""Mapping layers onto Loihi cores: hand-computed placements, splits, chip limits, kernel twins."""

from __future__ import annotations

import numpy as np
import pytest

import naive_loihi as naive
from spikeflow.nodes import loihi_kernels as K
from spikeflow.nodes.loihi_mapping import ChipCapacityError, LayerSpec, map_network
from spikeflow.service.errors import GraphError


def spec(name, typ, in_shape, out_shape, **kw):
    return LayerSpec.from_describe({"name": name, "type": typ, "in_shape": in_shape, "out_shape": out_shape, **kw})


def tiny():
    """input (1,4,4) -> conv 2x2 -> (2,3,3) -> pool 3x3/3 -> (2,1,1)."""
    return [spec("in", "input", (1, 4, 4), (1, 4, 4)),
            spec("c1", "conv", (1, 4, 4), (2, 3, 3), kernel=(2, 2)),
            spec("p1", "pool", (2, 3, 3), (2, 1, 1), kernel=(3, 3), stride=3)]


def test_tiny_network_by_hand():
    m = map_network(tiny(), weight_bits=8)
    s = m.summary()
    assert s["cores_used"] == 2 and s["chips"] == 1 and s["fits_one_chip"] and s["tiles_used"] == 1
    c1, p1 = m.placements["c1"], m.placements["p1"]
    # conv: 18 neurons, each 1 channel x 2 x 2 = 4 synapses, expanded per compartment (no sharing)
    assert c1.fan_in.tolist() == [4] * 18 and c1.syn_bits.tolist() == [18 * 4 * 8]
    assert c1.input_axons.tolist() == [16]            # every input pixel feeds the core
    assert c1.output_axons.tolist() == [18]           # each conv neuron -> the one pool core
    assert p1.fan_in.tolist() == [9, 9] and p1.input_axons.tolist() == [18] and p1.output_axons.tolist() == [0]
    assert m.core_neurons.tolist() == [18, 2]
    assert s["utilisation"]["compartments"] == pytest.approx(20 / 2048)
    assert s["utilisation"]["syn_memory"] == pytest.approx((576 + 144) / (2 * 1048576))
    assert [c["tile"] for c in s["cores"]] == [[0, 0], [0, 0]]
    assert s["layers"][0]["cores"] == 0 and s["layers"][1]["synapses"] == 72


def test_fan_in_counts_borders_with_padding():
    s = spec("c", "conv", (3, 5, 5), (2, 5, 5), kernel=(3, 3), padding=1)
    f = s.fan_in().reshape(5, 5, 2)
    assert f[0, 0, 0] == 3 * 2 * 2 and f[0, 2, 1] == 3 * 2 * 3 and f[2, 2, 0] == 3 * 9
    assert int(s.fan_in().sum()) == 2 * 3 * sum(
        len([k for k in range(3) if 0 <= y - 1 + k < 5]) * len([k for k in range(3) if 0 <= x - 1 + k < 5])
        for y in range(5) for x in range(5))


def test_layer_over_1024_compartments_is_split():
    m = map_network([spec("in", "input", (1, 1, 1), (1, 1, 1)), spec("d", "dense", (1, 1, 1), (2500, 1, 1))])
    assert m.placements["d"].bounds.tolist() == [0, 1024, 2048, 2500]
    assert m.summary()["layers"][1]["split"] is True


def test_layer_over_synaptic_memory_is_split():
    # fan-in 64*64 = 4096 at 8 bits = 32768 bits: 1048576 / 32768 = 32 neurons per core
    m = map_network([spec("in", "input", (1, 64, 64), (1, 64, 64)), spec("d", "dense", (1, 64, 64), (300, 1, 1))])
    b = m.placements["d"].bounds
    assert np.diff(b).tolist() == [32] * 9 + [12]
    assert m.placements["d"].syn_bits.max() == 32 * 4096 * 8
    m1 = map_network([spec("in", "input", (1, 64, 64), (1, 64, 64)), spec("d", "dense", (1, 64, 64), (300, 1, 1))],
                     weight_bits=1)  # 4096 bits per neuron: 256 per core
    assert np.diff(m1.placements["d"].bounds).tolist() == [256, 44]


def test_layer_over_input_axons_is_split():
    # 16 channels x 32 columns = 512 sources per input row; 4096 axons = 8 input rows.
    # First core: output rows 0..6 use input rows 0..7; then 6 output rows need 8 input rows;
    # the last core, rows 25..31, needs input rows 24..31 only (bottom border).
    m = map_network([spec("in", "input", (16, 32, 32), (16, 32, 32)),
                     spec("c", "conv", (16, 32, 32), (1, 32, 32), kernel=(3, 3), padding=1)], weight_bits=1)
    p = m.placements["c"]
    assert p.bounds.tolist() == [0, 224, 416, 608, 800, 1024]
    assert p.input_axons.tolist() == [4096] * 5


def test_output_axons_over_limit_shrink_the_source_cores():
    # d1: 1024 neurons, each reaching all 40 cores of d2 (5000 neurons x 1024 synapses x 8 bits, 128 per core):
    # 1024 * 40 output axons > 4096, so d1 is cut to 4096 // 40 = 102 neurons per core.
    layers = [spec("in", "input", (1, 1, 1), (1, 1, 1)), spec("d1", "dense", (1, 1, 1), (1024, 1, 1)),
              spec("d2", "dense", (1024, 1, 1), (5000, 1, 1))]
    m = map_network(layers)
    assert m.placements["d2"].n_cores == 40
    d1 = m.placements["d1"]
    assert np.diff(d1.bounds).tolist() == [102] * 10 + [4]
    assert d1.output_axons.tolist() == [102 * 40] * 10 + [4 * 40]


def test_network_too_large_for_a_chip_is_reported():
    layers = [spec("in", "input", (1, 1, 1), (1, 1, 1)), spec("d", "dense", (1, 1, 1), (140 * 1024, 1, 1))]
    with pytest.raises(ChipCapacityError) as e:
        map_network(layers)
    assert e.value.chips_needed == 2 and e.value.cores_needed == 140
    assert "2 chips" in str(e.value) and "140 cores" in str(e.value)
    m = map_network(layers, allow_multichip=True)
    s = m.summary()
    assert s["chips"] == 2 and not s["fits_one_chip"] and s["cores_used"] == 140
    # core 128 is the first core of chip 1, whose mesh sits to the right of chip 0
    assert s["cores"][128]["chip"] == 1 and s["cores"][128]["tile"] == [8, 0]
    assert s["cores"][127]["tile"] == [7, 3]


def test_sanity_full_chip_capacity():
    """Published chip capacity: 128 cores x 1,024 = 131,072 compartments ("130,000 neurons") and,
    at 1-bit weights, 128 x 128 KB x 8 = 134,217,728 synapses ("130 million synapses")."""
    layers = [spec("in", "input", (1024, 1, 1), (1024, 1, 1)), spec("d", "dense", (1024, 1, 1), (131072, 1, 1))]
    m = map_network(layers, weight_bits=1)
    s = m.summary()
    assert s["cores_used"] == 128 and s["fits_one_chip"]
    assert s["utilisation"]["compartments"] == 1.0 and s["utilisation"]["syn_memory"] == 1.0
    assert s["layers"][1]["synapses"] == 134_217_728
    with pytest.raises(ChipCapacityError) as e:
        map_network(layers, weight_bits=2)
    assert e.value.chips_needed == 2


def test_kheradpisheh_network_from_the_real_layers():
    from spikeflow.nodes.snn import Network

    net = Network.kheradpisheh((2, 34, 34))
    d = net.describe()
    layers = [spec("input", "input", (2, 34, 34), (2, 34, 34))] + [LayerSpec.from_describe(x) for x in d]
    with pytest.raises(ChipCapacityError) as e:
        map_network(layers, weight_bits=8)  # conv2 alone: 18.7 M synapses x 8 bits > 128 Mbit
    assert e.value.chips_needed == 2
    m = map_network(layers, weight_bits=2)
    s = m.summary()
    assert s["fits_one_chip"]
    by = {x["name"]: x for x in s["layers"]}
    assert by["conv1"]["cores"] == 34                      # 34,680 compartments / 1,024
    assert by["conv2"]["synapses"] == 100 * 30 * sum(
        len([k for k in range(5) if 0 <= y - 2 + k < 17]) * len([k for k in range(5) if 0 <= x - 2 + k < 17])
        for y in range(17) for x in range(17))
    for c in s["cores"]:
        assert c["compartments"] <= 1024 and c["syn_mem_bits"] <= 1048576
        assert c["input_axons"] <= 4096 and c["output_axons"] <= 4096


@pytest.mark.parametrize("bad, key", [
    ({"type": "conv"}, "layer.name"),
    ({"name": "a", "type": "lstm", "in_shape": (1, 2, 2), "out_shape": (1, 2, 2)}, "layer.type"),
    ({"name": "a", "type": "conv", "in_shape": (1, 2), "out_shape": (1, 2, 2)}, "layer.in_shape"),
    ({"name": "a", "type": "conv", "in_shape": (1, 4, 4), "out_shape": (1, 4, 4), "kernel": (3, 3)}, "layer.out_shape"),
    ({"name": "a", "type": "pool", "in_shape": (2, 4, 4), "out_shape": (3, 2, 2), "kernel": (2, 2), "stride": 2},
     "layer.out_shape"),
    ({"name": "a", "type": "conv", "in_shape": (1, 4, 4), "out_shape": (1, 4, 4), "stride": 0}, "layer.stride"),
    ({"name": "a", "type": "conv", "in_shape": (1, 4, 4), "out_shape": (1, 4, 4), "weight_bits": 12},
     "layer.weight_bits"),
])
def test_bad_describe_names_the_key(bad, key):
    with pytest.raises(GraphError) as e:
        LayerSpec.from_describe(bad)
    assert e.value.key == key


def test_bad_chains_and_impossible_neurons():
    a = spec("in", "input", (1, 4, 4), (1, 4, 4))
    with pytest.raises(GraphError, match="layers\\[1\\].in_shape"):
        map_network([a, spec("c", "conv", (2, 4, 4), (1, 4, 4))])
    with pytest.raises(GraphError, match="duplicate"):
        map_network([a, spec("in", "conv", (1, 4, 4), (1, 4, 4))])
    with pytest.raises(GraphError, match="weight_bits"):
        map_network([a], weight_bits=10)
    # one neuron with 8,192 presynaptic sources cannot have its input axons on one core
    with pytest.raises(GraphError, match="input axons"):
        map_network([spec("in", "input", (2, 64, 64), (2, 64, 64)), spec("d", "dense", (2, 64, 64), (4, 1, 1))],
                    weight_bits=1)
    with pytest.raises(GraphError, match="synaptic memory"):
        map_network([spec("in", "input", (1, 400, 400), (1, 400, 400)),
                     spec("d", "dense", (1, 400, 400), (4, 1, 1))], weight_bits=9)


GEOMETRIES = [  # (in_c, in_h, in_w, out_c, kh, kw, stride, pad, pool)
    (1, 5, 5, 2, 3, 3, 1, 0, 0), (2, 6, 7, 3, 3, 2, 1, 1, 0), (3, 8, 8, 3, 2, 2, 2, 0, 1),
    (2, 9, 6, 4, 5, 3, 2, 2, 0), (4, 7, 7, 4, 3, 3, 3, 1, 1),
]


def geometry(in_c, in_h, in_w, out_c, kh, kw, stride, pad, pool):
    out_h = (in_h + 2 * pad - kh) // stride + 1
    out_w = (in_w + 2 * pad - kw) // stride + 1
    return np.array([in_c, in_h, in_w, out_c if not pool else in_c, out_h, out_w, kh, kw, stride, pad, pool], np.int64)


def random_bounds(rng, n):
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, int(rng.integers(0, 6))), replace=False))
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


@pytest.mark.parametrize("gi", range(len(GEOMETRIES)))
@pytest.mark.parametrize("seed", range(3))
def test_axon_count_kernels_match_naive(gi, seed):
    g = geometry(*GEOMETRIES[gi])
    rng = np.random.default_rng(seed)
    n_out = int(g[3] * g[4] * g[5])
    n_in = int(g[0] * g[1] * g[2])
    dst = random_bounds(rng, n_out)
    src = random_bounds(rng, n_in)
    assert K.input_axon_counts(g, dst).tolist() == naive.input_axon_counts(g, dst).tolist()
    assert K.output_axon_counts(g, src, dst).tolist() == naive.output_axon_counts(g, src, dst).tolist()
