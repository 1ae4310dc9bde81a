"""Datasets: the real torchvision / ImageFolder loaders on tiny files written here."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from trainables.image_data import (  # noqa: E402
    DataError,
    DatasetSpec,
    dataset_as_arrays,
    load_dataset,
    resolve_dataset,
)


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """An IDX file as in the MNIST distribution: magic (ubyte, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(root, name="MNIST", n_train=40, n_test=10, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_mnist_idx_files_load_through_torchvision(tmp_path, name, compress):
    arrays = write_mnist(tmp_path, name=name, compress=compress)
    spec = resolve_dataset(name.lower(), tmp_path)
    assert (spec.name, spec.in_channels, spec.image_size, spec.num_classes) == (
        name,
        1,
        (28, 28),
        10,
    )
    splits = load_dataset(spec)
    test_images, test_labels = arrays["t10k"]
    # The official test files are the test split, pixel for pixel.
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(test_images))
    assert splits.test.labels.tolist() == test_labels.tolist()
    # Train files become train + val, disjoint and complete (val is 10%, stratified).
    assert len(splits.train) + len(splits.val) == 40 and len(splits.val) == 4
    train_images = torch.from_numpy(arrays["train"][0])
    seen = torch.cat([splits.train.images[:, 0], splits.val.images[:, 0]])
    assert sorted(map(bytes, seen.numpy())) == sorted(map(bytes, train_images.numpy()))
    x, y = splits.train.__getitems__([0, 1, 2])
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_missing_mnist_names_the_directory(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_dataset("MNIST", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message


def test_missing_cifar10_names_the_directory(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        resolve_dataset("CIFAR10", tmp_path)


def test_unknown_name_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="unknown dataset"):
        resolve_dataset("imagenet-9000", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nope") + "/", tmp_path)


def write_folder(root, classes=("cat", "dog", "owl"), per_class=8, size=(12, 10), mode="RGB"):
    rng = np.random.default_rng(1)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            pixels = rng.integers(0, 50, size=shape, dtype=np.uint8) + 60 * label
            Image.fromarray(pixels.astype(np.uint8), mode=mode).save(folder / f"{i}.png")


def test_imagefolder_of_pngs(tmp_path):
    write_folder(tmp_path / "pets")
    spec = resolve_dataset(str(tmp_path / "pets"))
    assert spec.kind == "imagefolder"
    assert spec.class_names == ("cat", "dog", "owl") and spec.num_classes == 3
    assert spec.in_channels == 3 and spec.image_size == (12, 12)
    splits = load_dataset(spec)
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == 24 and min(sizes) > 0
    # Stratified: every class in every split; pixel means still tell the classes apart.
    for split in (splits.train, splits.val, splits.test):
        assert sorted(set(split.labels.tolist())) == [0, 1, 2]
        means = split.images.float().mean(dim=(1, 2, 3))
        for label in range(3):
            assert (means[split.labels == label] > 60 * label).all()


def test_imagefolder_with_train_and_test_subtrees_and_grayscale(tmp_path):
    write_folder(tmp_path / "d" / "train", classes=("a", "b"), per_class=10, mode="L")
    write_folder(tmp_path / "d" / "test", classes=("a", "b"), per_class=3, mode="L")
    spec = resolve_dataset(str(tmp_path / "d"), image_size=16)
    assert spec.in_channels == 1 and spec.image_size == (16, 16)
    splits = load_dataset(spec)
    assert len(splits.test) == 6 and len(splits.train) + len(splits.val) == 20
    assert splits.train.images.shape[1:] == (1, 16, 16)


def test_imagefolder_with_train_and_val_subtrees_keeps_its_classes_and_carves_test(tmp_path):
    # The ImageNet/Kaggle layout: train/ and val/, no test/. Its classes are a and b (never
    # "train" and "val"); val/ is the validation split, and the test rows come out of train/.
    write_folder(tmp_path / "d" / "train", classes=("a", "b"), per_class=10, mode="L")
    write_folder(tmp_path / "d" / "val", classes=("a", "b"), per_class=4, mode="L")
    spec = resolve_dataset(str(tmp_path / "d"))
    assert spec.class_names == ("a", "b")
    splits = load_dataset(spec)
    assert len(splits.val) == 8 and len(splits.train) + len(splits.test) == 20
    assert sorted(set(splits.test.labels.tolist())) == [0, 1] and len(splits.train) > len(splits.test)
    # Its own val/ folder is the validation split: a val fraction would be ignored.
    with pytest.raises(DataError, match="its own val/ folder"):
        resolve_dataset(str(tmp_path / "d"), val_fraction=0.3)
    # train/ and test/: the val rows come out of train/, and a val fraction sets their share.
    write_folder(tmp_path / "e" / "train", classes=("a", "b"), per_class=10, mode="L")
    write_folder(tmp_path / "e" / "test", classes=("a", "b"), per_class=3, mode="L")
    assert len(load_dataset(resolve_dataset(str(tmp_path / "e"), val_fraction=0.5)).val) == 10


def test_imagefolder_skips_hidden_folders_when_it_loads(tmp_path):
    write_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=6)
    (tmp_path / "pets" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "pets" / ".cache").mkdir()
    write_folder(tmp_path / "pets" / ".cache", classes=("x",), per_class=2)
    # A notebook's checkpoint copies inside a class folder, and a hidden file: no samples.
    write_folder(tmp_path / "pets" / "cat" / ".ipynb_checkpoints", classes=("copies",),
                 per_class=3)
    (tmp_path / "pets" / "dog" / "0.png").rename(tmp_path / "pets" / "dog" / ".0.png")
    write_folder(tmp_path / "pets" / "dog" / "more", classes=("nested",), per_class=1)
    spec = resolve_dataset(str(tmp_path / "pets"))
    assert spec.class_names == ("cat", "dog")
    splits = load_dataset(spec)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12


@pytest.mark.parametrize("split_seed", [177, 194])
def test_train_fraction_keeps_a_row_of_every_class(split_seed):
    # 0.5 % of digits-transfer's training rows is 5 rows for 5 classes; the interleaved
    # stratification left a class out on these seeds ([1, 1, 1, 0, 2] rows per class).
    spec = resolve_dataset("digits-transfer", train_fraction=0.005, split_seed=split_seed)
    labels = load_dataset(spec).train.labels
    assert len(labels) == 5 and sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]


def test_an_imagefolder_fingerprint_follows_its_images_not_their_copy_times(tmp_path):
    # --resume compares it: images added, removed or moved to another class change it; a
    # copy of the tree (new modification times) and a notebook's hidden copies do not.
    import shutil
    import time

    from trainables.image_data import folder_fingerprint

    write_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=4)
    first = folder_fingerprint(tmp_path / "pets")
    time.sleep(0.05)
    shutil.copytree(tmp_path / "pets", tmp_path / "copy")  # new times, same images
    assert folder_fingerprint(tmp_path / "copy") == first
    write_folder(tmp_path / "pets" / "cat" / ".ipynb_checkpoints", classes=("x",), per_class=2)
    assert folder_fingerprint(tmp_path / "pets") == first
    (tmp_path / "copy" / "cat" / "0.png").rename(tmp_path / "copy" / "dog" / "moved.png")
    assert folder_fingerprint(tmp_path / "copy") != first
    (tmp_path / "pets" / "dog" / "1.png").unlink()
    assert folder_fingerprint(tmp_path / "pets") not in (first, folder_fingerprint(tmp_path / "copy"))
    # Class folders linked in from elsewhere are read by the loader, so they count.
    (tmp_path / "linked").mkdir()
    for name in ("cat", "dog"):
        (tmp_path / "linked" / name).symlink_to(tmp_path / "pets" / name)
    assert folder_fingerprint(tmp_path / "linked") == folder_fingerprint(tmp_path / "pets")


def test_imagefolder_of_16_bit_grey_pngs_keeps_their_levels(tmp_path):
    rng = np.random.default_rng(0)
    for label, (low, high) in {"dark": (1000, 9000), "light": (40000, 60000)}.items():
        folder = tmp_path / "x" / label
        folder.mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(low, high, size=(8, 8)).astype(np.uint16)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    spec = resolve_dataset(str(tmp_path / "x"))
    assert spec.in_channels == 1
    splits = load_dataset(spec)
    images = torch.cat([s.images for s in (splits.train, splits.val, splits.test)]).float()
    labels = torch.cat([s.labels for s in (splits.train, splits.val, splits.test)])
    dark, light = images[labels == 0].mean(), images[labels == 1].mean()
    assert 3 < dark < 36 and 155 < light < 234  # 16-bit levels / 257, not clipped at 255


def test_imagefolder_needs_classes(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="one sub-directory per class"):
        resolve_dataset(str(tmp_path / "flat"))


def test_digits_transfer_splits_are_fixed_disjoint_and_held_out():
    spec = resolve_dataset("digits-transfer")
    assert isinstance(spec, DatasetSpec) and spec.num_classes == 5
    a, b = load_dataset(spec), load_dataset(spec)
    assert torch.equal(a.test.images, b.test.images)  # the split does not depend on a trial

    def rows(split):
        return {
            bytes(img.numpy()) + bytes([lab])
            for img, lab in zip(split.images, split.labels, strict=True)
        }

    train, val, test = rows(a.train), rows(a.val), rows(a.test)
    assert len(test) >= 150 and len(val) >= 150 and len(train) >= 450
    # All 5-9 digits are used once; (image, label) rows are unique in digits, so no overlaps.
    assert len(a.train) + len(a.val) + len(a.test) == 896
    assert not train & test and not val & test and not train & val
    assert sorted(set(a.test.labels.tolist())) == [0, 1, 2, 3, 4]


def test_arrays_for_the_svm_baseline():
    spec = resolve_dataset("digits-transfer")
    x_train, y_train, x_test, y_test = dataset_as_arrays(spec, max_train=100)
    assert x_train.shape == (100, 64) and x_test.shape[1] == 64
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert len(y_test) == len(load_dataset(spec).test)
    assert len(set(y_train.tolist())) == 5
    full = dataset_as_arrays(spec, max_train=None, include_val=True)
    splits = load_dataset(spec)
    assert len(full[0]) == len(splits.train) + len(splits.val)


def test_the_svm_baseline_runs_on_threads_and_starts_no_process():
    """The baseline's GridSearchCV uses threads: no loky worker process is started (each would
    import scikit-learn and tear it down at exit). In a child process, so that no executor a
    test before it started can hide one."""
    import json
    import subprocess
    import sys

    from tests.helpers import REPO

    script = """
import json, os
from pipelines.finetune import svm_baseline
from tests.helpers import child_pids
from trainables.image_data import resolve_dataset

result = svm_baseline(resolve_dataset("digits-transfer"))
print(json.dumps({"children": len(child_pids(os.getpid())),
                  "test": result["svm_test_accuracy"], "cv": result["svm_cv_accuracy"],
                  "kernel": result["svm_best_config"]["kernel"]}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["children"] == 0
    # A tuned SVM on these pixels is a real baseline, not a degenerate one.
    assert seen["test"] > 0.9 and seen["cv"] > 0.9 and seen["kernel"] in ("linear", "rbf")


def test_train_limit_keeps_classes_balanced():
    spec = resolve_dataset("digits-transfer", train_limit=50)
    labels = load_dataset(spec).train.labels
    assert len(labels) == 50
    assert np.bincount(labels.numpy()).min() >= 9


def test_few_labels_regime_keeps_val_and_test_and_subsamples_train():
    """--train-fraction 0.1 --val-fraction 0.4: a tenth of the training rows, every class
    present, a validation split twice the default, and the same held-out test split."""
    default = load_dataset(resolve_dataset("digits-transfer"))
    spec = resolve_dataset("digits-transfer", train_fraction=0.1, val_fraction=0.4)
    few = load_dataset(spec)
    assert torch.equal(few.test.images, default.test.images)  # test rows never move
    assert len(few.val) >= 2 * len(default.val) - 2
    full_train = len(load_dataset(resolve_dataset("digits-transfer", val_fraction=0.4)).train)
    assert len(few.train) == round(0.1 * full_train)
    assert sorted(set(few.train.labels.tolist())) == [0, 1, 2, 3, 4]
    assert np.bincount(few.train.labels.numpy()).min() >= len(few.train) // 5 - 1
    # The training rows kept are rows of the full training split, not of val or test.
    rows = {bytes(img.numpy()) for img in few.train.images}
    assert not rows & {bytes(img.numpy()) for img in few.val.images}
    assert spec.to_dict()["train_fraction"] == 0.1  # recorded with the experiment


@pytest.mark.parametrize("kwargs, words", [
    ({"train_fraction": 0.0}, "train fraction must be in (0, 1]"),
    ({"train_fraction": 1.5}, "train fraction must be in (0, 1]"),
    ({"val_fraction": 1.0}, "val fraction must be in (0, 1)"),
    ({"val_fraction": 0.8}, "use a val fraction below 0.75"),
])
def test_bad_fractions_are_one_line_errors(kwargs, words):
    with pytest.raises(DataError) as err:
        resolve_dataset("digits-transfer", **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)
