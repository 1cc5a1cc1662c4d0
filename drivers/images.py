"""Static image datasets for the frame path of the spiking core: ETH-80 views and MNIST.

ETH-80 (Leibe & Schiele 2003) as SpykeTorch ships it: PNG files named
``<object><instance>-<elevation>-<azimuth>.png`` (e.g. ``cup7-022-270.png``) anywhere under a
folder. :func:`load_eth80` returns grayscale float images in [0, 1] with the class (object name)
and the instance parsed from the name. Kheradpisheh et al. 2018 evaluate it with
leave-one-object-out cross-validation; :func:`leave_one_instance_out` builds those folds so that
views of one instance are never on both sides of a split.

MNIST from disk (no download is possible here): :func:`load_mnist` reads a directory holding
either the four IDX files (``train-images-idx3-ubyte`` etc., optionally ``.gz``) or
``{train,test}_{images,labels}.npy``.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeflow.service.errors import SpikeflowError

ETH80_NAME = re.compile(r"^(?P<object>[A-Za-z]+)(?P<instance>\d+)-(?P<elevation>\d{3})-(?P<azimuth>\d{3})\.png$")


class ImageDatasetError(SpikeflowError, ValueError):
    """An image file or folder is missing, misnamed or unreadable; the message names the path."""


@dataclass
class ImageSet:
    """Images (N, H, W) float64 in [0, 1]; ``labels`` index ``classes``; ``groups`` name the
    object instance (e.g. "cup7"), the unit that must never straddle a train/test split."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: np.ndarray
    instances: np.ndarray
    names: tuple[str, ...]
    views: np.ndarray  # (N, 2) elevation, azimuth in degrees

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageSet":
        index = np.asarray(index)
        return ImageSet(self.images[index], self.labels[index], self.classes, self.groups[index],
                        self.instances[index], tuple(np.asarray(self.names, dtype=object)[index]), self.views[index])


def read_gray(path) -> np.ndarray:
    """One image file -> (H, W) float64 gray in [0, 1] (RGB averaged with Rec. 601 weights)."""
    path = Path(path)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # Pillow comes with matplotlib (the plot/test extras)
        raise ImageDatasetError(f"{path}: reading images needs Pillow (pip install pillow)") from None
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im.convert("L") if mode not in ("L", "I;16", "I", "F") else im)
    except FileNotFoundError:
        raise ImageDatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageDatasetError(f"{path}: cannot decode image ({e})") from None
    if arr.dtype.kind in "ui":
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max if mode != "I" else max(arr.max(), 1))
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def parse_eth80_name(path) -> tuple[str, int, int, int]:
    """``cup7-022-270.png`` -> ("cup", 7, 22, 270); ImageDatasetError naming the file otherwise."""
    name = Path(path).name
    m = ETH80_NAME.match(name)
    if m is None:
        raise ImageDatasetError(f"{path}: name does not match <object><instance>-<elevation>-<azimuth>.png "
                                f"(e.g. cup7-022-270.png)")
    return m["object"].lower(), int(m["instance"]), int(m["elevation"]), int(m["azimuth"])


