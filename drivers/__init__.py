"""Drivers: bytes <-> event arrays. Format readers and writers, replay, the DVS simulator.

No ZeroMQ here; see ``spikeflow.service`` for everything that runs.
"""
