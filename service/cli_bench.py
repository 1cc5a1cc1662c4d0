"""`spikeflow bench` (being written)."""

from spikeflow.service.errors import SpikeflowError


def add_arguments(parser):
    parser.add_argument("args", nargs="*")


def run(args):
    raise SpikeflowError("'spikeflow bench' is not built yet")
