"""The image datasets: where they live, how they are read, and their fixed train/validation/test splits.

Registry (`DATASET_NAMES`):

    digits          scikit-learn's 8x8 digits (1,797 images, bundled with scikit-learn: always there)
    fashion_mnist   Zalando's Fashion-MNIST, 1x28x28, IDX files
    mnist           MNIST, 1x28x28, IDX files
    kmnist          Kuzushiji-MNIST, 1x28x28, IDX files (torchvision's layout) or the official npz files
                    (`kmnist-train-imgs.npz`, `kmnist-train-labels.npz`, `kmnist-test-imgs.npz`,
                    `kmnist-test-labels.npz`, each holding one array `arr_0`)
    cifar10         CIFAR-10, 3x32x32, the binary batches (`cifar-10-batches-bin`, what `download` fetches)
                    or torchvision's python batches (`cifar-10-batches-py`, see below)
    photos          scikit-learn's two sample photographs (china.jpg, flower.jpg, 427x640) cut into
                    non-overlapping 32x32 colour patches (2 x 13 x 20 = 520), label = which photograph.
                    Bundled with scikit-learn, so always there: a tiny real colour set for the colour (YUV)
                    code paths when CIFAR-10 is absent. Neighbouring patches of one photograph land in
                    different splits, so it exercises code; it is no benchmark.

Where we look: the data root is `$ROBUST_LOSS_LAB_DATA`, else `<repo>/data`. Inside it, the layouts
torchvision writes (`<root>/MNIST/raw`, `<root>/FashionMNIST/raw`, `<root>/KMNIST/raw`,
`<root>/cifar-10-batches-py`), the dataset authors' own (`<root>/cifar-10-batches-bin` from
`cifar-10-binary.tar.gz`; KMNIST's npz files in `<root>/kmnist` or `<root>/KMNIST/raw`) and a few plain
ones (`<root>/mnist`, ...); Fashion-MNIST also where Debian's `dataset-fashion-mnist` package puts it.
Nothing is downloaded unless asked: `python -m core.datasets download NAME`, MD5-checked (the MNISTs with
torchvision's URLs and checksums; CIFAR-10 as its binary archive, with the MD5 its authors publish).

CIFAR-10 and pickle. The binary version is fixed 3,073-byte records (one label byte, then 1,024 red,
1,024 green and 1,024 blue bytes, row-major), read with `np.frombuffer`; it is what `download` fetches.
torchvision's `cifar-10-batches-py` holds Python 2 pickles of a dict (`data`: a uint8 (N, 3072) array,
`labels`: a list of ints). A user who has those keeps using them, rather than fetching the 162 MB
binary archive: they are read through Python's documented way of restricting a pickle
(`pickle.Unpickler.find_class`, "Restricting Globals" in the pickle docs). The only names a batch may
mention are the three an array needs (`numpy.core.multiarray._reconstruct`, or as numpy 2 writes it
`numpy._core.multiarray._reconstruct`; `numpy.ndarray`; `numpy.dtype`), and even those resolve to inert
stand-ins defined here, not to numpy's functions: they accept only what a uint8 array's pickle carries
(dtype `u1`, raw bytes of exactly the stated size), and the array is made afterwards by `np.frombuffer`.
Any other name (`os.system`, `builtins.eval`, ...) stops the load with a `DatasetFormatError` naming the
file, before anything runs. A batch must be a plausible size before it is read (at most 40 MB and
200,000 pickle opcodes; the real ones are 31 MB and about 30,000). The alternative that needs no pickle
at all is named in every such message: `python -m core.datasets download cifar10` (the binary folder is
read in preference to the python one).

Every file is checked before it is trusted: sizes against caps before anything is allocated, then dtype,
shape and label range. A damaged file raises `DatasetFormatError` naming the file and the fix.

Splits are fixed and recorded: the test split is the official test set (digits and photos have none, so
their test split is carved like the validation split); validation is carved from the official training
set by a permutation drawn with `SPLIT_SEED`, and train is the rest, in that permuted order (so `limit`
picks a random, class-balanced prefix). `ImageSet.index` keeps each image's position in its official file.

Images are uint8 tensors (N, C, H, W); labels int64 (N,). Training scales pixels to [0, 1] itself.

Command line: `python -m core.datasets [status]` prints what is found, in which layout, and the fix for
what is not; `... download NAME [--root DIR]` fetches one.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import os
import pickle
import pickletools
import struct
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.paths import REPO

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "SPLITS",
    "SPLIT_SEED",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetMissing",
    "ImageSet",
    "data_root",
    "dataset_info",
    "dataset_status",
    "download",
    "found_split_sizes",
    "load_split",
    "read_idx",
    "split_sizes",
]

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # the validation carve-out; never change it, runs record it
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# The files the dataset's authors publish, where they are not IDX (key "arr_0" in each).
_NPZ_FILES = {
    "kmnist": {
        "train_images": "kmnist-train-imgs.npz",
        "train_labels": "kmnist-train-labels.npz",
        "test_images": "kmnist-test-imgs.npz",
        "test_labels": "kmnist-test-labels.npz",
    },
}
# Caps checked before anything is allocated: MNIST's largest file is 47 MB, a CIFAR-10 batch 31 MB.
_MAX_ARRAY_BYTES = 64 * 2**20
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_BATCH_IMAGES = 10_000  # images in each official batch: the most a batch may hold
_CIFAR_PY_MAX_BYTES = 40_000_000
_CIFAR_PY_MAX_OPCODES = 200_000
CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# Published on https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 binary version", 170,052,171 bytes).
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_FETCH = "python -m core.datasets download cifar10"
_PHOTO_FILES = ("china.jpg", "flower.jpg")
_PATCH = 32


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
    kind: str  # "sklearn" (bundled with scikit-learn) | "idx" | "cifar"
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
        50000, 10000, 5000, 0, "cifar", "", (_CIFAR_BIN_DIR, _CIFAR_PY_DIR),
        url="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "photos": DatasetInfo(
        "photos", "Photo patches (scikit-learn's two sample photos, 32×32 colour)", (3, 32, 32),
        ("china", "flower"), 520, 0, 52, 104, "sklearn",
        url="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_sample_images.html",
    ),
}
DATASET_NAMES: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "kmnist", "cifar10", "photos")


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


_LAYOUTS = {
    "idx": "IDX files",
    "npz": "the official npz files",
    "cifar-bin": "binary batches",
    "cifar-py": "python batches (restricted unpickler: runs nothing)",
    "sklearn": "bundled with scikit-learn",
}


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


def _folder_layout(info: DatasetInfo, folder: Path) -> str | None:
    """The layout of a complete copy in `folder` ("idx", "npz", "cifar-bin", "cifar-py"), or None."""
    if info.kind == "idx":
        if all(_idx_file(folder, stem) for stem in _IDX_FILES.values()):
            return "idx"
        npz = _NPZ_FILES.get(info.name)
        if npz and all((folder / n).is_file() for n in npz.values()):
            return "npz"
    elif info.kind == "cifar":
        binary = folder.name.endswith("-bin")
        suffix = ".bin" if binary else ""
        if all((folder / f"{n}{suffix}").is_file() for n in [*_CIFAR_TRAIN, _CIFAR_TEST]):
            return "cifar-bin" if binary else "cifar-py"
    return None


def _find(info: DatasetInfo, root: Path) -> tuple[Path, str] | None:
    """(folder, layout) of the first complete copy of the dataset, or None."""
    for folder in _candidate_dirs(info, root):
        layout = _folder_layout(info, folder)
        if layout:
            return folder, layout
    return None


def _locate(info: DatasetInfo, root: Path) -> Path | None:
    """The first folder holding a complete copy of the dataset, or None."""
    found = _find(info, root)
    return found[0] if found else None


def _sklearn_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _digits_file() -> Path | None:
    base = _sklearn_dir()
    path = base / "datasets" / "data" / "digits.csv.gz" if base else None
    return path if path is not None and path.is_file() else None


def _photo_files() -> list[Path] | None:
    base = _sklearn_dir()
    if base is None:
        return None
    paths = [base / "datasets" / "images" / n for n in _PHOTO_FILES]
    return paths if all(p.is_file() for p in paths) else None


def _bundled_where(name: str) -> str | None:
    if name == "photos":
        files = _photo_files()
        return str(files[0].parent) if files else None
    path = _digits_file()
    return str(path) if path else None


def _fix(info: DatasetInfo, root: Path) -> str:
    if info.kind == "sklearn":
        return f"pip install scikit-learn (it ships the {'sample photographs' if info.name == 'photos' else 'digits'})"
    lines = [f"python -m core.datasets download {info.name}   (needs internet; writes under {root})"]
    if info.kind == "idx":
        names = ", ".join(f"{s}.gz" for s in _IDX_FILES.values())
        lines.append(f"or copy {names} into {root / info.torchvision_dir / 'raw'}")
        if info.name in _NPZ_FILES:
            npz = ", ".join(_NPZ_FILES[info.name].values())
            lines.append(f"or copy the official {npz} into {root / info.plain_dirs[0]}")
    else:
        lines.append(f"or unpack cifar-10-binary.tar.gz from {info.url} into {root} (it makes {_CIFAR_BIN_DIR})")
        lines.append(f"or keep torchvision's {_CIFAR_PY_DIR} in {root} (read by a restricted unpickler that "
                     "runs nothing)")
    if info.name == "fashion_mnist":
        lines.append("or, on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist")
    lines.append("or point ROBUST_LOSS_LAB_DATA at the folder that holds them")
    return "\n".join(lines)


def dataset_status(root: Path | None = None) -> list[dict]:
    """One dict per dataset: name, title, found, where (folder or None), layout (how the files found are
    stored, "" when missing) and fix (how to make it available)."""
    root = Path(root) if root is not None else data_root()
    out = []
    for name in DATASET_NAMES:
        info = DATASETS[name]
        if info.kind == "sklearn":
            where = _bundled_where(name)
            layout = "sklearn" if where else ""
        else:
            found = _find(info, root)
            where, layout = (str(found[0]), found[1]) if found else (None, "")
        out.append({"name": name, "title": info.title, "found": where is not None, "where": where,
                    "layout": _LAYOUTS.get(layout, ""), "fix": _fix(info, root)})
    return out


def _missing(info: DatasetInfo, root: Path) -> DatasetMissing:
    looked = "\n".join(f"  {d}" for d in _candidate_dirs(info, root))
    return DatasetMissing(f"{info.title} ({info.name}) was not found. Looked in:\n{looked}\n"
                          f"To fix:\n{_fix(info, root)}")


# ---------------------------------------------------------------------------------------------------
# Readers (each returns numpy arrays: images uint8 (N, C, H, W), labels int64 (N,))


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def read_idx(path: Path, max_bytes: int = _MAX_ARRAY_BYTES) -> np.ndarray:
    """An IDX file (MNIST's format): magic 0x0000 08 <ndim>, big-endian uint32 sizes, then uint8 data.

    Gzipped or not. The header is read first and the data size it declares checked against max_bytes
    before the data is read, so a small (or compressed) file cannot make us allocate gigabytes.
    """
    fix = "download it again"
    try:
        with _open_maybe_gz(path) as fh:
            magic = fh.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
                raise DatasetFormatError(f"{path}: not an unsigned-byte IDX file (bad magic); {fix}")
            ndim = magic[3]
            dims = fh.read(4 * ndim)
            if ndim < 1 or len(dims) < 4 * ndim:
                raise DatasetFormatError(f"{path}: truncated IDX header; {fix}")
            shape = struct.unpack(f">{ndim}I", dims)
            count = math.prod(shape)  # Python ints: no overflow on absurd headers
            if count > max_bytes:
                raise DatasetFormatError(f"{path}: header says {shape} ({count:,} bytes), more than the "
                                         f"{max_bytes:,} any file of these datasets holds; {fix}")
            data = fh.read(count + 1)  # one byte more than declared, to see trailing data
    except (OSError, EOFError, zlib.error) as exc:  # gzip: BadGzipFile (an OSError), EOFError, zlib.error
        raise DatasetFormatError(f"{path}: cannot read ({exc}); {fix}") from exc
    if len(data) != count:
        held = f"{len(data):,}" if len(data) <= count else f"more than {count:,}"
        raise DatasetFormatError(f"{path}: header says {shape} ({count:,} bytes) but the file holds {held}; {fix}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _check_pair(where: Path, part: str, images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetFormatError(f"{where}: {part} images {images.shape} and labels {labels.shape} do not match; "
                                 "download them again")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(f"{where}: {part} labels outside 0..{num_classes - 1}; download them again")


def _read_idx_pair(folder: Path, part: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_idx_file(folder, _IDX_FILES[f"{part}_images"]))  # type: ignore[arg-type]
    labels_path = _idx_file(folder, _IDX_FILES[f"{part}_labels"])
    labels = read_idx(labels_path)  # type: ignore[arg-type]
    _check_pair(labels_path, part, images, labels, num_classes)  # type: ignore[arg-type]
    return images[:, None], labels.astype(np.int64)


def _read_npz_array(path: Path, *, images: bool, max_bytes: int = _MAX_ARRAY_BYTES) -> np.ndarray:
    """`arr_0` of an npz file: its .npy header is checked (plain dtype, shape, size) before the array
    is read, and it is read with allow_pickle=False, so a pickled object array is refused unread."""
    fix = "download it again"
    want = "uint8 images (N, 28, 28)" if images else "integer labels (N,)"
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                member = archive.getinfo("arr_0.npy")
            except KeyError:
                names = ", ".join(n.removesuffix(".npy") for n in archive.namelist()[:5]) or "nothing"
                raise DatasetFormatError(f"{path}: no array 'arr_0' (it holds {names}); {fix}") from None
            with archive.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise DatasetFormatError(f"{path}: arr_0 is a .npy file of version {version}; {fix}")
                header_bytes = fh.tell()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
        if isinstance(exc, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: not a readable npz file ({exc}); {fix}") from exc
    if dtype.hasobject:
        raise DatasetFormatError(f"{path}: arr_0 is a pickled object array, which is never loaded; "
                                 f"expected {want}; {fix}")
    plain = dtype == np.uint8 if images else dtype.kind in "ui"
    if not plain or len(shape) != (3 if images else 1) or (images and tuple(shape[1:]) != (28, 28)):
        raise DatasetFormatError(f"{path}: arr_0 is {dtype} {tuple(shape)}, expected {want}; {fix}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise DatasetFormatError(f"{path}: arr_0 declares {nbytes:,} bytes, more than the {max_bytes:,} "
                                 f"any file of these datasets holds; {fix}")
    if member.file_size != header_bytes + nbytes:
        raise DatasetFormatError(f"{path}: arr_0's header says {tuple(shape)} but the member holds "
                                 f"{member.file_size - header_bytes:,} bytes of data; {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz["arr_0"])
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as exc:
        raise DatasetFormatError(f"{path}: cannot read arr_0 ({exc}); {fix}") from exc


def _read_npz_pair(name: str, folder: Path, part: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    files = _NPZ_FILES[name]
    images = _read_npz_array(folder / files[f"{part}_images"], images=True)
    labels = _read_npz_array(folder / files[f"{part}_labels"], images=False)
    _check_pair(folder / files[f"{part}_labels"], part, images, labels, num_classes)
    return np.ascontiguousarray(images)[:, None], labels.astype(np.int64)


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: 3,073-byte records (label byte, then 3,072 pixel bytes)."""
    fix = f"download it again: {_CIFAR_FETCH}"
    try:
        size = path.stat().st_size
        if size == 0 or size % _CIFAR_RECORD or size > _CIFAR_BATCH_IMAGES * _CIFAR_RECORD:
            raise DatasetFormatError(f"{path}: {size:,} bytes is not 1 to {_CIFAR_BATCH_IMAGES:,} whole "
                                     f"3,073-byte records; {fix}")
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc}); {fix}") from exc
    if len(raw) != size:  # changed while we read it
        raise DatasetFormatError(f"{path}: {len(raw):,} bytes read, {size:,} expected; {fix}")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= 10:
        bad = int(np.argmax(labels >= 10))
        raise DatasetFormatError(f"{path}: record {bad} has label {labels[bad]}, outside 0..9; {fix}")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


