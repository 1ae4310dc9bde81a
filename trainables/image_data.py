"""Image datasets as in-memory tensors with honest train / val / test splits.

``resolve_dataset`` is cheap: it checks that the files exist and returns a small picklable
``DatasetSpec``, so a CLI can reject a bad ``--dataset`` before Ray starts. ``load_dataset`` does
the reading, inside a trial. Every split is fixed by the spec (its own ``split_seed``, not a
trial's seed), so all trials of a study see the same train and val rows, and the test split is
held out from every trial: only the final evaluation of the chosen config reads it.

Supported names:

- ``digits-transfer`` (offline default): scikit-learn's 8x8 digits; the target task is digits
  5-9 (relabelled 0-4). The source task, digits 0-4, is what ``small_cnn`` is pretrained on
  (see ``trainables.image_models``), so fine-tuning really transfers across classes.
- ``MNIST``, ``FashionMNIST``, ``CIFAR10``: torchvision's on-disk layout under ``data_root``,
  never downloaded.
- a directory path: an ImageFolder tree (``root/<class>/<image>``), or one with ``train/``
  (and optionally ``val/``) and ``test/`` subtrees.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataError",
    "DatasetSpec",
    "ImageTensorDataset",
    "Splits",
    "collate_batch",
    "dataset_as_arrays",
    "load_dataset",
    "resolve_dataset",
    "DIGITS_SOURCE_CLASSES",
    "DIGITS_TARGET_CLASSES",
]

DIGITS_SOURCE_CLASSES = (0, 1, 2, 3, 4)
DIGITS_TARGET_CLASSES = (5, 6, 7, 8, 9)
DIGITS_DEFAULT_VAL = 0.2
FOLDER_DEFAULT_VAL = 0.15

_TORCHVISION = {
    "mnist": ("MNIST", 1, (28, 28), 10),
    "fashionmnist": ("FashionMNIST", 1, (28, 28), 10),
    "fashion-mnist": ("FashionMNIST", 1, (28, 28), 10),
    "cifar10": ("CIFAR10", 3, (32, 32), 10),
    "cifar-10": ("CIFAR10", 3, (32, 32), 10),
}
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_FILES = (
    *(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
)
# torchvision's ImageFolder extensions: the check here must count what the loader will read.
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# ImageFolder images larger than this are resized down to it; fine-tuning torchvision models
# past 224 px buys little and costs memory for an in-memory dataset.
_MAX_IMAGE_SIDE = 224


class DataError(ValueError):
    """Data or weights that are missing or unusable.

    The message is one line naming what is missing and where to put it, fit for a CLI to print
    before exiting with status 2.
    """


@dataclass(frozen=True)
class DatasetSpec:
    """What to load, without loading it (small and picklable, passed to every trial).

    Attributes
    ----------
    name : str
        Canonical name (``digits-transfer``, ``MNIST``, ``FashionMNIST``, ``CIFAR10``) or
        ``imagefolder``.
    kind : {"digits-transfer", "torchvision", "imagefolder"}
    root : str or None
        ``data_root`` for torchvision datasets, the tree for ImageFolder.
    num_classes, in_channels : int
    image_size : tuple of int
        (height, width) of every image after loading.
    class_names : tuple of str
    val_fraction, test_fraction : float
        Shares carved out of the data where the source has no such split of its own.
    split_seed : int
        Seed of the split permutation; part of the spec so every trial sees the same split.
    train_limit : int or None
        Keep at most this many training rows (stratified), for quick runs.
    train_fraction : float or None
        Keep this share of the training rows (stratified, at least one per class): the
        few-labels regime, where configs differ by more than a validation split can hide.
    """

    name: str
    kind: str
    root: str | None
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    class_names: tuple[str, ...] = field(default_factory=tuple)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    train_limit: int | None = None
    train_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    """The three splits of one dataset; ``test`` is for the final evaluation only."""

    train: ImageTensorDataset
    val: ImageTensorDataset
    test: ImageTensorDataset
    num_classes: int
    class_names: tuple[str, ...]


def collate_batch(batch):
    """Pass through a batch that ``ImageTensorDataset.__getitems__`` already stacked."""
    return batch


class ImageTensorDataset:
    """Images kept as uint8 ``(N, C, H, W)``; normalized per channel when fetched.

    Keeping uint8 costs a quarter of float32's memory (CIFAR-10 fits in 150 MB per trial), and
    ``__getitems__`` hands a DataLoader a whole stacked batch at once, which is many times faster
    than collating single images.

    Parameters
    ----------
    images : torch.Tensor of uint8, shape (N, C, H, W)
    labels : torch.Tensor of int64, shape (N,)
    mean, std : sequence of float, one per channel
        Normalization constants, computed on the training split.
    """

    def __init__(self, images, labels, mean, std):
        import torch

        self.images = images
        self.labels = labels
        channels = images.shape[1]
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, channels, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, channels, 1, 1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _normalize(self, images):
        return (images.float() / 255.0 - self.mean) / self.std

    def __getitem__(self, index):
        return self._normalize(self.images[index : index + 1])[0], self.labels[index]

    def __getitems__(self, indices):
        import torch

        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._normalize(self.images[idx]), self.labels[idx]

    def tensors(self):
        """All rows as ``(float images, labels)``."""
        return self._normalize(self.images), self.labels


# --- resolve: cheap checks, no loading ---------------------------------------------------------
def resolve_dataset(
    name_or_path: str,
    data_root: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    train_limit: int | None = None,
    split_seed: int = 0,
    train_fraction: float | None = None,
    val_fraction: float | None = None,
) -> DatasetSpec:
    """Check that a dataset is usable and describe it, without loading it.

    Parameters
    ----------
    name_or_path : str
        ``digits-transfer``, ``MNIST``, ``FashionMNIST``, ``CIFAR10`` (any case), or the path
        of an ImageFolder directory.
    data_root : path-like, optional
        Where torchvision datasets live (``<data_root>/MNIST/raw/...``). Defaults to ``./data``.
    image_size : int, optional
        Side to resize ImageFolder images to; defaults to the first image's size, capped at 224.
    train_limit : int, optional
        Keep at most this many training rows.
    split_seed : int
        Seed of the train/val(/test) permutation.
    train_fraction : float, optional
        Keep this share (0 < f <= 1) of the training rows, stratified.
    val_fraction : float, optional
        The validation share, in place of the dataset's default (0.2 of digits-transfer, 0.1 of
        a torchvision training set, 0.15 of an ImageFolder tree). With a test split carved from
        the same rows, the two together must leave training rows.

    Returns
    -------
    DatasetSpec

    Raises
    ------
    DataError
        One line naming the missing files and the directory they belong in.
    """
    if train_limit is not None and int(train_limit) < 1:
        raise DataError(f"train_limit must be a positive integer, got {train_limit!r}")
    if train_fraction is not None and not 0.0 < float(train_fraction) <= 1.0:
        raise DataError(f"train fraction must be in (0, 1], got {train_fraction!r}")
    if val_fraction is not None and not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val fraction must be in (0, 1), got {val_fraction!r}")
    spec = _resolve(name_or_path, data_root, image_size, train_limit, split_seed)
    changes: dict[str, Any] = {}
    if train_fraction is not None:
        changes["train_fraction"] = float(train_fraction)
    if val_fraction is not None:
        if _own_val_folder(spec):
            raise DataError(f"ImageFolder '{spec.root}' has its own val/ folder, which is the "
                            f"validation split: a val fraction ({val_fraction}) would not be "
                            "used; leave it out")
        if float(val_fraction) + spec.test_fraction >= 0.95:
            raise DataError(
                f"val fraction {val_fraction} and the test split's {spec.test_fraction} leave "
                f"under 5% of {spec.name} for training; use a val fraction below "
                f"{0.95 - spec.test_fraction:.2f}")
        changes["val_fraction"] = float(val_fraction)
    return replace(spec, **changes) if changes else spec


def _resolve(name_or_path, data_root, image_size, train_limit, split_seed) -> DatasetSpec:
    key = str(name_or_path).strip()
    lowered = key.lower()
    if lowered in ("digits-transfer", "digits_transfer", "digits"):
        return DatasetSpec(
            name="digits-transfer",
            kind="digits-transfer",
            root=None,
            num_classes=len(DIGITS_TARGET_CLASSES),
            in_channels=1,
            image_size=(8, 8),
            class_names=tuple(str(c) for c in DIGITS_TARGET_CLASSES),
            val_fraction=DIGITS_DEFAULT_VAL,
            test_fraction=0.2,
            split_seed=split_seed,
            train_limit=train_limit,
        )
    if lowered in _TORCHVISION:
        canonical, channels, size, num_classes = _TORCHVISION[lowered]
        root = Path(data_root if data_root is not None else "data").expanduser().resolve()
        if canonical == "CIFAR10":
            _check_cifar10(root)
        else:
            _check_mnist_like(root, canonical)
        return DatasetSpec(
            name=canonical,
            kind="torchvision",
            root=str(root),
            num_classes=num_classes,
            in_channels=channels,
            image_size=size,
            class_names=tuple(str(c) for c in range(num_classes)),
            val_fraction=0.1,
            test_fraction=0.0,  # the official test set is the test split
            split_seed=split_seed,
            train_limit=train_limit,
        )
    path = Path(key).expanduser()
    if path.is_dir():
        return _resolve_imagefolder(path.resolve(), image_size, train_limit, split_seed)
    if os.sep in key or key.startswith("."):
        raise DataError(f"dataset directory '{key}' does not exist")
    raise DataError(
        f"unknown dataset '{key}': use digits-transfer, MNIST, FashionMNIST, CIFAR10 "
        "or the path of an ImageFolder directory"
    )


def _check_mnist_like(root: Path, canonical: str) -> None:
    raw = root / canonical / "raw"
    missing = [
        f for f in _MNIST_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()
    ]
    if missing:
        raise DataError(
            f"{canonical} not found: put {', '.join(missing)} (or the .gz files) in {raw} "
            "(nothing is downloaded)"
        )


def _check_cifar10(root: Path) -> None:
    folder = root / _CIFAR10_DIR
    missing = [f for f in _CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"CIFAR10 not found: extract cifar-10-python.tar.gz so that {folder} holds "
            f"{', '.join(missing)} (nothing is downloaded)"
        )


def _visible_image(path: Path, root: Path) -> bool:
    """An image file below ``root`` with no hidden part in between (``cat/.ipynb_checkpoints/
    x.png`` and ``cat/.x.png`` are a notebook's or an editor's copies, not samples)."""
    relative = path.relative_to(root).parts
    return path.suffix.lower() in _IMAGE_EXTENSIONS and not any(
        part.startswith(".") for part in relative)


def _image_files(folder: Path) -> list[Path]:
    """Every visible image below ``folder``, sorted; symlinked folders are followed, as the
    loader (torchvision's ``os.walk(followlinks=True)``) follows them."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # nothing below is visible
        found += [path for name in files if _visible_image(path := Path(parent) / name, folder)]
    return sorted(found)


# The version of the rules that pick a dataset's rows (the splits, ``train_fraction``,
# ``train_limit``): part of a fine-tuning experiment's fingerprint, so an experiment resumed
# after they change is refused rather than trained on other rows. 2: ``_stratified_subset``
# keeps a row of every class.
SPLIT_VERSION = 2


def folder_fingerprint(root: str | os.PathLike) -> str:
    """A digest of an ImageFolder tree's image files, by relative path and size: images added,
    removed, moved between classes or rewritten to another size change it, a copy of the tree
    (other modification times) does not. Reading every image would cost a pass over the data.
    Symlinked folders are followed, as the loader follows them."""
    folder = Path(root)
    digest = hashlib.sha256()
    found = sorted((path.relative_to(folder).as_posix(), path.stat().st_size)
                   for path in _image_files(folder))
    for relative, size in found:
        digest.update(f"{relative}\0{size}\n".encode())
    return digest.hexdigest()[:16]


# The modes read as one channel, as they always were (an experiment resumed must find the
# channels it started with); other modes are read as RGB.
_GREY_MODES = ("1", "L", "I", "I;16", "F")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _layout(root: Path) -> set[str]:
    """The split folders of a pre-split ImageFolder tree (``train/`` beside ``val/``, ``test/``
    or both, each with one folder per class): {"train", "val"?, "test"?}; empty for a tree of
    class folders, which the pipeline splits itself."""
    subsets = set(_class_dirs(root))
    if "train" in subsets and subsets & {"val", "test"}:
        return subsets & {"train", "val", "test"}
    return set()


def _own_val_folder(spec: DatasetSpec) -> bool:
    return spec.kind == "imagefolder" and "val" in _layout(Path(spec.root or ""))


def _resolve_imagefolder(root: Path, image_size, train_limit, split_seed) -> DatasetSpec:
    from PIL import Image

    layout = _layout(root)
    presplit = bool(layout)
    class_root = root / "train" if presplit else root
    classes = _class_dirs(class_root)
    if len(classes) < 2:
        raise DataError(
            f"ImageFolder '{root}' needs one sub-directory per class (at least 2), "
            f"found {len(classes)}"
        )
    empty = [c for c in classes if not _image_files(class_root / c)]
    if empty:
        raise DataError(f"ImageFolder '{root}': class folder(s) {', '.join(empty)} hold no images")
    for subset in sorted(layout - {"train"}):
        if _class_dirs(root / subset) != classes:
            raise DataError(f"ImageFolder '{root}': {subset}/ has other classes than train/")
    first = _image_files(class_root / classes[0])[0]
    try:
        with Image.open(first) as img:
            mode, (width, height) = img.mode, img.size
    except OSError as exc:
        raise DataError(f"ImageFolder '{root}': cannot read image '{first}': {exc}") from None
    channels = 1 if mode in _GREY_MODES else 3
    if image_size is None:
        side = min(max(height, width), _MAX_IMAGE_SIDE)
        size = (side, side)
    else:
        size = (int(image_size), int(image_size))
    return DatasetSpec(
        name="imagefolder",
        kind="imagefolder",
        root=str(root),
        num_classes=len(classes),
        in_channels=channels,
        image_size=size,
        class_names=tuple(classes),
        val_fraction=FOLDER_DEFAULT_VAL,
        # train/ + val/ without test/: the test rows are carved out of train/.
        test_fraction=0.0 if "test" in layout else 0.15,
        split_seed=split_seed,
        train_limit=train_limit,
    )


# --- load: inside a trial ----------------------------------------------------------------------
def load_dataset(spec: DatasetSpec) -> Splits:
    """Read a dataset into memory and split it.

    Parameters
    ----------
    spec : DatasetSpec
        From ``resolve_dataset``.

    Returns
    -------
    Splits
        ``train``, ``val`` and ``test`` as ``ImageTensorDataset``; normalization constants are
        computed on ``train`` only.
    """
    if spec.kind == "digits-transfer":
        arrays = _digits_transfer_arrays(spec)
    elif spec.kind == "torchvision":
        arrays = _torchvision_arrays(spec)
    elif spec.kind == "imagefolder":
        arrays = _imagefolder_arrays(spec)
    else:
        raise DataError(f"unknown dataset kind '{spec.kind}'")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = arrays
    if spec.train_fraction is not None and spec.train_fraction < 1.0:
        n = max(len(np.unique(y_tr)), int(round(spec.train_fraction * len(y_tr))))
        keep = _stratified_subset(y_tr, n, spec.split_seed)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if spec.train_limit is not None and len(y_tr) > spec.train_limit:
        keep = _stratified_subset(y_tr, spec.train_limit, spec.split_seed)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    return _to_splits(spec, (x_tr, y_tr), (x_va, y_va), (x_te, y_te))


def _to_splits(spec: DatasetSpec, train, val, test) -> Splits:
    import torch

    scaled = train[0].astype(np.float32) / 255.0
    mean = scaled.mean(axis=(0, 2, 3))
    std = np.maximum(scaled.std(axis=(0, 2, 3)), 1e-3)

    def make(x, y):
        return ImageTensorDataset(
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)),
            torch.from_numpy(np.asarray(y, dtype=np.int64)),
            mean,
            std,
        )

    return Splits(
        train=make(*train),
        val=make(*val),
        test=make(*test),
        num_classes=spec.num_classes,
        class_names=spec.class_names,
    )


