"""KMNIST's official npz files (written here in that format and read through the real code, damaged ones
refused with the file and the fix), and the always-there photo patches cut from scikit-learn's two
sample photographs."""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_datasets import empty_root, mnist_like_arrays
from test_datasets_cifar import _Reduce

from core import datasets
from core.datasets import DatasetFormatError, dataset_status, load_split

__all__ = ["empty_root"]  # the fixture, shared with test_datasets.py

NPZ = {"train-images-idx3-ubyte": "kmnist-train-imgs.npz", "train-labels-idx1-ubyte": "kmnist-train-labels.npz",
       "t10k-images-idx3-ubyte": "kmnist-test-imgs.npz", "t10k-labels-idx1-ubyte": "kmnist-test-labels.npz"}


def write_kmnist_npz(folder: Path, n_train: int, n_test: int, compressed: bool = True) -> dict[str, np.ndarray]:
    """The four files rois-codh/kmnist publishes: one array each, saved positionally (key `arr_0`)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {NPZ[stem]: array for stem, array in mnist_like_arrays(n_train, n_test).items()}
    for name, array in arrays.items():
        (np.savez_compressed if compressed else np.savez)(folder / name, array)
    return arrays


@pytest.mark.parametrize(("folder", "compressed"), [("kmnist", True), ("KMNIST/raw", False)])
def test_kmnist_official_npz_files_load_with_fixed_splits(empty_root, folder, compressed):
    arrays = write_kmnist_npz(empty_root / folder, n_train=120, n_test=30, compressed=compressed)
    with np.load(empty_root / folder / "kmnist-train-imgs.npz") as npz:
        assert list(npz.keys()) == ["arr_0"]  # the official key
    row = {r["name"]: r for r in dataset_status()}["kmnist"]
    assert row["found"] and row["where"] == str(empty_root / folder) and row["layout"] == "the official npz files"
    train, val, test = (load_split("kmnist", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (110, 10, 30)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    assert sorted(train.index.tolist() + val.index.tolist()) == list(range(120))
    assert np.array_equal(val.images[:, 0].numpy(), arrays["kmnist-train-imgs.npz"][val.index.numpy()])
    assert np.array_equal(train.labels.numpy(), arrays["kmnist-train-labels.npz"][train.index.numpy()])
    assert np.array_equal(test.images[:, 0].numpy(), arrays["kmnist-test-imgs.npz"])
    assert np.array_equal(test.labels.numpy(), arrays["kmnist-test-labels.npz"])
    assert test.classes[0] == "o" and test.classes[9] == "wo"
    datasets._official.cache_clear()
    assert torch.equal(load_split("kmnist", "val").index, val.index)  # same split as from IDX files


def _npy_member(shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    """A .npy member whose header states `shape`/`dtype` whatever `data` holds."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue() + data  # the header writer puts the magic and version first


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return out.getvalue()


def _saved(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, *arrays.pop("positional", []), **arrays)
    return out.getvalue()


N = 40
NPZ_DAMAGE = {
    "float images": ("kmnist-train-imgs.npz", _saved(positional=[np.zeros((N, 28, 28), np.float32)]),
                     "arr_0 is float32 (40, 28, 28), expected uint8 images (N, 28, 28)"),
    "wrong image shape": ("kmnist-train-imgs.npz", _saved(positional=[np.zeros((N, 28, 27), np.uint8)]),
                          "arr_0 is uint8 (40, 28, 27), expected uint8 images"),
    "flat images": ("kmnist-train-imgs.npz", _saved(positional=[np.zeros((N, 784), np.uint8)]),
                    "arr_0 is uint8 (40, 784)"),
    "2-D labels": ("kmnist-train-labels.npz", _saved(positional=[np.zeros((N, 1), np.uint8)]),
                   "arr_0 is uint8 (40, 1), expected integer labels (N,)"),
    "float labels": ("kmnist-train-labels.npz", _saved(positional=[np.zeros(N, np.float64)]),
                     "arr_0 is float64 (40,), expected integer labels"),
    "no arr_0": ("kmnist-train-imgs.npz", _saved(images=np.zeros((N, 28, 28), np.uint8)),
                 "no array 'arr_0' (it holds images)"),
    "not a zip": ("kmnist-train-imgs.npz", b"\x93NUMPY" + bytes(200), "not a readable npz file"),
    "absurd header": ("kmnist-train-imgs.npz", _zip({"arr_0.npy": _npy_member((1_000_000, 28, 28), "|u1", bytes(99))}),
                      "arr_0 declares 784,000,000 bytes, more than the 67,108,864"),
    "header and data differ": ("kmnist-train-imgs.npz", _zip({"arr_0.npy": _npy_member((N, 28, 28), "|u1", bytes(99))}),
                               "arr_0's header says (40, 28, 28) but the member holds 99 bytes"),
    "label 10": ("kmnist-train-labels.npz", _saved(positional=[np.full(N, 10, np.uint8)]),
                 "train labels outside 0..9"),
    "labels and images differ": ("kmnist-train-labels.npz", _saved(positional=[np.zeros(N - 1, np.uint8)]),
                                 "train images (40, 28, 28) and labels (39,) do not match"),
}