class _Refused(pickle.UnpicklingError):
    """The pickle asked for something a CIFAR-10 batch never needs; nothing it names was run."""


class _Inert:
    """Base of the stand-ins a CIFAR pickle may name. __slots__ and __setstate__ keep the pickle's BUILD
    from setting attributes on them; a stand-in that is not a "state" refuses BUILD altogether."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"the pickle sets the state of {type(self).__name__}, which a CIFAR-10 batch never does")


class _NdarrayName(_Inert):
    """`numpy.ndarray` as a name (an argument of `_reconstruct`); not callable, not a class."""

    __slots__ = ()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise _Refused(f"expected a string, got {type(value).__name__}")


class _DtypeState:
    """What `numpy.dtype("u1", ...)` + BUILD leave: a uint8 dtype (the only one CIFAR's data uses)."""

    __slots__ = ("built",)

    def __init__(self) -> None:
        self.built = False

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags): a plain u1 has no
        # subarray, names or fields.
        if self.built or not isinstance(state, tuple) or len(state) < 5 or state[2:5] != (None, None, None):
            raise _Refused(f"unexpected dtype state {str(state)[:80]}")
        if _text(state[1]) not in ("|", "<", ">", "="):
            raise _Refused(f"unexpected byte order {state[1]!r}")
        self.built = True


