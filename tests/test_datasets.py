"""Datasets: small archives in each dataset's original format, written here and read through the real
code; the real Debian Fashion-MNIST; the safe reader of CIFAR-10's python pickles."""

from __future__ import annotations

import gzip
import pickle
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from core import datasets
from core.datasets import DATASET_NAMES, DatasetFormatError, DatasetMissing, dataset_status, load_split
from core.safe_pickle import UnsafePickleError, load_plain

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------------
# Writers of the original formats


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, n_train: int, n_test: int, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test).astype(np.uint8),
    }
    for stem, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as fh:
                fh.write(data)
        else:
            (folder / stem).write_bytes(data)
    return arrays


def _cifar_arrays(n: int) -> tuple[np.ndarray, list[int]]:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in RNG.integers(0, 10, n)]


def py2_cifar_pickle(data: np.ndarray, labels: list[int], batch_label: str) -> bytes:
    """The byte stream Python 2's cPickle (protocol 2) wrote for CIFAR-10's batches."""

    def s(text: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(text)]) + text

    n = data.shape[0]
    out = [b"\x80\x02}q\x01(", s(b"data"), b"q\x02", b"cnumpy.core.multiarray\n_reconstruct\nq\x03",
           b"cnumpy\nndarray\nq\x04", b"K\x00\x85", s(b"b"), b"\x87Rq\x05(K\x01",
           b"M" + struct.pack("<H", n) + b"M\x00\x0c\x86", b"cnumpy\ndtype\nq\x06", s(b"u1"), b"K\x00K\x01\x87Rq\x07",
           b"(K\x03", s(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb", b"\x89",
           b"T" + struct.pack("<I", data.nbytes) + data.tobytes(), b"tb",
           s(b"labels"), b"]q\x08("]
    out += [b"K" + bytes([v]) for v in labels]
    out += [b"e", s(b"batch_label"), s(batch_label.encode()), s(b"filenames"), b"](",
            *[s(f"img_{i}.png".encode()) for i in range(n)], b"eu."]
    return b"".join(out)


def write_cifar(root: Path, per_batch: int, kind: str) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / ("cifar-10-batches-bin" if kind == "bin" else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    written = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data, labels = _cifar_arrays(per_batch)
        written[name] = (data, labels)
        if kind == "bin":
            records = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1)
            (folder / f"{name}.bin").write_bytes(records.tobytes())
        else:
            (folder / name).write_bytes(py2_cifar_pickle(data, labels, name))
    return written


# ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def empty_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(root))
    datasets._official.cache_clear()
    yield root
    datasets._official.cache_clear()


def test_status_lists_every_dataset_with_a_fix(empty_root):
    rows = {r["name"]: r for r in dataset_status()}
    assert tuple(rows) == DATASET_NAMES
    assert set(rows["mnist"]) == {"name", "title", "found", "where", "fix"}
    assert rows["digits"]["found"] and rows["digits"]["where"].endswith("digits.csv.gz")
    assert not rows["mnist"]["found"] and rows["mnist"]["where"] is None
    assert "python -m core.datasets download mnist" in rows["mnist"]["fix"]
    assert "apt-get install dataset-fashion-mnist" in rows["fashion_mnist"]["fix"]
    assert "python -m core.datasets download cifar10" in rows["cifar10"]["fix"]


def test_missing_dataset_says_where_it_looked_and_the_fix(empty_root):
    with pytest.raises(DatasetMissing) as info:
        load_split("kmnist", "train")
    msg = str(info.value)
    assert str(empty_root / "KMNIST" / "raw") in msg and str(empty_root / "kmnist") in msg
    assert "python -m core.datasets download kmnist" in msg
    with pytest.raises(DatasetMissing, match="cifar-10-batches-bin"):
        load_split("cifar10", "test")


@pytest.mark.parametrize(("name", "folder", "gz"), [
    ("mnist", "MNIST/raw", True), ("kmnist", "KMNIST/raw", True), ("fashion_mnist", "FashionMNIST/raw", True),
    ("mnist", "mnist", False),
])
def test_idx_archives_load_with_fixed_disjoint_splits(empty_root, name, folder, gz):
    arrays = write_idx_dataset(empty_root / folder, n_train=120, n_test=30, gz=gz)
    train, val, test = (load_split(name, s) for s in ("train", "val", "test"))
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    assert train.labels.dtype == torch.int64
    assert (len(train), len(val), len(test)) == (110, 10, 30)  # validation: 5,000/60,000 of the train file
    assert set(train.index.tolist()).isdisjoint(val.index.tolist())
    assert sorted(train.index.tolist() + val.index.tolist()) == list(range(120))
    src = arrays["train-images-idx3-ubyte"]
    assert np.array_equal(val.images[:, 0].numpy(), src[val.index.numpy()])
    assert np.array_equal(train.labels.numpy(), arrays["train-labels-idx1-ubyte"][train.index.numpy()])
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert train.classes == list(datasets.DATASETS[name].classes) and len(train.classes) == 10
    again = load_split(name, "val")
    assert torch.equal(again.index, val.index)  # the split is fixed
    limited = load_split(name, "train", limit=7)
    assert torch.equal(limited.index, train.index[:7])
    assert datasets.found_split_sizes(name, 7) == {"train": 7, "val": 10, "test": 30}


def test_damaged_idx_file_is_reported(empty_root):
    write_idx_dataset(empty_root / "MNIST" / "raw", 40, 10)
    path = empty_root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    with gzip.open(path, "wb") as fh:
        fh.write(data[:-100])
    with pytest.raises(DatasetFormatError, match="download it again"):
        load_split("mnist", "train")


@pytest.mark.parametrize("kind", ["bin", "py"])
def test_cifar10_archives_load(empty_root, kind):
    written = write_cifar(empty_root, per_batch=12, kind=kind)
    train, val, test = (load_split("cifar10", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (54, 6, 12)
    assert train.images.shape[1:] == (3, 32, 32)
    all_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    all_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    # CIFAR stores each image as 1,024 red, then green, then blue bytes, row-major.
    pos = train.index.numpy()
    assert np.array_equal(train.images.numpy().reshape(-1, 3072), all_train[pos])
    assert np.array_equal(train.images[:, 0].numpy(), all_train[pos, :1024].reshape(-1, 32, 32))
    assert np.array_equal(train.labels.numpy(), all_labels[pos])
    assert np.array_equal(test.images.numpy().reshape(-1, 3072), written["test_batch"][0])
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"


def test_py2_pickle_writer_is_a_real_pickle():
    data, labels = _cifar_arrays(3)
    stream = py2_cifar_pickle(data, labels, "x")
    ops = [op.name for op, _, _ in pickletools.genops(stream)]  # parses, runs nothing
    assert ops[0] == "PROTO" and ops[-1] == "STOP" and "BINSTRING" in ops


def test_cifar_python_batch_that_runs_code_is_refused(empty_root, tmp_path):
    write_cifar(empty_root, per_batch=4, kind="py")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (empty_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DatasetFormatError, match="only plain data"):
        load_split("cifar10", "train")
    assert not marker.exists()


def test_safe_pickle_reads_plain_data_of_every_protocol():
    value = {b"data": np.arange(24, dtype=np.uint8).reshape(4, 6), "labels": [1, 2, 300, -5, 2**70],
             "f": np.ones((2, 3), dtype="<f4", order="F"), "t": (1.5, None, True, "é")}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        got = load_plain(pickle.dumps(value, protocol=protocol))
        assert np.array_equal(got[b"data"], value[b"data"]) and got[b"data"].dtype == np.uint8
        assert got["labels"] == value["labels"] and got["t"] == value["t"]
        assert np.array_equal(got["f"], value["f"]) and got["f"].dtype == np.float32
    for bad in (np.array([None, 1], dtype=object), Path("x"), print):
        with pytest.raises(UnsafePickleError):
            load_plain(pickle.dumps(bad, protocol=2))
    with pytest.raises(UnsafePickleError):
        load_plain(b"\x80\x02}q\x01(")  # truncated


def test_digits_splits_match_scikit_learn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    train, val, test = (load_split("digits", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1257, 180, 360)
    assert train.images.shape[1:] == (1, 8, 8)
    every = torch.cat([train.index, val.index, test.index]).sort().values
    assert torch.equal(every, torch.arange(1797))
    expected = np.rint(ref.images[val.index.numpy()] * 255 / 16).astype(np.uint8)
    assert np.array_equal(val.images[:, 0].numpy(), expected)
    assert np.array_equal(test.labels.numpy(), ref.target[test.index.numpy()])


@pytest.mark.skipif(not (datasets.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (scripts/system-packages.sh)")
def test_real_debian_fashion_mnist(empty_root):
    rows = {r["name"]: r for r in dataset_status()}
    assert rows["fashion_mnist"]["where"] == str(datasets.DEBIAN_FASHION_MNIST)
    val = load_split("fashion_mnist", "val")
    test = load_split("fashion_mnist", "test")
    train = load_split("fashion_mnist", "train", limit=2000)
    assert (len(val), len(test), len(train)) == (5000, 10000, 2000)
    assert datasets.found_split_sizes("fashion_mnist") == {"train": 55000, "val": 5000, "test": 10000}
    assert test.labels.bincount().tolist() == [1000] * 10  # the official test set is balanced
    assert set(train.index.tolist()).isdisjoint(val.index.tolist())
    counts = val.labels.bincount(minlength=10)
    assert counts.min() > 400 and counts.max() < 600  # a random carve-out, roughly balanced
    assert 60 < test.images.float().mean().item() < 85  # mostly dark background, bright garments
    assert val.classes[9] == "Ankle boot"


def test_command_line_status_and_digits_download(empty_root, capsys):
    assert datasets._main([]) == 0
    out = capsys.readouterr().out
    assert f"data root: {empty_root}" in out and "found   digits" in out
    assert "missing cifar10" in out and "python -m core.datasets download cifar10" in out
    assert datasets._main(["download", "digits"]) == 0  # bundled: nothing to fetch
    assert capsys.readouterr().out.strip().endswith("digits.csv.gz")


def test_download_fetches_idx_archives_over_http_and_checks_them(empty_root, tmp_path, monkeypatch):
    """`download` against a real local HTTP server serving archives in the original format: the files
    land in torchvision's layout and load; a bad checksum or a dead mirror is refused with the fix."""
    import functools
    import hashlib
    import http.server
    import threading

    import torchvision.datasets as tvd

    served = tmp_path / "mirror"
    arrays = write_idx_dataset(served, n_train=40, n_test=12)
    resources = [(f"{stem}.gz", hashlib.md5((served / f"{stem}.gz").read_bytes()).hexdigest()) for stem in arrays]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setattr(tvd.KMNIST, "mirrors", ["http://127.0.0.1:9/", url])  # the first one is dead
        monkeypatch.setattr(tvd.KMNIST, "resources", resources)
        folder = datasets.download("kmnist", empty_root)
        assert folder == empty_root / "KMNIST" / "raw"
        test = load_split("kmnist", "test")
        assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
        assert not (empty_root / "KMNIST" / "processed").exists()  # nothing for torch.load to meet later
        monkeypatch.setattr(tvd.MNIST, "mirrors", [url])
        monkeypatch.setattr(tvd.MNIST, "resources", [(name, "0" * 32) for name, _ in resources])
        with pytest.raises(DatasetMissing, match=r"could not download train-images-idx3-ubyte\.gz"):
            datasets.download("mnist", empty_root)
    finally:
        server.shutdown()
        server.server_close()

