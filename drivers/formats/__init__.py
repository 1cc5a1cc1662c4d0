"""One module per recording format. Each registers a :class:`~spikeflow.drivers.recording.Format`."""
