from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import prunekit.data as data
from prunekit.data import (
    ArraySet,
    DataNotFoundError,
    DeviceLoader,
    batch_crop,
    data_root,
    load_arrays,
    load_box_probe,
    locate,
    make_box_probe,
    save_box_probe,
)
from prunekit.errors import UserError
from tests.conftest import tiny_arrays


def test_data_root_explicit_then_env_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("PRUNEKIT_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "prunekit" / "data"


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion-mnist"])
def test_missing_data_says_where_and_how(tmp_path, name):
    assert locate(name, tmp_path) is None
    with pytest.raises(DataNotFoundError) as err:
        load_arrays(name, "train", tmp_path, download=False)
    assert str(tmp_path) in str(err.value) and "PRUNEKIT_DATA" in str(err.value)


def test_unknown_data_set_and_split():
    with pytest.raises(KeyError, match="cifar10"):
        load_arrays("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_arrays("cifar10", "val")


def _write_tree(root: Path, per_class: int = 2) -> dict:
    """A tiny CIFAR-10-layout tree of PNGs (lossless), each image a constant colour -> expected pixels."""
    expected = {}
    for split in ("train", "test"):
        for c, cls in enumerate(data.CIFAR10_CLASSES):
            (root / "cifar10-jpeg" / split / cls).mkdir(parents=True)
            for i in range(per_class):
                value = (c * 20 + i * 7 + (split == "test")) % 256
                Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(
                    root / "cifar10-jpeg" / split / cls / f"{i:04d}.png")
                expected[(split, c, i)] = value
    return expected


def test_unpacked_copy_decodes_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    expected = _write_tree(tmp_path)
    ds = load_arrays("cifar10", "train", tmp_path)
    assert ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert int(ds.images[3, 1, 5, 5]) == expected[("train", 1, 1)]
    assert list((tmp_path / "cache" / "arrays").glob("*.npz"))

    def fail(*a, **k):
        raise AssertionError("decoded again instead of read from the cache")

    monkeypatch.setattr(data.sets, "_decode_jpeg_copy", fail)
    again = load_arrays("cifar10", "train", tmp_path)
    assert torch.equal(again.images, ds.images)


def test_a_damaged_image_in_the_jpeg_copy_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    _write_tree(tmp_path)
    (tmp_path / "cifar10-jpeg" / "train" / "cat" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match=r"cifar10-jpeg: train/cat/0001.png cannot be decoded as an image"):
        load_arrays("cifar10", "train", tmp_path)
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing half-decoded cached


@pytest.mark.data
def test_cifar10_jpeg_copy_loads_whole(cifar_data_root, monkeypatch):
    train = load_arrays("cifar10", "train", cifar_data_root)
    test = load_arrays("cifar10", "test", cifar_data_root)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes == data.CIFAR10_CLASSES
    monkeypatch.setattr(data.sets, "_decode_jpeg_copy",
                        lambda *a: pytest.fail("decoded again, not read from the cache"))
    again = load_arrays("cifar10", "test", cifar_data_root)
    assert torch.equal(again.labels, test.labels)


def test_grey_images_become_three_channel_32x32(monkeypatch, tmp_path):
    class FakeMNIST:
        def __init__(self, root, train, download):
            self.data = torch.full((4, 28, 28), 200, dtype=torch.uint8)
            self.targets = [0, 1, 2, 3]
            self.classes = [str(i) for i in range(10)]

    import torchvision

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    ds = load_arrays("mnist", "train", tmp_path)
    assert ds.images.shape == (4, 3, 32, 32)
    assert int(ds.images[0, 2, 1, 1]) == 0 and int(ds.images[0, 2, 2, 2]) == 200  # 2-pixel zero border


def test_batch_crop_equals_slicing():
    g = torch.Generator().manual_seed(0)
    padded = torch.randint(0, 255, (6, 3, 40, 40), generator=g, dtype=torch.uint8)
    dy, dx = torch.tensor([0, 8, 3, 5, 1, 7]), torch.tensor([8, 0, 4, 2, 6, 1])
    out = batch_crop(padded, dy, dx, 32)
    for b in range(6):
        assert torch.equal(out[b], padded[b, :, dy[b]:dy[b] + 32, dx[b]:dx[b] + 32])


def test_device_loader_flips_are_true_mirrors_of_about_half():
    ds = tiny_arrays(32)
    flips = 0
    # labels = image index, so that every output can be compared with its source image
    loader = DeviceLoader(ArraySet("t", ds.images, torch.arange(32), ds.classes, ds.mean, ds.std), 8,
                          train=True, crop_padding=0, flip=True, seed=1)
    seen = []
    for x, y in loader:
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        src = ds.normalize(ds.images[y])
        same = (x - src).abs().flatten(1).amax(1) < 1e-6
        mirrored = (x - src.flip(-1)).abs().flatten(1).amax(1) < 1e-6
        assert (same | mirrored).all()
        flips += int((mirrored & ~same).sum())
        seen += y.tolist()
    assert sorted(seen) == list(range(32))  # one epoch visits each image once
    assert 4 <= flips <= 28  # about half, not none or all


def test_device_loader_crops_come_from_the_reflect_padded_image():
    ds = tiny_arrays(16)
    labelled = ArraySet("t", ds.images, torch.arange(16), ds.classes, ds.mean, ds.std)
    loader = DeviceLoader(labelled, 4, train=True, crop_padding=4, flip=False, seed=3)
    padded = F.pad(ds.images.float(), (4, 4, 4, 4), mode="reflect")
    for x, y in loader:
        for xi, yi in zip(x, y):
            raw = (xi * torch.tensor(ds.std).view(3, 1, 1) + torch.tensor(ds.mean).view(3, 1, 1)) * 255
            windows = padded[yi].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 9, 9, 32, 32)
            err = (windows - raw[:, None, None]).abs().amax(dim=(0, 3, 4))
            assert err.min() < 1e-3


def test_device_loader_eval_is_in_order_and_complete():
    ds = tiny_arrays(50)
    loader = DeviceLoader(ds, 16, train=False)
    assert len(loader) == 4
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(ys), ds.labels)
    assert torch.allclose(torch.cat(xs), ds.normalize(ds.images))


