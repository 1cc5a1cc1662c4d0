"""drivers/images.py: ETH-80 PNG loading, name parsing, leave-one-instance-out folds, MNIST from disk."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from spikeflow.drivers.images import (ImageDatasetError, leave_one_instance_out, load_eth80, load_mnist,
                                      parse_eth80_name, read_gray, read_idx)


def _png(path, value, size=(8, 8), mode="RGB"):
    arr = np.full((size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]), value, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path)


def _tiny_eth80(root, classes=("cup", "dog"), instances=(1, 2, 3), views=((0, 0), (22, 90), (35, 45))):
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in instances:
            for e, a in views:
                _png(root / c / f"{c}{i}-{e:03d}-{a:03d}.png", 40 * ci + 10 * i)
    return root


def test_parse_name():
    assert parse_eth80_name("x/cup7-022-270.png") == ("cup", 7, 22, 270)
    assert parse_eth80_name("dog10-090-315.png") == ("dog", 10, 90, 315)
    with pytest.raises(ImageDatasetError, match="cup-022-270.png"):
        parse_eth80_name("cup-022-270.png")
    with pytest.raises(ImageDatasetError, match=r"cup7_022_270\.png"):
        parse_eth80_name("/a/cup7_022_270.png")


def test_load_tiny_folder(tmp_path):
    root = _tiny_eth80(tmp_path / "eth")
    d = load_eth80(root)
    assert d.classes == ("cup", "dog")
    assert d.images.shape == (18, 8, 8) and d.images.dtype == np.float64
    # gray value of the RGB fill, scaled to [0, 1]
    first = d.names.index("cup2-022-090.png")
    assert d.labels[first] == 0 and d.groups[first] == "cup2" and d.instances[first] == 2
    assert tuple(d.views[first]) == (22, 90)
    np.testing.assert_allclose(d.images[first], 20 / 255, atol=1 / 255)
    dog3 = d.names.index("dog3-035-045.png")
    assert d.labels[dog3] == 1
    np.testing.assert_allclose(d.images[dog3], 70 / 255, atol=1 / 255)
    # filters and view subsets
    sub = load_eth80(root, classes=("dog",), instances=(1, 3), views_per_instance=2)
    assert sub.classes == ("dog",) and len(sub) == 4 and set(sub.groups) == {"dog1", "dog3"}


def test_errors_name_the_file(tmp_path):
    root = _tiny_eth80(tmp_path / "eth")
    with pytest.raises(ImageDatasetError, match="nothing"):
        load_eth80(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageDatasetError, match="no ETH-80 PNG"):
        load_eth80(tmp_path / "empty")
    _png(root / "dog" / "dog4-000-000.png", 5, size=(9, 8))
    with pytest.raises(ImageDatasetError, match=r"dog4-000-000\.png.*9x8"):
        load_eth80(root)
    (root / "dog" / "dog4-000-000.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageDatasetError, match=r"dog4-000-000\.png: cannot decode"):
        load_eth80(root)
    (root / "dog" / "dog4-000-000.png").unlink()
    _png(root / "cup" / "mug.png", 5)
    with pytest.raises(ImageDatasetError, match=r"mug\.png: name does not match"):
        load_eth80(root)


def test_read_gray_modes(tmp_path):
    _png(tmp_path / "g.png", 255, mode="L")
    np.testing.assert_array_equal(read_gray(tmp_path / "g.png"), np.ones((8, 8)))
    with pytest.raises(ImageDatasetError, match="missing.png: image file not found"):
        read_gray(tmp_path / "missing.png")


def test_folds_never_share_an_instance(tmp_path):
    d = load_eth80(_tiny_eth80(tmp_path / "eth", instances=(1, 2, 5)))
    folds = leave_one_instance_out(d)
    assert len(folds) == 3
    tested = []
    for tr, te in folds:
        assert set(d.groups[tr]).isdisjoint(d.groups[te])
        assert len(set(tr) | set(te)) == len(d) and not set(tr) & set(te)
        # one held-out instance per class
        assert sorted(d.labels[te][::3]) == [0, 1] and len(set(d.groups[te])) == 2
        tested += list(d.groups[te])
    assert set(tested) == set(d.groups)
    assert len(leave_one_instance_out(d, folds=2)) == 2
    with pytest.raises(ImageDatasetError, match=">= 2 instances"):
        leave_one_instance_out(d.subset(np.nonzero(d.instances == 1)[0]))


def test_real_eth80(shared):
    root = shared("images/eth80-cup-dog")
    d = load_eth80(root)
    assert len(d) == 820 and d.images.shape[1:] == (64, 64) and d.classes == ("cup", "dog")
    assert 0.0 <= d.images.min() and d.images.max() <= 1.0
    assert np.bincount(d.labels).tolist() == [410, 410] and len(set(d.groups)) == 20
    folds = leave_one_instance_out(d)
    assert len(folds) == 10
    for k, (tr, te) in enumerate(folds):
        assert set(d.groups[te]) == {f"cup{k + 1}", f"dog{k + 1}"}
        assert len(te) == 82 and set(d.groups[tr]).isdisjoint(d.groups[te])


# -- MNIST from disk ------------------------------------------------------------------------------

def _idx(arr: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


def test_mnist_idx_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    raw = tmp_path / "idx" / "MNIST" / "raw"  # torchvision's layout
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs, 0x08)))
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(labels, 0x08))
    x, y = load_mnist(tmp_path / "idx", "train")
    np.testing.assert_allclose(x, imgs / 255.0)
    assert y.tolist() == [3, 1, 4, 1, 5]
    assert load_mnist(tmp_path / "idx", "train", limit=2)[0].shape == (2, 28, 28)
    with pytest.raises(ImageDatasetError, match="no test images"):
        load_mnist(tmp_path / "idx", "test")
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "test_images.npy", imgs[:3])
    np.save(npy / "test_labels.npy", labels[:3])
    x, y = load_mnist(npy, "test")
    assert x.shape == (3, 28, 28) and y.tolist() == [3, 1, 4]
    np.save(npy / "test_labels.npy", labels[:2])
    with pytest.raises(ImageDatasetError, match="do not match"):
        load_mnist(npy, "test")


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x89PNG....")
    with pytest.raises(ImageDatasetError, match="bad-idx: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx"
    short.write_bytes(_idx(np.zeros((4, 2), np.uint8), 0x08)[:-3])
    with pytest.raises(ImageDatasetError, match="short-idx: IDX body has 5 bytes"):
        read_idx(short)