def _stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """Row indices in a random order that interleaves the classes evenly.

    Each row gets a key (its rank in a random permutation of its class, over the class size);
    any consecutive run of the sorted keys holds about its share of every class, and the sizes
    are exact even for classes with few rows (where rounding per class would leave small splits
    empty).
    """
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        keys[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.argsort(keys, kind="stable")


def _stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int):
    """Index arrays: the remainder first, then one per fraction; stratified by label."""
    order = _stratified_order(labels, seed)
    parts, start = [], 0
    for fraction in fractions:
        size = int(round(fraction * len(labels)))
        parts.append(np.sort(order[start : start + size]))
        start += size
    return [np.sort(order[start:]), *parts]


def _split_keeping_test(labels: np.ndarray, val_fraction: float, test_fraction: float,
                        default_val: float, seed: int):
    """(train, val, test) index arrays whose test rows do not depend on ``val_fraction``.

    The test split is the run of the stratified order that the default split gives it (after
    ``default_val``'s share), so a study with a larger validation split (``--val-fraction``) is
    still tested on exactly the rows every other study of the dataset is; the validation rows
    are the first of the others, in the same order. With ``val_fraction == default_val`` this
    is ``_stratified_split(labels, (default_val, test_fraction), seed)``.
    """
    order = _stratified_order(labels, seed)
    n_default = int(round(default_val * len(labels)))
    n_test = int(round(test_fraction * len(labels)))
    test = order[n_default:n_default + n_test]
    rest = np.concatenate([order[:n_default], order[n_default + n_test:]])
    n_val = int(round(val_fraction * len(labels)))
    return np.sort(rest[n_val:]), np.sort(rest[:n_val]), np.sort(test)