def load_eth80(root, classes: tuple[str, ...] | None = None, instances: tuple[int, ...] | None = None,
               views_per_instance: int | None = None) -> ImageSet:
    """Every ``*.png`` under ``root`` (recursively), sorted by (class, instance, elevation, azimuth).

    ``classes``/``instances`` filter; ``views_per_instance`` keeps that many views per instance,
    evenly spaced over the sorted views (for small, fast subsets). All images must share one size.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImageDatasetError(f"{root}: ETH-80 image folder not found")
    entries = []
    for path in sorted(root.rglob("*.png")):
        obj, inst, elev, azim = parse_eth80_name(path)
        if classes is not None and obj not in classes:
            continue
        if instances is not None and inst not in instances:
            continue
        entries.append((obj, inst, elev, azim, path))
    if not entries:
        raise ImageDatasetError(f"{root}: no ETH-80 PNG files found"
                                + (f" for classes {classes}" if classes else "")
                                + (f" and instances {instances}" if instances else ""))
    entries.sort(key=lambda e: e[:4])
    if views_per_instance is not None:
        keep = []
        by_inst: dict[tuple[str, int], list] = {}
        for e in entries:
            by_inst.setdefault((e[0], e[1]), []).append(e)
        for key in sorted(by_inst):
            views = by_inst[key]
            idx = np.unique(np.linspace(0, len(views) - 1, min(views_per_instance, len(views))).round().astype(int))
            keep.extend(views[i] for i in idx)
        entries = keep
    class_names = tuple(sorted({e[0] for e in entries})) if classes is None else tuple(c for c in classes
                                                                                         if any(e[0] == c for e in entries))
    images = []
    shape = None
    for obj, inst, elev, azim, path in entries:
        img = read_gray(path)
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise ImageDatasetError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, expected "
                                    f"{shape[1]}x{shape[0]} like the first image")
        images.append(img)
    labels = np.array([class_names.index(e[0]) for e in entries], dtype=np.int64)
    return ImageSet(np.stack(images), labels, class_names, np.array([f"{e[0]}{e[1]}" for e in entries]),
                    np.array([e[1] for e in entries], dtype=np.int64), tuple(e[4].name for e in entries),
                    np.array([(e[2], e[3]) for e in entries], dtype=np.int64))


def leave_one_instance_out(data: ImageSet, folds: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kheradpisheh 2018's protocol: fold k tests on the k-th instance of *each* class and trains
    on all other instances. Returns (train_index, test_index) pairs; ``folds`` keeps the first
    n folds. Instances are matched by rank within each class, so numbering gaps are fine."""
    per_class = [sorted(set(data.instances[data.labels == c].tolist())) for c in range(len(data.classes))]
    n = min(len(p) for p in per_class)
    if n < 2:
        raise ImageDatasetError(f"leave-one-instance-out needs >= 2 instances per class, got {[len(p) for p in per_class]}")
    out = []
    for k in range(n if folds is None else min(folds, n)):
        held = {f"{data.classes[c]}{per_class[c][k]}" for c in range(len(data.classes))}
        test = np.isin(data.groups, list(held))
        out.append((np.nonzero(~test)[0], np.nonzero(test)[0]))
    return out


# -- MNIST from disk ---------------------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped) -> numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImageDatasetError(f"{path}: IDX file not found") from None
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ImageDatasetError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ImageDatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != need:
        raise ImageDatasetError(f"{path}: IDX body has {len(body)} bytes, header {shape} needs {need}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


_IDX_NAMES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"): "train-labels-idx1-ubyte",
              ("test", "images"): "t10k-images-idx3-ubyte", ("test", "labels"): "t10k-labels-idx1-ubyte"}


def load_mnist(root, split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST already on disk -> (images (N, 28, 28) float64 in [0, 1], labels (N,) int64).

    ``root`` holds ``train-images-idx3-ubyte[.gz]``/``t10k-...`` (also found under ``raw/`` or
    ``MNIST/raw/``, torchvision's layout) or ``{split}_images.npy`` + ``{split}_labels.npy``.
    ``limit`` keeps the first N samples."""
    if split not in ("train", "test"):
        raise ImageDatasetError(f"split must be train or test, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise ImageDatasetError(f"{root}: MNIST directory not found")
    found = {}
    for kind in ("images", "labels"):
        npy = root / f"{split}_{kind}.npy"
        if npy.exists():
            found[kind] = np.load(npy, allow_pickle=False)
            continue
        base = _IDX_NAMES[(split, kind)]
        for d in (root, root / "raw", root / "MNIST" / "raw"):
            for name in (base, base + ".gz", base.replace("-idx", ".idx")):
                if (d / name).exists():
                    found[kind] = read_idx(d / name)
                    break
            if kind in found:
                break
        if kind not in found:
            raise ImageDatasetError(f"{root}: no {split} {kind}: expected {base}[.gz] or {split}_{kind}.npy")
    images, labels = found["images"], found["labels"]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ImageDatasetError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    images = images.astype(np.float64)
    if images.size and images.max() > 1.0:
        images /= 255.0
    return images, labels.astype(np.int64)
