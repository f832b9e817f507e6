"""The image datasets: where they live, how they are read, and their fixed train/validation/test splits.

Registry (`DATASET_NAMES`):

    digits          scikit-learn's 8x8 digits (1,797 images, bundled with scikit-learn: always there)
    fashion_mnist   Zalando's Fashion-MNIST, 1x28x28, IDX files
    mnist           MNIST, 1x28x28, IDX files
    kmnist          Kuzushiji-MNIST, 1x28x28, IDX files
    cifar10         CIFAR-10, 3x32x32, the binary batches (`cifar-10-batches-bin`) or the python batches
                    (`cifar-10-batches-py`, read by `core.safe_pickle` without unpickling anything)

Where we look: the data root is `$ROBUST_LOSS_LAB_DATA`, else `<repo>/data`. Inside it, the layouts
torchvision writes (`<root>/MNIST/raw`, `<root>/FashionMNIST/raw`, `<root>/KMNIST/raw`,
`<root>/cifar-10-batches-py`) and a few plain ones (`<root>/mnist`, `<root>/cifar-10-batches-bin`, ...);
Fashion-MNIST also where Debian's `dataset-fashion-mnist` package puts it. Nothing is downloaded unless
asked: `python -m core.datasets download NAME` (torchvision's downloader, checksummed).

Splits are fixed and recorded: the test split is the official test set (digits has none, so its test
split is carved like the validation split); validation is carved from the official training set by a
permutation drawn with `SPLIT_SEED`, and train is the rest, in that permuted order (so `limit` picks a
random, class-balanced prefix). `ImageSet.index` keeps each image's position in its official file.

Images are uint8 tensors (N, C, H, W); labels int64 (N,). Training scales pixels to [0, 1] itself.

Command line: `python -m core.datasets [status]` prints what is found; `... download NAME [--root DIR]`.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "SPLITS",
    "SPLIT_SEED",
    "DatasetInfo",
    "DatasetMissing",
    "ImageSet",
    "data_root",
    "dataset_info",
    "dataset_status",
    "download",
    "found_split_sizes",
    "load_split",
    "split_sizes",
]

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # the validation carve-out; never change it, runs record it
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"
_CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without reading it."""

    name: str
    title: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    classes: tuple[str, ...]
    official_train: int  # images in the official training file(s)
    official_test: int  # images in the official test file(s); 0 when there is none
    val_size: int
    test_size: int  # carved test size when official_test == 0
    kind: str  # "sklearn" | "idx" | "cifar"
    torchvision_dir: str = ""  # torchvision's folder name under the root
    plain_dirs: tuple[str, ...] = ()
    system_dirs: tuple[Path, ...] = ()
    url: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", "Digits (scikit-learn, 8×8)", (1, 8, 8), _DIGITS, 1797, 0, 180, 360, "sklearn",
        url="https://archive.ics.uci.edu/dataset/80",
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "Fashion-MNIST (28×28)", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"),
        60000, 10000, 5000, 0, "idx", "FashionMNIST", ("fashion-mnist", "fashion_mnist"),
        (DEBIAN_FASHION_MNIST,), "https://github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": DatasetInfo(
        "mnist", "MNIST (28×28)", (1, 28, 28), _DIGITS, 60000, 10000, 5000, 0, "idx", "MNIST", ("mnist",),
        url="https://yann.lecun.com/exdb/mnist/",
    ),
    "kmnist": DatasetInfo(
        "kmnist", "Kuzushiji-MNIST (28×28)", (1, 28, 28),
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        60000, 10000, 5000, 0, "idx", "KMNIST", ("kmnist",), url="https://github.com/rois-codh/kmnist",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10 (32×32 colour)", (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        50000, 10000, 5000, 0, "cifar", "", ("cifar-10-batches-bin", "cifar-10-batches-py"),
        url="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}
DATASET_NAMES: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "kmnist", "cifar10")


class DatasetMissing(Exception):
    """The dataset's files are not where we look. The message names every place and the fix."""


class DatasetFormatError(ValueError):
    """Files were found but are not in the dataset's format (truncated download, wrong file, ...)."""