def _stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows, stratified: the first ``n`` of ``_stratified_order``, where every class
    keeps at least one row whenever ``n`` allows. The interleaved keys alone do not promise
    that (classes of other sizes can share the first ranks), so a class left out takes the
    place of the last row chosen from the class with the most."""
    order = _stratified_order(labels, seed + 1)
    chosen = np.array(order[:n], dtype=np.int64)
    classes, codes = np.unique(labels, return_inverse=True)
    if n >= len(classes):
        counts = np.bincount(codes[chosen], minlength=len(classes))
        for missing in np.flatnonzero(counts == 0):
            most = int(np.argmax(counts))
            place = np.flatnonzero(codes[chosen] == most)[-1]
            rest = order[n:]
            chosen[place] = rest[np.flatnonzero(codes[rest] == missing)[0]]
            counts[most] -= 1
            counts[missing] += 1
    return np.sort(chosen)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8) grey levels 0..16 and labels.

    Reads the CSV that ``sklearn.datasets.load_digits`` reads, without importing scikit-learn:
    that import (SciPy with it) costs several seconds in every fresh trial process.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",", dtype=np.float64)
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # the file moved: take the slow, public road

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def load_digits_images(classes) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits of the given classes as uint8 ``(N, 1, 8, 8)`` and labels.

    Labels are re-indexed to ``0..len(classes)-1`` in the order of ``classes``.
    """
    grey, target = _digits_arrays()
    # The digits hold 17 grey levels (0..16); scaling by 255/16 keeps all of them in uint8.
    images = np.rint(grey * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    mask = np.isin(target, classes)
    remap = {c: i for i, c in enumerate(classes)}
    labels = np.array([remap[t] for t in target[mask]], dtype=np.int64)
    return images[mask], labels


def _digits_transfer_arrays(spec: DatasetSpec):
    images, labels = load_digits_images(DIGITS_TARGET_CLASSES)
    train, val, test = _split_keeping_test(labels, spec.val_fraction, spec.test_fraction,
                                           DIGITS_DEFAULT_VAL, spec.split_seed)
    return (images[train], labels[train]), (images[val], labels[val]), (images[test], labels[test])


def _ensure_uncompressed(raw: Path, name: str) -> None:
    # torchvision reads only the uncompressed IDX files; its downloader gunzips next to the
    # .gz, so do the same, through a temp file so concurrent trials never see half a file.
    target = raw / name
    if target.is_file():
        return
    source = raw / f"{name}.gz"
    if not source.is_file():
        raise DataError(f"missing {target} (or {source})")
    try:
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as src:
            shutil.copyfileobj(src, out)
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"cannot unpack {source} into {raw}: {exc}; gunzip it there") from None