@pytest.mark.parametrize("damage", [*NPZ_DAMAGE, "truncated"])
def test_damaged_kmnist_npz_names_the_file_and_the_fix(empty_root, damage):
    folder = empty_root / "kmnist"
    write_kmnist_npz(folder, N, 10)
    if damage == "truncated":
        name, expected = "kmnist-train-imgs.npz", "not a readable npz file"
        (folder / name).write_bytes((folder / name).read_bytes()[:-300])
    else:
        name, payload, expected = NPZ_DAMAGE[damage]
        (folder / name).write_bytes(payload)
    with pytest.raises(DatasetFormatError) as info:
        load_split("kmnist", "train")
    msg = str(info.value)
    assert expected in msg and str(folder / name) in msg and "again" in msg, msg


def test_a_pickled_object_array_in_an_npz_is_refused_and_nothing_runs(empty_root, tmp_path):
    folder = empty_root / "kmnist"
    write_kmnist_npz(folder, N, 10)
    marker = tmp_path / "pwned"
    hostile = np.array([_Reduce(Path.touch, marker)] * N, dtype=object)
    np.savez(folder / "kmnist-train-labels.npz", hostile)  # np.save pickles object arrays
    with np.load(folder / "kmnist-train-labels.npz", allow_pickle=True) as npz:  # it is real: loading it runs it
        npz["arr_0"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DatasetFormatError, match="arr_0 is a pickled object array, which is never loaded"):
        load_split("kmnist", "train")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# Photo patches


def _photo(name: str) -> Image.Image:
    base = Path(next(iter(importlib.util.find_spec("sklearn").submodule_search_locations)))
    return Image.open(base / "datasets" / "images" / name).convert("RGB")


def test_photo_patches_are_always_there_with_fixed_disjoint_splits(empty_root):
    row = {r["name"]: r for r in dataset_status()}["photos"]
    assert row["found"] and row["where"].endswith(str(Path("sklearn", "datasets", "images")))
    info = datasets.dataset_info("photos")
    assert info.title == "Photo patches (scikit-learn's two sample photos, 32×32 colour)"
    assert info.classes == ("china", "flower") and info.image_shape == (3, 32, 32)
    train, val, test = (load_split("photos", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (364, 52, 104)  # 2 × 13 × 20 patches, 10 % / 20 % carved
    assert datasets.split_sizes("photos") == datasets.found_split_sizes("photos") == {"train": 364, "val": 52,
                                                                                        "test": 104}
    for part in (train, val, test):
        assert part.images.dtype == torch.uint8 and part.images.shape[1:] == (3, 32, 32)
        assert part.labels.dtype == torch.int64 and set(part.labels.tolist()) == {0, 1}
        assert torch.equal(part.labels, (part.index >= 260).long())  # china's 260 patches first, then flower's
    every = torch.cat([train.index, val.index, test.index])
    assert torch.equal(every.sort().values, torch.arange(520))  # no overlap, nothing left out
    datasets._official.cache_clear()
    again = load_split("photos", "val")
    assert torch.equal(again.index, val.index) and torch.equal(again.images, val.images)  # deterministic
    assert train.images.float().std(dim=(0, 2, 3)).min() > 20  # real photographs, not flat patches
    chroma = (train.images[:, 0].float() - train.images[:, 2].float()).abs().mean()
    assert chroma > 10  # colour: red and blue differ


def test_photo_patches_are_the_photographs_cut_on_a_centred_grid(empty_root):
    """Each patch equals Pillow's own crop of its photograph: 13 rows × 20 columns of 32×32, the
    427-pixel height centred (5 pixels off the top), row-major, china then flower."""
    test = load_split("photos", "test")
    photos = [_photo("china.jpg"), _photo("flower.jpg")]
    assert all(p.size == (640, 427) for p in photos)
    for k in range(0, len(test), 13):
        position = int(test.index[k])
        photo, cell = divmod(position, 260)
        r, c = divmod(cell, 20)
        box = (c * 32, 5 + r * 32, c * 32 + 32, 5 + r * 32 + 32)
        expected = np.asarray(photos[photo].crop(box)).transpose(2, 0, 1)
        assert np.array_equal(test.images[k].numpy(), expected), position