class _ArrayState:
    """What `_reconstruct(ndarray, (0,), "b")` + BUILD leave: a uint8 array made by np.frombuffer."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("unexpected ndarray state")
        version, shape, dtype, fortran, raw = state
        if version != 1 or not isinstance(dtype, _DtypeState) or not dtype.built or fortran not in (0, 1):
            raise _Refused("unexpected ndarray state (version, dtype or order)")
        if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape):
            raise _Refused(f"bad array shape {str(shape)[:80]}")
        if not isinstance(raw, (bytes, bytearray)):
            raise _Refused("array data is not raw bytes")
        count = math.prod(shape)  # Python ints: no overflow on absurd shapes
        if count != len(raw):
            raise DatasetFormatError(f"array of shape {shape} needs {count:,} bytes, the file holds {len(raw):,}")
        flat = np.frombuffer(bytes(raw), dtype=np.uint8)
        self.array = flat.reshape(shape, order="F" if fortran else "C")


class _Reconstruct(_Inert):
    """`numpy.core.multiarray._reconstruct`: only `(ndarray, (0,), "b")`, numpy's own empty start."""

    __slots__ = ()

    def __call__(self, *args: Any) -> _ArrayState:
        if len(args) != 3 or not isinstance(args[0], _NdarrayName) or args[1] != (0,) or _text(args[2]) != "b":
            raise _Refused("_reconstruct called with arguments numpy never writes")
        return _ArrayState()