def _torchvision_arrays(spec: DatasetSpec):
    import torchvision.datasets as tvd

    root = spec.root
    assert root is not None
    try:
        if spec.name == "CIFAR10":
            train_set = tvd.CIFAR10(root, train=True, download=False)
            test_set = tvd.CIFAR10(root, train=False, download=False)
            x_train = np.asarray(train_set.data).transpose(0, 3, 1, 2)
            x_test = np.asarray(test_set.data).transpose(0, 3, 1, 2)
            y_train = np.asarray(train_set.targets)
            y_test = np.asarray(test_set.targets)
        else:
            raw = Path(root) / spec.name / "raw"
            for name in _MNIST_FILES:
                _ensure_uncompressed(raw, name)
            cls = getattr(tvd, spec.name)
            train_set = cls(root, train=True, download=False)
            test_set = cls(root, train=False, download=False)
            x_train = train_set.data.numpy()[:, None]
            x_test = test_set.data.numpy()[:, None]
            y_train = train_set.targets.numpy()
            y_test = test_set.targets.numpy()
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
        raise DataError(f"{spec.name} under {root} is unusable: {exc}") from None
    train, val = _stratified_split(y_train, (spec.val_fraction,), spec.split_seed)
    return (x_train[train], y_train[train]), (x_train[val], y_train[val]), (x_test, y_test)


