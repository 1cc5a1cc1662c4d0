"""`spikeflow nodes`: every registered node type with its ports and parameters (help, default, range)."""

from __future__ import annotations

import json


def add_arguments(parser):
    parser.add_argument("types", nargs="*", help="only these node types")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _range(spec: dict) -> str:
    if spec["choices"] is not None:
        return "one of " + ", ".join(map(str, spec["choices"]))
    lo, hi = spec["min"], spec["max"]
    if lo is None and hi is None:
        return ""
    return f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"


def describe(types: list[str] | None = None) -> dict:
    from spikeflow.nodes.base import param_specs
    from spikeflow.service import registry

    everything = registry.all_types()
    names = types or list(everything)
    out = {}
    for name in names:
        cls = registry.get(name, key=name)
        out[name] = {"class": f"{cls.__module__}.{cls.__qualname__}",
                     "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
                     "inputs": dict(cls.inputs), "outputs": dict(cls.outputs),
                     "params": [{**s, "default": s["default"], "range": _range(s)} for s in param_specs(cls.Params)]}
    return out


def run(args) -> int:
    info = describe(args.types)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    for name, d in info.items():
        ins = ", ".join(f"{p}:{k}" for p, k in d["inputs"].items()) or "-"
        outs = ", ".join(f"{p}:{k}" for p, k in d["outputs"].items()) or "-"
        print(f"{name}  ({d['class']})\n    {d['doc']}\n    inputs {ins}   outputs {outs}")
        for p in d["params"]:
            rng = f"  {p['range']}" if p["range"] else ""
            print(f"    {p['name']:<16} {p['type']:<22} default {p['default']!r}{rng}\n        {p['help']}")
        print()
    return 0
