"""Evaluation reports: JSON for scripts, a short markdown summary for people, the confusion
matrix as PNG (matplotlib, the optional ``plot`` extra; skipped with a note when missing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# Published anchors the summary puts our numbers next to.
ANCHORS = {
    "dvs_gesture_truenorth": ("DVS128 Gesture, IBM TrueNorth (Amir et al. 2017)", "94.6 % at 105 ms"),
    "dvs_gesture_loihi": ("DVS128 Gesture, Loihi (Massa et al. 2020)", "89.64 %"),
    "dvs_gesture_stdp": ("DVS128 Gesture, unsupervised STDP (Iyer, Chua, Basu 2021)", "76.13 %"),
}


def confusion_png(confusion: list[list[int]], names: list[str], path: Path, title: str = "") -> Path | None:
    """Row-normalised confusion matrix as PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_summary(result: dict[str, Any], title: str) -> str:
    lat = result["latency_ms"]
    thr = result["throughput"]
    lines = [f"# {title}", "",
             f"- samples: {result['meta']['n_samples']}",
             f"- accuracy (per sample, scores summed over its decisions): **{100 * result['accuracy']:.1f} %**",
             f"- accuracy of confident decisions (each sliding-window decision): {100 * result['decision_accuracy']:.1f} %",
             f"- latency, gesture onset → first correct confident decision: p50 {_ms(lat['onset_to_first_correct_p50_ms'])}, "
             f"p99 {_ms(lat['onset_to_first_correct_p99_ms'])} ({lat['samples_with_correct_decision']} samples)",
             f"- throughput: {thr['events_per_s'] / 1e6:.3f} M events/s, {thr['real_time_factor']:.1f}× real time (one core, in-process)",
             "", "| class | accuracy |", "|---|---|"]
    lines += [f"| {k} | {100 * v:.0f} % |" for k, v in result["per_class_accuracy"].items()]
    return "\n".join(lines) + "\n"


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.0f} ms"


def write_report(result: dict[str, Any], out_dir: str | Path, title: str = "spikeflow evaluation") -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``confusion.png`` (when matplotlib is present) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(result, indent=1, default=_jsonable))
    paths["markdown"].write_text(markdown_summary(result, title))
    png = confusion_png(result["confusion"], result["class_names"], out / "confusion.png", title)
    if png is not None:
        paths["confusion"] = png
    return paths


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
