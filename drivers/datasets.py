"""Labeled event datasets: the sources ``spikeflow train`` / ``eval`` / ``bench`` read.

Every dataset yields :class:`Sample` (events in our dtype, sensor size, integer label, a sample
id, and a *group* — subject, object instance or recording — so train/test splits never mix the
same subject or sample). Sources:

- ``dir:PATH``          a directory of recordings with a ``labels.csv`` (file,label[,split][,group])
- ``bundled``           the simulated gestures shipped in ``spikeflow.recordings``
- ``slayer-gesture:PATH`` the 10 real DVS128 Gesture clips SLAYER ships as ``<class>.bs2``
- ``slayer-nmnist:PATH`` N-MNIST samples as SLAYER ``.bs2`` with ``train1K.txt`` / ``test100.txt``
- ``dvs128:PATH``       the DVS128 Gesture original layout: ``user*_*.aedat`` (AEDAT 3.1) with
                        ``user*_*_labels.csv``; users 1–23 train, 24–29 test (Amir et al. 2017)
- ``tonic:NAME:PATH``   a tonic dataset (DVSGesture, NMNIST) already on disk under PATH; tonic's
                        own loading code is used, and a missing copy is a clear error (no download
                        unless ``download=True``)

``open_dataset(spec, split)`` parses these strings.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from spikeflow.service.errors import SpikeflowError
from spikeflow.service.events import SensorSize, as_events

from .gesture_labels import GESTURE_CLASSES, cut_samples, read_labels
from .recording import read_recording

SPLITS = ("train", "test", "all")

DVS128_GESTURE_CLASSES = tuple(GESTURE_CLASSES[k] for k in sorted(GESTURE_CLASSES))
"""DvsGesture ``gesture_mapping.csv`` order; class id = index + 1."""

DVS128_TRAIN_USERS = range(1, 24)
DVS128_TEST_USERS = range(24, 30)


class DatasetError(SpikeflowError, ValueError):
    """A dataset is missing, incomplete or mislabeled; the message names the path."""


@dataclass
class Sample:
    events: np.ndarray
    sensor_size: SensorSize
    label: int
    id: str
    group: str = ""


class Dataset:
    """Base: ``classes`` (names, index = label − ``label_base``), iteration over samples, ``labels``."""

    classes: tuple[str, ...] = ()
    label_base: int = 0

    def __iter__(self) -> Iterator[Sample]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        raise NotImplementedError


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    return split


class LabeledDirectory(Dataset):
    """Recordings in ``root`` listed in a CSV with columns ``file,label`` and optional
    ``split`` (train/test), ``group`` (subject or instance), ``name`` (class name)."""

    def __init__(self, root, split: str = "all", labels_csv: str = "labels.csv", sensor_size=None):
        self.root = Path(root)
        self.split = _check_split(split)
        self.sensor_size = sensor_size
        csv_path = self.root / labels_csv
        if not csv_path.exists():
            raise DatasetError(f"{csv_path}: labels file not found (expected columns file,label[,split][,group])")
        rows = []
        names: dict[int, str] = {}
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            cols = set(reader.fieldnames or ())
            if not {"file", "label"} <= cols:
                raise DatasetError(f"{csv_path}: header must name 'file' and 'label' columns, got {sorted(cols)}")
            for line, row in enumerate(reader, start=2):
                try:
                    label = int(row["label"])
                except (TypeError, ValueError):
                    raise DatasetError(f"{csv_path}:{line}: label {row['label']!r} is not an integer") from None
                if row.get("name"):
                    names[label] = row["name"]
                if self.split != "all" and row.get("split", self.split) != self.split:
                    continue
                rows.append((row["file"], label, row.get("group") or row["file"]))
        self._rows = rows
        self.csv_path = csv_path
        self.classes = tuple(names[k] for k in sorted(names)) if names else ()
        self.label_base = min(names) if names else 0

    def __len__(self):
        return len(self._rows)

    def labels(self):
        return np.array([r[1] for r in self._rows])

    def __iter__(self):
        for file, label, group in self._rows:
            path = self.root / file
            if not path.exists():
                raise DatasetError(f"{self.csv_path}: listed file {file!r} not found in {self.root}")
            opts = {"sensor_size": self.sensor_size} if self.sensor_size else {}
            events, info = read_recording(path, **opts)
            yield Sample(events, info.sensor_size, label, file, group)


def bundled_gestures(split: str = "all") -> LabeledDirectory:
    """The simulated DVS128-like gestures shipped with spikeflow (``recordings/gestures.csv``)."""
    from spikeflow import recordings

    return LabeledDirectory(recordings.HERE, split=split, labels_csv="gestures.csv")


class SlayerNmnist(Dataset):
    """N-MNIST as SLAYER ships it: ``<id>.bs2`` files and ``train1K.txt`` / ``test100.txt``
    (``#sample #class`` header, then ``id<TAB>class``). Each sample is its own group."""

    classes = tuple(str(d) for d in range(10))
    sensor_size = SensorSize(34, 34, 2)

    def __init__(self, root, split: str = "train"):
        self.root = Path(root)
        split = _check_split(split)
        lists = {"train": ["train1K.txt"], "test": ["test100.txt"], "all": ["train1K.txt", "test100.txt"]}[split]
        self._rows = []
        for name in lists:
            path = self.root / name
            if not path.exists():
                raise DatasetError(f"{path}: N-MNIST list file not found")
            for line_no, line in enumerate(path.read_text().splitlines(), start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split()
                if len(parts) != 2 or not all(p.isdigit() for p in parts):
                    raise DatasetError(f"{path}:{line_no}: expected 'id<TAB>class', got {line!r}")
                self._rows.append((parts[0], int(parts[1])))

    def __len__(self):
        return len(self._rows)

    def labels(self):
        return np.array([r[1] for r in self._rows])

    def __iter__(self):
        for sid, label in self._rows:
            events, info = read_recording(self.root / f"{sid}.bs2", format="nmnist_bin",
                                          sensor_size=tuple(self.sensor_size))
            yield Sample(events, info.sensor_size, label, sid, sid)


class SlayerGesture(Dataset):
    """The DVS128 Gesture clips SLAYER ships as ``<class>.bs2`` (first 1.45 s of one gesture each;
    the class is the file number, inferred — see ../shared/recordings/MANIFEST.md). One subject
    and one sample per class: good for checking that classes separate, not for accuracy claims."""

    classes = DVS128_GESTURE_CLASSES
    label_base = 1
    sensor_size = SensorSize(128, 128, 2)

    def __init__(self, root, split: str = "all"):
        self.root = Path(root)
        _check_split(split)
        self._files = sorted((int(p.stem), p) for p in self.root.glob("*.bs2") if p.stem.isdigit())
        if not self._files:
            raise DatasetError(f"{self.root}: no <class>.bs2 gesture clips found")

    def __len__(self):
        return len(self._files)

    def labels(self):
        return np.array([c for c, _ in self._files])

    def __iter__(self):
        for c, p in self._files:
            events, info = read_recording(p, format="nmnist_bin", sensor_size=tuple(self.sensor_size))
            yield Sample(events, info.sensor_size, c, p.name, "slayer-subject")


_DVS128_NAME = re.compile(r"^user(\d+)_(.+)\.aedat$")


class Dvs128Gesture(Dataset):
    """The DVS128 Gesture original layout: ``userNN_<lighting>.aedat`` (AEDAT 3.1) beside
    ``userNN_<lighting>_labels.csv`` (class,startTime_usec,endTime_usec). Each labeled span is
    one sample ``[start, end)``; the group is the user, so splits never mix subjects."""

    classes = DVS128_GESTURE_CLASSES
    label_base = 1
    sensor_size = SensorSize(128, 128, 2)

    def __init__(self, root, split: str = "train"):
        self.root = Path(root)
        split = _check_split(split)
        users = {"train": DVS128_TRAIN_USERS, "test": DVS128_TEST_USERS, "all": range(1, 30)}[split]
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: DVS128 Gesture directory not found")
        self._files = []
        for path in sorted(self.root.glob("user*_*.aedat")):
            m = _DVS128_NAME.match(path.name)
            if m and int(m.group(1)) in users:
                labels = path.with_name(path.stem + "_labels.csv")
                if not labels.exists():
                    raise DatasetError(f"{labels}: labels file missing for {path.name}")
                self._files.append((path, read_labels(labels), int(m.group(1))))
        if not self._files:
            raise DatasetError(f"{self.root}: no user*_*.aedat recordings for the {split} split "
                               f"(users {users.start}-{users.stop - 1})")

    def __len__(self):
        return sum(len(lab.label) for _, lab, _ in self._files)

    def labels(self):
        return np.concatenate([lab.label for _, lab, _ in self._files]).astype(np.int64)

    def __iter__(self):
        for path, lab, user in self._files:
            for s in cut_samples(path, lab):
                yield Sample(s.events, s.sensor_size, s.label, f"{path.stem}#{s.start_us}", f"user{user:02d}")


class TonicDataset(Dataset):
    """A tonic dataset read by tonic's own loading code from a copy already on disk.

    ``root`` is tonic's ``save_to`` (the folder that contains ``DVSGesture/`` or ``NMNIST/``).
    Without ``download=True`` nothing is fetched: a missing copy raises DatasetError naming the
    folder tonic looks in.
    """

    KNOWN = {"DVSGesture": (DVS128_GESTURE_CLASSES, 0), "NMNIST": (tuple(str(d) for d in range(10)), 0)}

    def __init__(self, name: str, root, split: str = "train", download: bool = False):
        import tonic.datasets

        if name not in self.KNOWN:
            raise DatasetError(f"unknown tonic dataset {name!r}; supported: {sorted(self.KNOWN)}")
        split = _check_split(split)
        if split == "all":
            raise DatasetError("tonic datasets have a fixed train/test split; use 'train' or 'test'")
        self.name, self.root = name, Path(root)
        self.classes, self.label_base = self.KNOWN[name]
        cls = getattr(tonic.datasets, name)
        where = self.root / name
        if not download and not where.is_dir():
            raise DatasetError(f"{where}: no {name} copy on disk (tonic looks here for it); put the "
                               f"dataset there or pass download=True where the network allows")
        try:
            self._ds = cls(save_to=str(self.root), train=(split == "train"))
        except Exception as e:  # tonic tried to download an incomplete copy and failed
            raise DatasetError(f"{where}: {name} copy is incomplete and could not be downloaded: "
                               f"{type(e).__name__}: {e}") from None
        self.sensor_size = SensorSize(*cls.sensor_size)

    def __len__(self):
        return len(self._ds)

    def labels(self):
        return np.asarray(self._ds.targets)

    def __iter__(self):
        users = getattr(self._ds, "users", None)
        for i in range(len(self._ds)):
            events, target = self._ds[i]
            group = f"user{users[i]:02d}" if users else str(i)
            yield Sample(_sorted(as_events(events)), self.sensor_size, int(target), str(self._ds.data[i]), group)


def _sorted(ev: np.ndarray) -> np.ndarray:
    t = ev["t"]
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        return ev[np.argsort(t, kind="stable")]
    return ev


def open_dataset(spec: str, split: str = "train", **options) -> Dataset:
    """Parse a ``--data`` spec (see module docstring) into a dataset."""
    kind, _, rest = spec.partition(":")
    if kind == "bundled" and not rest:
        return bundled_gestures(split)
    if kind == "dir" and rest:
        return LabeledDirectory(rest, split=split, **options)
    if kind == "slayer-nmnist" and rest:
        return SlayerNmnist(rest, split=split)
    if kind == "slayer-gesture" and rest:
        return SlayerGesture(rest, split=split)
    if kind == "dvs128" and rest:
        return Dvs128Gesture(rest, split=split)
    if kind == "tonic" and rest:
        name, _, root = rest.partition(":")
        return TonicDataset(name, root or ".", split=split, **options)
    if Path(spec).is_dir():
        return LabeledDirectory(spec, split=split, **options)
    raise DatasetError(f"cannot understand data source {spec!r}; expected bundled, dir:PATH, "
                       f"slayer-nmnist:PATH, slayer-gesture:PATH, dvs128:PATH or tonic:NAME:PATH")


__all__ = ["Sample", "Dataset", "DatasetError", "LabeledDirectory", "bundled_gestures", "SlayerNmnist",
           "Dvs128Gesture", "SlayerGesture", "TonicDataset", "open_dataset", "DVS128_GESTURE_CLASSES"]
