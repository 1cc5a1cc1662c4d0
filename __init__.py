"""spikeflow: real-time event-camera processing.

The repository root is the ``spikeflow`` package: ``spikeflow.drivers`` (bytes <-> events),
``spikeflow.nodes`` (processing nodes and their numba kernels) and ``spikeflow.service``
(graph runtime, wire protocol, daemon, client, CLI).
"""

__version__ = "0.1.0"