@dataclass
class ImageSet:
    """One split of a dataset, in memory.

    images: uint8 (N, C, H, W); labels: int64 (N,); index: int64 (N,), each image's position in its
    official file (train or test); classes: label names; name: dataset name; split: train/val/test.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str = ""
    index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def to(self, device: str | torch.device) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes, self.name,
                        self.split, self.index.to(device))


def data_root() -> Path:
    """`$ROBUST_LOSS_LAB_DATA`, else `<repo>/data`."""
    env = os.environ.get("ROBUST_LOSS_LAB_DATA")
    return Path(env).expanduser() if env else REPO / "data"


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry; a clear error for an unknown name."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}") from None


def _carved(info: DatasetInfo, n_train: int) -> tuple[int, int]:
    """(validation, carved test) sizes for an official training set of n_train images.

    The registry's sizes for the real files; proportionally smaller ones (at least 1) for a smaller copy
    (a subset someone made, or the small archives the tests write).
    """
    val, test = info.val_size, (0 if info.official_test else info.test_size)
    if n_train != info.official_train:
        val = max(1, round(n_train * val / info.official_train))
        test = max(1, round(n_train * test / info.official_train)) if test else 0
    if n_train - val - test < 1:
        raise DatasetFormatError(f"{info.name}: {n_train} training images are too few to carve "
                                 f"{val} validation and {test} test images")
    return val, test


def split_sizes(name: str, limit_train: int | None = None, *, n_train: int | None = None,
                n_test: int | None = None) -> dict[str, int]:
    """Images per split. Without n_train/n_test: the sizes for the real files, without reading them.

    limit_train caps the train split.
    """
    info = dataset_info(name)
    n_train = info.official_train if n_train is None else n_train
    n_test = info.official_test if n_test is None else n_test
    val, carved_test = _carved(info, n_train)
    sizes = {"train": n_train - val - carved_test, "val": val, "test": n_test if info.official_test else carved_test}
    if limit_train is not None:
        if limit_train < 1:
            raise ValueError(f"limit_train must be at least 1, got {limit_train}")
        sizes["train"] = min(sizes["train"], limit_train)
    return sizes


# ---------------------------------------------------------------------------------------------------
# Locating files


def _candidate_dirs(info: DatasetInfo, root: Path) -> list[Path]:
    dirs = []
    if info.torchvision_dir:
        dirs.append(root / info.torchvision_dir / "raw")
    dirs += [root / d for d in info.plain_dirs]
    dirs += list(info.system_dirs)
    return dirs


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(info: DatasetInfo, root: Path) -> Path | None:
    """The first folder holding a complete copy of the dataset, or None."""
    for folder in _candidate_dirs(info, root):
        if info.kind == "idx":
            if all(_idx_file(folder, stem) for stem in _IDX_FILES.values()):
                return folder
        elif info.kind == "cifar":
            suffix = ".bin" if folder.name.endswith("-bin") else ""
            names = [*_CIFAR_TRAIN, _CIFAR_TEST]
            if all((folder / f"{n}{suffix}").is_file() for n in names):
                return folder
    return None


def _digits_file() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _fix(info: DatasetInfo, root: Path) -> str:
    if info.kind == "sklearn":
        return "pip install scikit-learn (it ships the digits)"
    lines = [f"python -m core.datasets download {info.name}   (needs internet; writes under {root})"]
    if info.kind == "idx":
        names = ", ".join(f"{s}.gz" for s in _IDX_FILES.values())
        lines.append(f"or copy {names} into {root / info.torchvision_dir / 'raw'}")
    else:
        lines.append(f"or unpack cifar-10-binary.tar.gz or cifar-10-python.tar.gz from {info.url} into {root}")
    if info.name == "fashion_mnist":
        lines.append("or, on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist")
    lines.append("or point ROBUST_LOSS_LAB_DATA at the folder that holds them")
    return "\n".join(lines)


def dataset_status(root: Path | None = None) -> list[dict]:
    """One dict per dataset: name, title, found, where (folder or None), fix (how to make it available)."""
    root = Path(root) if root is not None else data_root()
    out = []
    for name in DATASET_NAMES:
        info = DATASETS[name]
        if info.kind == "sklearn":
            path = _digits_file()
            where = str(path) if path else None
        else:
            folder = _locate(info, root)
            where = str(folder) if folder else None
        out.append({"name": name, "title": info.title, "found": where is not None, "where": where,
                    "fix": _fix(info, root)})
    return out


def _missing(info: DatasetInfo, root: Path) -> DatasetMissing:
    looked = "\n".join(f"  {d}" for d in _candidate_dirs(info, root))
    return DatasetMissing(f"{info.title} ({info.name}) was not found. Looked in:\n{looked}\n"
                          f"To fix:\n{_fix(info, root)}")


# ---------------------------------------------------------------------------------------------------
# Readers (each returns numpy arrays: images uint8 (N, C, H, W), labels int64 (N,))


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            return fh.read()
    return path.read_bytes()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x0000 08 <ndim>, big-endian uint32 sizes, then uint8 data."""
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError) as exc:  # gzip raises EOFError on a truncated file
        raise DatasetFormatError(f"{path}: cannot read ({exc}); download it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetFormatError(f"{path}: not an unsigned-byte IDX file (bad magic); download it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header; download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count:
        raise DatasetFormatError(f"{path}: header says {shape} ({count} bytes) but the file holds "
                                 f"{len(raw) - header}; download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_idx_pair(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_idx_file(folder, _IDX_FILES[f"{part}_images"]))  # type: ignore[arg-type]
    labels = read_idx(_idx_file(folder, _IDX_FILES[f"{part}_labels"]))  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetFormatError(f"{folder}: {part} images {images.shape} and labels {labels.shape} do not match")
    return images[:, None], labels.astype(np.int64)


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    if len(raw) % _CIFAR_RECORD:
        raise DatasetFormatError(f"{path}: {len(raw)} bytes is not a whole number of 3,073-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from core.safe_pickle import UnsafePickleError, load_plain

    try:
        batch = load_plain(path.read_bytes())
    except UnsafePickleError as exc:
        raise DatasetFormatError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: not a CIFAR-10 python batch (no dict)")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFormatError(f"{path}: 'data' is not a uint8 (N, 3072) array")
    if labels is None or len(labels) != data.shape[0]:
        raise DatasetFormatError(f"{path}: 'labels' missing or not one per image")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _read_cifar(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    names = _CIFAR_TRAIN if part == "train" else [_CIFAR_TEST]
    binary = folder.name.endswith("-bin")
    pieces = [(_read_cifar_bin(folder / f"{n}.bin") if binary else _read_cifar_py(folder / n)) for n in names]
    return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    path = _digits_file()
    if path is None:
        raise _missing(DATASETS["digits"], data_root())
    # scikit-learn's own file, read directly: importing sklearn.datasets costs ~2 s per process.
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    # 0..16 counts -> 0..255 bytes
    images = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8).reshape(-1, 1, 8, 8)
    return images, labels


@functools.lru_cache(maxsize=4)
def _official(name: str, root: str, part: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, folder) of an official file set; cached (train then val read the same files)."""
    info = DATASETS[name]
    if info.kind == "sklearn":
        images, labels = _read_digits()
        return images, labels, "sklearn"
    folder = _locate(info, Path(root))
    if folder is None:
        raise _missing(info, Path(root))
    images, labels = _read_idx_pair(folder, part) if info.kind == "idx" else _read_cifar(folder, part)
    if images.shape[1:] != info.image_shape:
        raise DatasetFormatError(f"{folder}: images are {images.shape[1:]}, expected {info.image_shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DatasetFormatError(f"{folder}: labels outside 0..{info.num_classes - 1}")
    return images, labels, str(folder)


def _carve(name: str, n_train: int, split: str) -> np.ndarray:
    """Positions in the official training set of a carved split (fixed by SPLIT_SEED)."""
    val, test = _carved(DATASETS[name], n_train)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(SPLIT_SEED)).numpy()
    if split == "test":
        return perm[:test]
    if split == "val":
        return perm[test : test + val]
    return perm[test + val :]


def load_split(name: str, split: str, device: str | torch.device = "cpu", *, limit: int | None = None,
               root: str | Path | None = None) -> ImageSet:
    """Load one split of a dataset as uint8 tensors on `device`.

    split: "train" | "val" | "test". limit: keep the first `limit` images of the split (the train split is
    in a fixed random order, so this is a random subset). root: the data root (default `data_root()`).
    Raises DatasetMissing (with the fix) when the files are not found, DatasetFormatError when damaged.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root_path = str(Path(root) if root is not None else data_root())
    if split == "test" and info.official_test:
        images, labels, _ = _official(name, root_path, "test")
        positions = np.arange(images.shape[0])
    else:
        images, labels, _ = _official(name, root_path, "train")
        positions = _carve(name, images.shape[0], split)
    if limit is not None:
        positions = positions[:limit]
    pos = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.int64))
    return ImageSet(
        images=torch.from_numpy(np.ascontiguousarray(images[positions])).to(device),
        labels=torch.from_numpy(labels[positions]).to(device),
        classes=list(info.classes),
        name=name,
        split=split,
        index=pos.to(device),
    )


def found_split_sizes(name: str, limit_train: int | None = None, *, root: str | Path | None = None
                      ) -> dict[str, int]:
    """Images per split of the files actually found (reads them; cached). DatasetMissing if absent."""
    info = dataset_info(name)
    root_path = str(Path(root) if root is not None else data_root())
    n_train = _official(name, root_path, "train")[0].shape[0]
    n_test = _official(name, root_path, "test")[0].shape[0] if info.official_test else 0
    return split_sizes(name, limit_train, n_train=n_train, n_test=n_test)


# ---------------------------------------------------------------------------------------------------
# Download (only when asked)


def download(name: str, root: Path | None = None) -> Path:
    """Fetch a dataset into `root` with torchvision's checksummed downloader. Needs internet."""
    info = dataset_info(name)
    root = Path(root) if root is not None else data_root()
    if info.kind == "sklearn":
        path = _digits_file()
        if path is None:
            raise _missing(info, root)
        return path
    root.mkdir(parents=True, exist_ok=True)
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    if info.kind == "idx":
        cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST}[name]
        # The raw IDX archives into <root>/<Class>/raw (torchvision's layout, its URLs and MD5s), fetched
        # directly: constructing the dataset would also read the whole train split for nothing, and would
        # torch.load a `processed/` file if one were lying there.
        raw = root / cls.__name__ / "raw"
        for filename, md5 in cls.resources:
            errors = []
            for mirror in cls.mirrors:
                try:
                    download_and_extract_archive(f"{mirror}{filename}", str(raw), filename=filename, md5=md5)
                    break
                except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad checksum a RuntimeError
                    errors.append(f"{mirror}: {exc}")
            else:
                raise DatasetMissing(f"could not download {filename} for {info.title}:\n  " + "\n  ".join(errors)
                                     + f"\nTo fix:\n{_fix(info, root)}")
    else:
        # The python batches, as torchvision fetches them (URL and MD5 from torchvision); we read them
        # with core.safe_pickle instead of letting torchvision unpickle them.
        cifar = tvd.CIFAR10
        download_and_extract_archive(cifar.url, str(root), filename=cifar.filename, md5=cifar.tgz_md5)
    _official.cache_clear()
    folder = _locate(info, root)
    if folder is None:
        raise _missing(info, root)
    return folder


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.datasets", description="Datasets: status and download.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="show which datasets are found (default)")
    dl = sub.add_parser("download", help="download a dataset (needs internet)")
    dl.add_argument("name", choices=DATASET_NAMES)
    dl.add_argument("--root", type=Path, default=None, help=f"data root (default {data_root()})")
    args = parser.parse_args(argv)
    if args.command == "download":
        try:
            where = download(args.name, args.root)
        except (DatasetMissing, OSError, RuntimeError) as exc:
            print(f"download failed: {exc}", file=sys.stderr)
            return 1
        print(where)
        return 0
    print(f"data root: {data_root()}")
    for row in dataset_status():
        mark = "found  " if row["found"] else "missing"
        print(f"{mark} {row['name']:<14} {row['where'] or ''}")
        if not row["found"]:
            print("        " + row["fix"].replace("\n", "\n        "))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
