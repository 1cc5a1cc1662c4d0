"""The project's exception hierarchy: every user-facing error names its file, key or offset."""

from __future__ import annotations


class SpikeflowError(Exception):
    """Base of every error spikeflow raises on purpose."""


class RecordingError(SpikeflowError, ValueError):
    """A recording file is unreadable: names the file, byte offset and what was expected."""

    def __init__(self, path, message: str, offset: int | None = None):
        self.path = str(path)
        self.offset = offset
        where = f"{self.path}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"{where}: {message}")


class GraphError(SpikeflowError, ValueError):
    """A graph file or graph structure is invalid: names the key path (e.g. ``nodes.conv1.params.k``)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class ParamError(GraphError):
    """A node parameter is unknown, ill-typed or out of range."""


class ProtocolError(SpikeflowError, ValueError):
    """A wire message violates protocol v1: names the frame/field at fault."""


class ModelError(SpikeflowError, ValueError):
    """A learned-state or model bundle file is unusable."""