class _Dtype(_Inert):
    """`numpy.dtype`: only "u1" (uint8), the dtype of CIFAR-10's pixels."""

    __slots__ = ()

    def __call__(self, *args: Any) -> _DtypeState:
        if not args or len(args) > 3 or _text(args[0]) != "u1":
            raise _Refused(f"a numpy dtype other than uint8 ({str(args[:1])[:40]}); CIFAR-10's pixels are uint8")
        return _DtypeState()


_CIFAR_PICKLE_NAMES = {
    ("numpy.core.multiarray", "_reconstruct"): _Reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _Reconstruct,
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): _Dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """Python's restricted unpickler: every name a pickle mentions goes through find_class, which
    gives back an inert stand-in for the four names above and refuses every other."""

    def find_class(self, module: str, name: str) -> Any:
        maker = _CIFAR_PICKLE_NAMES.get((module, name))
        if maker is None:
            raise _Refused(f"the pickle asks for {module}.{name}; a CIFAR-10 batch only names numpy's array "
                           "constructors, so it was refused and nothing it names was run")
        return maker()  # a fresh one each time: nothing a pickle does to it outlives the load

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("the pickle asks for a persistent object")


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python batch (`data_batch_N`, `test_batch`), through `_CifarUnpickler`."""
    fix = (f"download CIFAR-10 again: {_CIFAR_FETCH} (the binary version, read in preference to "
           f"{_CIFAR_PY_DIR}, needs no pickle)")
    try:
        size = path.stat().st_size
        if not 0 < size <= _CIFAR_PY_MAX_BYTES:
            raise DatasetFormatError(f"{path}: {size:,} bytes is not the size of a CIFAR-10 python batch "
                                     f"(about 31 MB, at most {_CIFAR_PY_MAX_BYTES:,}); {fix}")
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc}); {fix}") from exc
    try:
        # Count opcodes first (genops parses, builds nothing): each one can make at most one object,
        # so this bounds the memory a 40 MB pickle can ask for.
        for ops, _ in enumerate(pickletools.genops(raw), start=1):
            if ops > _CIFAR_PY_MAX_OPCODES:
                raise _Refused(f"more than {_CIFAR_PY_MAX_OPCODES:,} pickle opcodes (a batch has about 30,000)")
        # encoding="bytes": Python 2's strings (the keys, the raw pixels) come back as bytes.
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise DatasetFormatError(f"{path}: refused: {exc}; {fix}") from exc
    except DatasetFormatError as exc:
        raise DatasetFormatError(f"{path}: {exc}; {fix}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError, RecursionError, UnicodeDecodeError, struct.error) as exc:
        raise DatasetFormatError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
                                 f"{fix}") from exc
    return _cifar_batch_arrays(path, batch, fix)


def _cifar_batch_arrays(path: Path, batch: Any, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Check an unpickled batch dict and turn it into (images (N, 3, 32, 32), labels (N,))."""
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; {fix}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, _ArrayState) or data.array is None:
        raise DatasetFormatError(f"{path}: 'data' is missing or not a uint8 array; {fix}")
    array = data.array
    if array.ndim != 2 or array.shape[1] != 3072 or not 0 < array.shape[0] <= _CIFAR_BATCH_IMAGES:
        raise DatasetFormatError(f"{path}: 'data' has shape {array.shape}, expected (N, 3072) with N from 1 to "
                                 f"{_CIFAR_BATCH_IMAGES:,}; {fix}")
    if not isinstance(labels, list):
        kind = ("missing" if labels is None else "a numpy array" if isinstance(labels, _ArrayState)
                else f"of type {type(labels).__name__}")
        raise DatasetFormatError(f"{path}: 'labels' is {kind}, not a list of integers; {fix}")
    if len(labels) != array.shape[0]:
        raise DatasetFormatError(f"{path}: {len(labels):,} labels for {array.shape[0]:,} images; {fix}")
    for i, value in enumerate(labels):
        if type(value) is not int or not 0 <= value <= 9:
            raise DatasetFormatError(f"{path}: label {i} is {repr(value)[:40]}, not an integer in 0..9; {fix}")
    return np.ascontiguousarray(array).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _read_cifar(folder: Path, part: str, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    names = _CIFAR_TRAIN if part == "train" else [_CIFAR_TEST]
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


def _read_photos() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's sample photographs as 32×32 patches: a centred grid of whole patches per photo,
    row-major, china first; label = the photograph's position in `_PHOTO_FILES`."""
    files = _photo_files()
    if files is None:
        raise _missing(DATASETS["photos"], data_root())
    from PIL import Image  # read directly: importing sklearn.datasets costs ~2 s per process

    patches, labels = [], []
    for label, path in enumerate(files):
        try:
            with Image.open(path) as photo:
                rgb = np.asarray(photo.convert("RGB"))  # (H, W, 3)
        except OSError as exc:
            raise DatasetFormatError(f"{path}: cannot read ({exc}); reinstall scikit-learn") from exc
        rows, cols = rgb.shape[0] // _PATCH, rgb.shape[1] // _PATCH
        if rows < 1 or cols < 1:
            raise DatasetFormatError(f"{path}: {rgb.shape[1]}×{rgb.shape[0]} is smaller than one patch")
        top, left = (rgb.shape[0] - rows * _PATCH) // 2, (rgb.shape[1] - cols * _PATCH) // 2
        grid = rgb[top : top + rows * _PATCH, left : left + cols * _PATCH]
        # (rows, y, cols, x, channel) -> (rows, cols, channel, y, x): one (3, 32, 32) patch per cell
        grid = grid.reshape(rows, _PATCH, cols, _PATCH, 3).transpose(0, 2, 4, 1, 3)
        patches.append(grid.reshape(-1, 3, _PATCH, _PATCH))
        labels.append(np.full(rows * cols, label, dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(patches)), np.concatenate(labels)


_BUNDLED_READERS = {"digits": _read_digits, "photos": _read_photos}


@functools.lru_cache(maxsize=4)
def _official(name: str, root: str, part: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, folder) of an official file set; cached (train then val read the same files)."""
    info = DATASETS[name]
    if info.kind == "sklearn":
        images, labels = _BUNDLED_READERS[name]()
        return images, labels, "sklearn"
    found = _find(info, Path(root))
    if found is None:
        raise _missing(info, Path(root))
    folder, layout = found
    if layout == "idx":
        images, labels = _read_idx_pair(folder, part, info.num_classes)
    elif layout == "npz":
        images, labels = _read_npz_pair(name, folder, part, info.num_classes)
    else:
        images, labels = _read_cifar(folder, part, binary=layout == "cifar-bin")
    if images.shape[1:] != info.image_shape:
        raise DatasetFormatError(f"{folder}: images are {images.shape[1:]}, expected {info.image_shape}; "
                                 "download them again")
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


def _download_cifar10(root: Path) -> None:
    """Fetch CIFAR-10's binary archive, check its published MD5, and unpack its six batch files.

    The archive is fetched to a temporary name and renamed only once its checksum matches; from it only
    the six `.bin` members are written (each to a temporary name, then renamed), after checking that each
    is a regular file of whole records, so nothing else in the archive reaches the disk.
    """
    from torchvision.datasets.utils import calculate_md5, check_integrity, download_url

    info = DATASETS["cifar10"]
    archive = root / "cifar-10-binary.tar.gz"
    if not check_integrity(str(archive), CIFAR10_BINARY_MD5):
        partial = root / f".{archive.name}.part-{os.getpid()}"
        partial.unlink(missing_ok=True)
        try:
            try:
                download_url(CIFAR10_BINARY_URL, str(root), filename=partial.name)
            except (OSError, RuntimeError) as exc:  # URLError is an OSError
                raise DatasetMissing(f"could not download {CIFAR10_BINARY_URL}: {exc}\n"
                                     f"To fix:\n{_fix(info, root)}") from exc
            got = calculate_md5(str(partial))
            if got != CIFAR10_BINARY_MD5:
                raise DatasetMissing(f"{CIFAR10_BINARY_URL} failed its checksum (MD5 {got}, the published one is "
                                     f"{CIFAR10_BINARY_MD5}); nothing was kept. Try again later, or\n"
                                     f"{_fix(info, root)}")
            os.replace(partial, archive)
        finally:
            partial.unlink(missing_ok=True)
    _unpack_cifar10(archive, root / _CIFAR_BIN_DIR)


def _unpack_cifar10(archive: Path, folder: Path) -> None:
    """Write the archive's six batch files into `folder`, read in one pass over the archive."""
    fix = f"delete {archive} and run {_CIFAR_FETCH} again"
    wanted = {f"{_CIFAR_BIN_DIR}/{n}.bin": f"{n}.bin" for n in [*_CIFAR_TRAIN, _CIFAR_TEST]}
    written: set[str] = set()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:  # in archive order: no seeking back through the gzip stream
                member_name = member.name.removeprefix("./")
                if member_name not in wanted or member_name in written:
                    continue
                if not member.isreg():
                    raise DatasetFormatError(f"{archive}: {member_name} is not a regular file; {fix}")
                if not 0 < member.size <= _CIFAR_BATCH_IMAGES * _CIFAR_RECORD or member.size % _CIFAR_RECORD:
                    raise DatasetFormatError(f"{archive}: {member_name} is {member.size:,} bytes, not 1 to "
                                             f"{_CIFAR_BATCH_IMAGES:,} whole 3,073-byte records; {fix}")
                filename = wanted[member_name]
                tmp = folder / f".{filename}.tmp-{os.getpid()}"
                try:
                    with tar.extractfile(member) as source, tmp.open("wb") as out:  # type: ignore[union-attr]
                        while chunk := source.read(1 << 20):
                            out.write(chunk)
                    if tmp.stat().st_size != member.size:
                        raise DatasetFormatError(f"{archive}: {member_name} is cut short; {fix}")
                    os.replace(tmp, folder / filename)
                finally:
                    tmp.unlink(missing_ok=True)
                written.add(member_name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetFormatError(f"{archive}: cannot unpack ({exc}); {fix}") from exc
    missing = sorted(set(wanted) - written)
    if missing:
        raise DatasetFormatError(f"{archive}: has no {', '.join(missing)}; {fix}")


def download(name: str, root: Path | None = None) -> Path:
    """Fetch a dataset into `root`, checksummed. Needs internet.

    MNIST, Fashion-MNIST, KMNIST: torchvision's IDX archives, URLs and MD5s, into torchvision's layout.
    CIFAR-10: the binary archive and its published MD5, unpacked to `<root>/cifar-10-batches-bin`.
    The bundled ones (digits, photos): nothing to fetch; returns where they are.
    """
    info = dataset_info(name)
    root = Path(root) if root is not None else data_root()
    if info.kind == "sklearn":
        where = _bundled_where(name)
        if where is None:
            raise _missing(info, root)
        return Path(where)
    root.mkdir(parents=True, exist_ok=True)
    if info.kind == "idx":
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_and_extract_archive

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
        _download_cifar10(root)
    _official.cache_clear()
    folder = _locate(info, root)
    if folder is None:
        raise _missing(info, root)
    return folder


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.datasets", description="Datasets: status and download.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="show which datasets are found, in which layout, and the fix (default)")
    dl = sub.add_parser("download", help="download a dataset (needs internet; MD5-checked)")
    dl.add_argument("name", choices=DATASET_NAMES)
    dl.add_argument("--root", type=Path, default=None, help=f"data root (default {data_root()})")
    args = parser.parse_args(argv)
    if args.command == "download":
        try:
            where = download(args.name, args.root)
        except (DatasetMissing, DatasetFormatError, OSError, RuntimeError) as exc:
            print(f"download failed: {exc}", file=sys.stderr)
            return 1
        print(where)
        return 0
    print(f"data root: {data_root()}")
    for row in dataset_status():
        mark = "found  " if row["found"] else "missing"
        print(f"{mark} {row['name']:<14} {row['where'] or ''}" + (f"   ({row['layout']})" if row["layout"] else ""))
        if not row["found"]:
            print("        " + row["fix"].replace("\n", "\n        "))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
