"""The repository root installs as the ``spikeflow`` package, with every sub-package listed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXCLUDED = {"tests", "bench", "docs", ".ci", "build"}


def _declared_packages() -> set[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(cfg["tool"]["setuptools"]["packages"])


def test_every_subpackage_is_declared():
    found = {"spikeflow"}
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if not rel.parts or rel.parts[0] in EXCLUDED or rel.parts[0].startswith("."):
            continue
        found.add(".".join(("spikeflow", *rel.parts)))
    assert found == _declared_packages(), "pyproject [tool.setuptools] packages is out of date"


def test_subpackages_import_as_spikeflow():
    import spikeflow
    import spikeflow.drivers
    import spikeflow.nodes
    import spikeflow.recordings
    import spikeflow.service

    for mod in (spikeflow.drivers, spikeflow.nodes, spikeflow.service, spikeflow.recordings):
        assert mod.__name__.startswith("spikeflow.")
    assert spikeflow.__version__


def test_console_command_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "spikeflow", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for cmd in ("run", "serve", "info", "convert", "simulate", "status", "stop", "top"):
        assert cmd in out.stdout