def _read_folder(folder: Path, spec: DatasetSpec):
    import torchvision.datasets as tvd
    from PIL import Image

    class VisibleImageFolder(tvd.ImageFolder):
        # Hidden folders (.ipynb_checkpoints, .DS_Store's kin) are no classes, as in
        # resolve_dataset's check; torchvision's ImageFolder would take them as classes.
        def find_classes(self, directory):
            classes = _class_dirs(Path(directory))
            return classes, {c: i for i, c in enumerate(classes)}

    dataset = VisibleImageFolder(str(folder),
                                 is_valid_file=lambda p: _visible_image(Path(p), folder))
    if tuple(dataset.classes) != spec.class_names:
        raise DataError(
            f"ImageFolder '{folder}' has classes {dataset.classes}, expected {list(spec.class_names)}"
        )
    mode = "L" if spec.in_channels == 1 else "RGB"
    height, width = spec.image_size
    images = np.empty((len(dataset.samples), spec.in_channels, height, width), dtype=np.uint8)
    for i, (path, _) in enumerate(dataset.samples):
        with Image.open(path) as img:
            img = _to_8_bit(img).convert(mode)
            if img.size != (width, height):
                img = img.resize((width, height), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
        images[i] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return images, np.asarray(dataset.targets, dtype=np.int64)


def _to_8_bit(img):
    """16- and 32-bit grey images (PNG's 16-bit grey opens as "I;16" or "I") as 8-bit "L",
    scaled from 16 bits (Pillow's own conversion saturates every value above 255)."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    return img


def _imagefolder_arrays(spec: DatasetSpec):
    root = Path(spec.root or "")
    layout = _layout(root)
    if layout:
        x_train, y_train = _read_folder(root / "train", spec)
        if "test" in layout:
            x_test, y_test = _read_folder(root / "test", spec)
        else:  # train/ and val/: the test rows come out of train/
            train, test = _stratified_split(y_train, (spec.test_fraction,), spec.split_seed)
            x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_train[test], \
                y_train[test]
        if "val" in layout:
            x_val, y_val = _read_folder(root / "val", spec)
            return (x_train, y_train), (x_val, y_val), (x_test, y_test)
        train, val = _stratified_split(y_train, (spec.val_fraction,), spec.split_seed)
        return (x_train[train], y_train[train]), (x_train[val], y_train[val]), (x_test, y_test)
    images, labels = _read_folder(root, spec)
    train, val, test = _split_keeping_test(labels, spec.val_fraction, spec.test_fraction,
                                           FOLDER_DEFAULT_VAL, spec.split_seed)
    return (images[train], labels[train]), (images[val], labels[val]), (images[test], labels[test])


# --- flat arrays for the SVM baseline ----------------------------------------------------------
def dataset_as_arrays(
    spec: DatasetSpec,
    max_train: int | None = 3000,
    *,
    include_val: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same splits as flat float pixels in [0, 1], for scikit-learn baselines.

    Parameters
    ----------
    spec : DatasetSpec
    max_train : int or None
        Keep at most this many training rows (stratified); kernels SVMs scale quadratically.
    include_val : bool
        Add the val split to the training rows (a baseline that cross-validates itself has no
        use for a separate val split).
    seed : int
        Seed of the subsample.

    Returns
    -------
    X_train, y_train, X_test, y_test : numpy.ndarray
        ``X`` has shape ``(n, C*H*W)``, float32; the test split is the one trials never see.
    """
    splits = load_dataset(spec)
    x_train, y_train = splits.train.images.numpy(), splits.train.labels.numpy()
    if include_val:
        x_train = np.concatenate([x_train, splits.val.images.numpy()])
        y_train = np.concatenate([y_train, splits.val.labels.numpy()])
    if max_train is not None and len(y_train) > max_train:
        keep = _stratified_subset(y_train, int(max_train), seed)
        x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = splits.test.images.numpy(), splits.test.labels.numpy()

    def flat(x):
        return x.reshape(len(x), -1).astype(np.float32) / 255.0

    return flat(x_train), y_train, flat(x_test), y_test
