"""`spikeflow nodes` (being written)."""

from spikeflow.service.errors import SpikeflowError


def add_arguments(parser):
    parser.add_argument("args", nargs="*")


def run(args):
    raise SpikeflowError("'spikeflow nodes' is not built yet")
