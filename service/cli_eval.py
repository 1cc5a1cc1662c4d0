"""``spikeflow eval MODEL.npz --data SOURCE``: accuracy, confusion matrix, decision latency."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("model", nargs="?", default=None, help="model bundle (default: the bundled gesture model)")
    p.add_argument("--data", default="bundled", help="data source, as for `spikeflow train` (default: bundled)")
    p.add_argument("--split", default="test", choices=("train", "test", "all"))
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="write report.json, report.md and confusion.png here")
    p.add_argument("--max-samples", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import json

    from spikeflow.drivers.datasets import open_dataset
    from spikeflow.service.cli_train import progress_bars
    from spikeflow.service.model import bundled_model_path
    from spikeflow.service.reports import markdown_summary, write_report
    from spikeflow.service.training import evaluate

    model = args.model or str(bundled_model_path())
    data = open_dataset(args.data, split=args.split)
    res = evaluate(model, data, max_samples=args.max_samples, progress=progress_bars(args.quiet)).to_dict()
    title = f"spikeflow eval {model} on {args.data} ({args.split})"
    if args.output:
        paths = write_report(res, args.output, title)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    print(json.dumps(res, indent=1) if args.json else markdown_summary(res, title))
    return 0
