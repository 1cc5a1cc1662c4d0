"""Cost tables: the bundled figures equal their published sources; bad tables fail naming the key."""

from __future__ import annotations

import pytest

from spikeflow.nodes.loihi_costs import DEFAULT_TABLE, OPS, load_profile, load_table
from spikeflow.service.errors import ModelError

DAVIES_TABLE2 = {  # op: (energy pJ, time ns), Davies et al. 2018 IEEE Micro Table 2
    "syn_spike": (23.6, 3.5), "syn_update": (120.0, 6.1), "neuron_active": (81.0, 8.4),
    "neuron_inactive": (52.0, 5.3), "within_tile": (1.7, 2.1), "hop_ew": (3.0, 4.1), "hop_ns": (4.0, 6.5),
}
SANAFE = {  # SLAM-Lab/SANA-FE arch/loihi.yaml @ c55bfa87
    "syn_spike": (35.5, 4.0), "syn_spike_conv": (24.0, 3.1), "neuron_inactive": (51.2, 6.0),
    "neuron_active": (72.8, 9.7), "spike_out": (69.3, 30.0), "axon_out": (111.0, 5.1), "axon_in": (0.0, 20.0),
    "hop_ew": (3.0, 4.1), "hop_ns": (4.2, 6.5),
}


def test_davies_profile_matches_table2():
    p = load_profile("davies2018")
    for op, (e, t) in DAVIES_TABLE2.items():
        assert (p.energy_pj(op), p.time_ns(op)) == (e, t), op
        assert "Davies 2018 Table 2" in p.ops[op].source
    assert p.barrier_ns(1) == 113.0 and p.barrier_ns(32) == 465.0
    assert p.barrier_ns(64) == 465.0
    assert p.barrier_ns(16) == pytest.approx(113.0 + 15 / 31 * (465.0 - 113.0))
    assert p.static_mw == 0.0 and "user parameter" in p.static_source
    assert sorted(p.unpriced()) == ["axon_in", "axon_out", "spike_out", "syn_spike_conv"]


def test_sanafe_profile_is_calibrated_and_inherits_the_rest():
    p = load_profile("sanafe_loihi")
    for op, (e, t) in SANAFE.items():
        assert (p.energy_pj(op), p.time_ns(op)) == (e, t), op
        assert "SANA-FE" in p.ops[op].source and "c55bfa87" in p.ops[op].source
    # not in SANA-FE's file: taken from davies2018 with Davies as the source
    assert p.inherited == ("davies2018",)
    assert p.ops["within_tile"].source.startswith("Davies 2018")
    assert p.ops["syn_update"].energy_pj == 120.0
    assert p.syn_energy_pj("conv") == 24.0 and p.syn_energy_pj("pool") == 24.0
    assert p.syn_energy_pj("dense") == 35.5
    assert p.unpriced() == []


def test_every_bundled_figure_has_a_source():
    for name, prof in load_table().items():
        assert prof.citation and prof.description, name
        for op, cost in prof.ops.items():
            assert op in OPS and len(cost.source) > 20, (name, op)
        d = prof.as_dict()
        assert set(d["ops"]) == set(prof.ops)


def test_user_table_and_static_power(tmp_path):
    t = tmp_path / "mine.toml"
    t.write_text("""schema = 1
[profiles.board]
description = "measured"
[profiles.board.ops.syn_spike]
energy_pj = 10.0
time_ns = 1.0
source = "my board, 2026-11-23"
[profiles.board.static]
static_mw = 25.0
source = "my board idle power"
""")
    p = load_profile("board", t)
    assert p.energy_pj("syn_spike") == 10.0 and p.static_mw == 25.0
    assert p.energy_pj("hop_ew") == 0.0 and "hop_ew" in p.unpriced()
    q = p.with_static_mw(3.5, "cli")
    assert q.static_mw == 3.5 and q.static_source == "cli" and p.static_mw == 25.0
    with pytest.raises(ModelError, match="static_mw"):
        p.with_static_mw(-1.0)


BASE = """schema = 1
[profiles.x.static]
static_mw = 0.0
source = "s"
"""


@pytest.mark.parametrize("extra, key", [
    ("[profiles.x.ops.syn_spike]\nenergy_pj = 1.0\n", "profiles.x.ops.syn_spike.source"),
    ("[profiles.x.ops.syn_spike]\nenergy_pj = 1.0\nsource = ''\n", "profiles.x.ops.syn_spike.source"),
    ("[profiles.x.ops.syn_spike]\nenergy_pj = -1.0\nsource = 's'\n", "profiles.x.ops.syn_spike.energy_pj"),
    ("[profiles.x.ops.syn_spike]\nenergy_pj = 'a'\nsource = 's'\n", "profiles.x.ops.syn_spike.energy_pj"),
    ("[profiles.x.ops.syn_spike]\nenergy_pj = 1.0\nsource = 's'\nwatts = 2\n", "profiles.x.ops.syn_spike.watts"),
    ("[profiles.x.ops.teleport]\nenergy_pj = 1.0\nsource = 's'\n", "profiles.x.ops.teleport"),
    ("[profiles.x.ops.syn_spike]\nsource = 's'\n", "profiles.x.ops.syn_spike"),
    ("[profiles.x]\ninherit = 'nope'\n", "inherit"),
    ("[profiles.x]\ninherit = 'x'\n", "inheritance cycle"),
])
def test_bad_tables_name_the_key(tmp_path, extra, key):
    t = tmp_path / "bad.toml"
    t.write_text(BASE + extra)
    with pytest.raises(ModelError) as e:
        load_table(t)
    assert key in str(e.value) and str(t) in str(e.value)


def test_missing_static_and_bad_files(tmp_path):
    t = tmp_path / "nostatic.toml"
    t.write_text("schema = 1\n[profiles.y.ops.syn_spike]\nenergy_pj = 1.0\nsource = 's'\n")
    with pytest.raises(ModelError, match="profiles.y.static"):
        load_table(t)
    (tmp_path / "junk.toml").write_text("schema = = 1")
    with pytest.raises(ModelError, match="not a valid TOML"):
        load_table(tmp_path / "junk.toml")
    (tmp_path / "v2.toml").write_text("schema = 2")
    with pytest.raises(ModelError, match="schema"):
        load_table(tmp_path / "v2.toml")
    with pytest.raises(ModelError, match="no such cost table"):
        load_table(tmp_path / "absent.toml")
    with pytest.raises(ModelError, match="unknown profile"):
        load_profile("loihi9", DEFAULT_TABLE)