def test_device_loader_is_reproducible_by_seed():
    ds = tiny_arrays(32)
    a = [x for x, _ in DeviceLoader(ds, 8, train=True, seed=5)]
    b = [x for x, _ in DeviceLoader(ds, 8, train=True, seed=5)]
    c = [x for x, _ in DeviceLoader(ds, 8, train=True, seed=6)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def _flat_colour_source(n=20):
    """Image k is the constant colour 10 * k + 5: any pixel tells which image it came from."""
    images = torch.stack([torch.full((3, 32, 32), 10 * k + 5, dtype=torch.uint8) for k in range(n)])
    return ArraySet("flat", images, torch.arange(n) % 10, [str(i) for i in range(10)], (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("background", ["texture", "noise"])
def test_box_probe_boxes_are_exact(background):
    source = _flat_colour_source()
    probe = make_box_probe(source, 12, canvas=64, scale=(0.5, 1.5), background=background, seed=2)
    assert probe.images.shape == (12, 3, 64, 64) and len(probe.boxes) == 12
    masks = probe.masks()
    for img, box, mask, label in zip(probe.images, probe.boxes, masks, probe.labels):
        x0, y0, x1, y1 = box[0].long().tolist()
        assert x1 - x0 == y1 - y0 and 16 <= x1 - x0 <= 48 and 0 <= x0 and x1 <= 64 and y1 <= 64
        inside = img[:, y0:y1, x0:x1]
        value = int(inside[0, 0, 0])
        assert (inside == value).all()  # the pasted object fills the box exactly
        assert (value - 5) % 10 == 0 and source.labels[(value - 5) // 10] == label
        assert mask.sum() == (x1 - x0) * (y1 - y0)
        outside = img[:, ~mask]
        if background == "texture":  # another flat image: one colour, not the object's
            assert (outside == outside[0, 0]).all() and int(outside[0, 0]) != value


def test_box_probe_rejects_bad_settings():
    with pytest.raises(ValueError, match="background"):
        make_box_probe(_flat_colour_source(), 2, background="sky")
    with pytest.raises(ValueError, match="scale"):
        make_box_probe(_flat_colour_source(), 2, canvas=64, scale=(1.0, 3.0))


def test_box_probe_file_format_round_trip(tmp_path):
    probe = make_box_probe(_flat_colour_source(), 5, canvas=64, seed=0)
    save_box_probe(probe, tmp_path / "probe")
    back = load_box_probe(tmp_path / "probe")
    assert torch.equal(back.images, probe.images)
    assert all(torch.equal(a, b) for a, b in zip(back.boxes, probe.boxes))
    assert torch.equal(back.labels, probe.labels)
    resized = load_box_probe(tmp_path / "probe", size=32)
    assert resized.images.shape == (5, 3, 32, 32)
    assert torch.allclose(resized.boxes[0], probe.boxes[0] / 2)


def test_box_probe_file_errors_name_the_problem(tmp_path):
    with pytest.raises(DataNotFoundError, match="boxes.csv"):
        load_box_probe(tmp_path)
    (tmp_path / "boxes.csv").write_text("file,x0,y0\na.png,1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_box_probe(tmp_path)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1\na.png,1,2,50,30\n")
    with pytest.raises(ValueError, match="outside its 40x40 image"):
        load_box_probe(tmp_path)
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1\na.png,5,2,3,30\n")
    with pytest.raises(ValueError, match="line 2"):
        load_box_probe(tmp_path)
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1\nb.png,1,2,3,30\n")
    with pytest.raises(ValueError, match="cannot read image 'b.png'"):
        load_box_probe(tmp_path)
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1\n../a.png,1,2,3,30\n")
    with pytest.raises(ValueError, match="outside"):
        load_box_probe(tmp_path)


@pytest.mark.parametrize("rows, words", [
    ("a.png,nan,2,30,30", "line 2: box corners must be finite numbers, got"),
    ("a.png,1,2,inf,30", "line 2: box corners must be finite numbers, got"),
    ("a.png,1,2", "line 2: box corners must be finite numbers, got"),  # a short row
    ("a.png,1,2,30,30,cat", "line 2: label must be a class number (0, 1, ...) or empty, got 'cat'"),
    ("a.png,1,2,30,30,1.5", "line 2: label must be a class number (0, 1, ...) or empty, got '1.5'"),
    ("a.png,1,2,30,30,-4", "line 2: label must be a class number (0, 1, ...) or empty, got '-4'"),
    ("a.png,1,2,30,30,3\na.png,5,5,9,9,4", "line 3: 'a.png' has label 4, and label 3 on an earlier line"),
    (",1,2,30,30", "line 2: no file name"),
])
def test_box_file_rows_that_would_give_wrong_boxes_are_refused(tmp_path, rows, words):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1,label\n" + rows + "\n")
    with pytest.raises(UserError) as err:
        load_box_probe(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'boxes.csv'}") and words in str(err.value), str(err.value)


def test_a_box_file_that_is_not_text_and_a_bad_size_are_refused(tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_bytes(b"file,x0,y0,x1,y1\n\xff\xfe,1,2,3,4\n")
    with pytest.raises(UserError, match=r"boxes.csv: not a text CSV file"):
        load_box_probe(tmp_path)
    (tmp_path / "boxes.csv").write_text("file,x0,y0,x1,y1\na.png,1,2,30,30\n")
    with pytest.raises(UserError, match=r"size must be a whole number of pixels >= 8, got 0"):
        load_box_probe(tmp_path, size=0)


def test_image_folder_tree_loads_with_standard_transforms(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((80, 60, 3), 100, np.uint8)).save(tmp_path / cls / f"{i}.jpg")
    ds = data.folder_dataset(tmp_path, train=False, image_size=48)
    x, y = ds[3]
    assert x.shape == (3, 48, 48) and y == 1 and ds.classes == ["cat", "dog"]
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.folder_dataset(tmp_path / "nope", train=True)
