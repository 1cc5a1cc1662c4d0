"""Cost tables of the Loihi emulator: per-operation energy/time figures, each with its source.

The figures live in one data file (``loihi_costs.toml`` beside this module); users may pass
their own file with the same layout. Loading validates every figure: a number, non-negative,
with a non-empty ``source`` string. Errors are :class:`ModelError` naming the file and key.

Profiles are the Lava-style "implementation by tag": ``davies2018`` (pre-silicon minimum
figures) and ``sanafe_loihi`` (board-calibrated, falls back to ``davies2018`` via ``inherit``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from spikeflow.service.errors import ModelError

DEFAULT_TABLE = Path(__file__).with_name("loihi_costs.toml")

OPS = ("syn_spike", "syn_spike_conv", "syn_update", "neuron_active", "neuron_inactive", "spike_out",
       "axon_out", "axon_in", "within_tile", "hop_ew", "hop_ns", "barrier")
"""Operation names a table may price (see the table's header for their meaning)."""

_OP_FIELDS = {"energy_pj", "time_ns", "time_max_ns", "source"}


@dataclass(frozen=True)
class OpCost:
    """Energy (pJ) and time (ns) of one operation, and where the figures come from."""

    energy_pj: float
    time_ns: float
    source: str
    time_max_ns: float | None = None  # barrier only: time at 32 tiles


@dataclass(frozen=True)
class CostProfile:
    """One named cost table: the operations it prices and its static power."""

    name: str
    description: str
    citation: str
    ops: dict[str, OpCost]
    static_mw: float
    static_source: str
    path: str = ""
    inherited: tuple[str, ...] = field(default=())

    def energy_pj(self, op: str) -> float:
        """Energy of ``op`` (0 when this profile does not price it)."""
        c = self.ops.get(op)
        return c.energy_pj if c else 0.0

    def time_ns(self, op: str) -> float:
        c = self.ops.get(op)
        return c.time_ns if c else 0.0

    def syn_energy_pj(self, layer_type: str) -> float:
        """Synaptic-op energy for a layer type: the conv figure for conv/pool when the profile has one."""
        if layer_type in ("conv", "pool") and "syn_spike_conv" in self.ops:
            return self.ops["syn_spike_conv"].energy_pj
        return self.energy_pj("syn_spike")

    def syn_time_ns(self, layer_type: str) -> float:
        if layer_type in ("conv", "pool") and "syn_spike_conv" in self.ops:
            return self.ops["syn_spike_conv"].time_ns
        return self.time_ns("syn_spike")

    def barrier_ns(self, n_tiles: int) -> float:
        """Barrier time for ``n_tiles`` tiles in use: linear between the 1-tile and 32-tile figures."""
        c = self.ops.get("barrier")
        if c is None:
            return 0.0
        if c.time_max_ns is None or n_tiles <= 1:
            return c.time_ns
        frac = min(n_tiles - 1, 31) / 31.0
        return c.time_ns + frac * (c.time_max_ns - c.time_ns)

    def unpriced(self) -> list[str]:
        """Operations this profile does not charge (reported, never silently zero)."""
        return [op for op in OPS if op not in self.ops]

    def with_static_mw(self, static_mw: float, source: str = "user parameter") -> "CostProfile":
        """A copy with the static power replaced (a user-supplied figure)."""
        if not (static_mw >= 0 and math.isfinite(static_mw)):
            raise ModelError(f"static_mw: must be a finite number >= 0, got {static_mw!r}")
        return CostProfile(self.name, self.description, self.citation, self.ops, float(static_mw),
                           source, self.path, self.inherited)

    def as_dict(self) -> dict:
        """JSON-able view (for reports): every figure with its source."""
        return {"name": self.name, "description": self.description, "citation": self.citation,
                "path": self.path, "inherits": list(self.inherited),
                "static": {"static_mw": self.static_mw, "source": self.static_source},
                "ops": {k: {"energy_pj": v.energy_pj, "time_ns": v.time_ns, "source": v.source,
                            **({"time_max_ns": v.time_max_ns} if v.time_max_ns is not None else {})}
                        for k, v in self.ops.items()},
                "unpriced": self.unpriced()}


def _number(value, key: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError(f"{path}: {key}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ModelError(f"{path}: {key}: must be a finite number >= 0, got {value!r}")
    return v


def _source(value, key: str, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"{path}: {key}: every figure needs a non-empty source string")
    return value.strip()


def _parse_op(raw, key: str, path: str) -> OpCost:
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: {key}: expected a table, got {raw!r}")
    unknown = sorted(set(raw) - _OP_FIELDS)
    if unknown:
        raise ModelError(f"{path}: {key}.{unknown[0]}: unknown field; known: {sorted(_OP_FIELDS)}")
    if "energy_pj" not in raw and "time_ns" not in raw:
        raise ModelError(f"{path}: {key}: needs energy_pj and/or time_ns")
    source = _source(raw.get("source"), f"{key}.source", path)
    energy = _number(raw.get("energy_pj", 0.0), f"{key}.energy_pj", path)
    time = _number(raw.get("time_ns", 0.0), f"{key}.time_ns", path)
    tmax = raw.get("time_max_ns")
    tmax = None if tmax is None else _number(tmax, f"{key}.time_max_ns", path)
    return OpCost(energy, time, source, tmax)


def _parse_profile(name: str, raw, path: str) -> dict:
    key = f"profiles.{name}"
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: {key}: expected a table")
    unknown = sorted(set(raw) - {"description", "citation", "inherit", "ops", "static"})
    if unknown:
        raise ModelError(f"{path}: {key}.{unknown[0]}: unknown field")
    ops_raw = raw.get("ops", {})
    if not isinstance(ops_raw, dict):
        raise ModelError(f"{path}: {key}.ops: expected a table")
    ops = {}
    for op, op_raw in ops_raw.items():
        if op not in OPS:
            raise ModelError(f"{path}: {key}.ops.{op}: unknown operation; known: {list(OPS)}")
        ops[op] = _parse_op(op_raw, f"{key}.ops.{op}", path)
    static = raw.get("static")
    if static is not None:
        if not isinstance(static, dict) or "static_mw" not in static:
            raise ModelError(f"{path}: {key}.static: expected a table with static_mw and source")
        static = (_number(static["static_mw"], f"{key}.static.static_mw", path),
                  _source(static.get("source"), f"{key}.static.source", path))
    inherit = raw.get("inherit")
    if inherit is not None and not isinstance(inherit, str):
        raise ModelError(f"{path}: {key}.inherit: expected a profile name")
    return {"description": str(raw.get("description", "")), "citation": str(raw.get("citation", "")),
            "inherit": inherit, "ops": ops, "static": static}


def load_table(path: str | Path | None = None) -> dict[str, CostProfile]:
    """Every profile of a cost table file (the bundled one by default), inheritance resolved."""
    p = Path(path) if path is not None else DEFAULT_TABLE
    spath = str(p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{spath}: no such cost table file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{spath}: not a valid TOML cost table: {e}") from None
    if raw.get("schema") != 1:
        raise ModelError(f"{spath}: schema: expected 1, got {raw.get('schema')!r}")
    profiles_raw = raw.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise ModelError(f"{spath}: profiles: expected at least one [profiles.NAME] table")
    parsed = {name: _parse_profile(name, pr, spath) for name, pr in profiles_raw.items()}
    return {name: _resolve(name, parsed, spath) for name in parsed}


def _resolve(name: str, parsed: dict, path: str) -> CostProfile:
    chain, cur = [], name
    while cur is not None:
        if cur in chain:
            raise ModelError(f"{path}: profiles.{name}.inherit: inheritance cycle {' -> '.join(chain + [cur])}")
        if cur not in parsed:
            raise ModelError(f"{path}: profiles.{chain[-1]}.inherit: unknown profile {cur!r}")
        chain.append(cur)
        cur = parsed[cur]["inherit"]
    ops: dict[str, OpCost] = {}
    static = None
    for ancestor in reversed(chain):
        ops.update(parsed[ancestor]["ops"])
        if parsed[ancestor]["static"] is not None:
            static = parsed[ancestor]["static"]
    if static is None:
        raise ModelError(f"{path}: profiles.{name}.static: missing; give static_mw (0 if unknown) with a source")
    me = parsed[name]
    return CostProfile(name, me["description"], me["citation"], ops, static[0], static[1], path,
                       tuple(chain[1:]))


def load_profile(name: str = "davies2018", path: str | Path | None = None) -> CostProfile:
    """One profile by name from ``path`` (or the bundled table)."""
    table = load_table(path)
    if name not in table:
        raise ModelError(f"{path or DEFAULT_TABLE}: profiles.{name}: unknown profile; known: {sorted(table)}")
    return table[name]
