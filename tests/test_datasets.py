"""Datasets: small archives in each dataset's original format, written here and read through the real
code; the real Debian Fashion-MNIST; downloads from a real local HTTP server.

The writers of the original formats live here and are shared with test_datasets_cifar.py and
test_datasets_npz_photos.py."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import pickletools
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core import datasets
from core.datasets import DATASET_NAMES, DatasetFormatError, DatasetMissing, dataset_status, load_split

RNG = np.random.default_rng(1234)
CIFAR_NAMES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


# ---------------------------------------------------------------------------------------------------
# Writers of the original formats


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_like_arrays(n_train: int, n_test: int) -> dict[str, np.ndarray]:
    return {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test).astype(np.uint8),
    }


def write_idx_dataset(folder: Path, n_train: int, n_test: int, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = mnist_like_arrays(n_train, n_test)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as fh:
                fh.write(data)
        else:
            (folder / stem).write_bytes(data)
    return arrays


def cifar_arrays(n: int) -> tuple[np.ndarray, list[int]]:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in RNG.integers(0, 10, n)]


def py2_cifar_pickle(data: np.ndarray, labels: list[int], batch_label: str, *, rows: int | None = None) -> bytes:
    """The byte stream Python 2's cPickle (protocol 2) wrote for CIFAR-10's batches.

    rows: the row count written in the array's state (default: the real one), to forge absurd shapes.
    """

    def s(text: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(text)]) + text

    n = data.shape[0] if rows is None else rows
    out = [b"\x80\x02}q\x01(", s(b"data"), b"q\x02", b"cnumpy.core.multiarray\n_reconstruct\nq\x03",
           b"cnumpy\nndarray\nq\x04", b"K\x00\x85", s(b"b"), b"\x87Rq\x05(K\x01",
           b"J" + struct.pack("<i", n) + b"M\x00\x0c\x86", b"cnumpy\ndtype\nq\x06", s(b"u1"),
           b"K\x00K\x01\x87Rq\x07", b"(K\x03", s(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb", b"\x89",
           b"T" + struct.pack("<I", data.nbytes) + data.tobytes(), b"tb",
           s(b"labels"), b"]q\x08("]
    out += [b"K" + bytes([v]) for v in labels]
    out += [b"e", s(b"batch_label"), s(batch_label.encode()), s(b"filenames"), b"](",
            *[s(f"img_{i}.png".encode()) for i in range(data.shape[0])], b"eu."]
    return b"".join(out)


def cifar_records(data: np.ndarray, labels: list[int]) -> bytes:
    """Binary version: per image one label byte, then its 3,072 pixel bytes."""
    return np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1).tobytes()


def write_cifar(root: Path, per_batch: int, kind: str) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / ("cifar-10-batches-bin" if kind == "bin" else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    written = {}
    for name in CIFAR_NAMES:
        data, labels = cifar_arrays(per_batch)
        written[name] = (data, labels)
        if kind == "bin":
            (folder / f"{name}.bin").write_bytes(cifar_records(data, labels))
        else:
            (folder / name).write_bytes(py2_cifar_pickle(data, labels, name))
    return written


def write_cifar_tarball(path: Path, per_batch: int, members: dict[str, bytes | None] | None = None
                        ) -> dict[str, tuple[np.ndarray, list[int]]]:
    """`cifar-10-binary.tar.gz` as its authors pack it: a folder `cifar-10-batches-bin` holding the six
    `.bin` batches, `batches.meta.txt` and `readme.html`. `members` adds or replaces members (name ->
    bytes) or drops them (name -> None)."""
    written, payloads = {}, {}
    for name in CIFAR_NAMES:
        data, labels = cifar_arrays(per_batch)
        written[name] = (data, labels)
        payloads[f"cifar-10-batches-bin/{name}.bin"] = cifar_records(data, labels)
    payloads["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(datasets.DATASETS["cifar10"].classes).encode()
    payloads["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    payloads.update(members or {})
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-bin")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, payload in payloads.items():
            if payload is not None:
                member = tarfile.TarInfo(name)
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    return written


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving `folder`; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


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
    assert set(rows["mnist"]) == {"name", "title", "found", "where", "layout", "fix"}
    assert rows["digits"]["found"] and rows["digits"]["where"].endswith("digits.csv.gz")
    assert rows["photos"]["found"] and rows["photos"]["layout"] == "bundled with scikit-learn"
    assert not rows["mnist"]["found"] and rows["mnist"]["where"] is None and rows["mnist"]["layout"] == ""
    assert "python -m core.datasets download mnist" in rows["mnist"]["fix"]
    assert "apt-get install dataset-fashion-mnist" in rows["fashion_mnist"]["fix"]
    assert "python -m core.datasets download cifar10" in rows["cifar10"]["fix"]
    # the layouts a user may already have are named in the fix
    assert f"kmnist-train-imgs.npz, kmnist-train-labels.npz, kmnist-test-imgs.npz, kmnist-test-labels.npz into " \
           f"{empty_root / 'kmnist'}" in rows["kmnist"]["fix"]
    assert "cifar-10-binary.tar.gz" in rows["cifar10"]["fix"] and "cifar-10-batches-py" in rows["cifar10"]["fix"]
    assert "npz" not in rows["mnist"]["fix"]


def test_missing_dataset_says_where_it_looked_and_the_fix(empty_root):
    with pytest.raises(DatasetMissing) as info:
        load_split("kmnist", "train")
    msg = str(info.value)
    assert str(empty_root / "KMNIST" / "raw") in msg and str(empty_root / "kmnist") in msg
    assert "python -m core.datasets download kmnist" in msg and "kmnist-test-labels.npz" in msg
    with pytest.raises(DatasetMissing, match="cifar-10-batches-bin") as info:
        load_split("cifar10", "test")
    assert "cifar-10-binary.tar.gz" in str(info.value)


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
    assert {r["name"]: r for r in dataset_status()}[name]["layout"] == "IDX files"


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _corrupt_deflate(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # zeros in the middle of the deflate stream
    path.write_bytes(bytes(raw))


# Each damage is done to one file of an otherwise good MNIST copy; (file stem, how, expected message).
IDX_DAMAGE = {
    "truncated gz": ("train-images-idx3-ubyte", lambda p: p.write_bytes(p.read_bytes()[:-100]), "cannot read"),
    "corrupt deflate": ("train-images-idx3-ubyte", _corrupt_deflate, "cannot read"),
    "not gzip at all": ("train-images-idx3-ubyte", lambda p: p.write_bytes(b"\x00\x00\x08\x03" + bytes(100)),
                        "cannot read"),
    "data cut short": ("train-images-idx3-ubyte",
                       lambda p: p.write_bytes(_gz(gzip.decompress(p.read_bytes())[:-100])), "but the file holds"),
    "trailing data": ("train-labels-idx1-ubyte",
                      lambda p: p.write_bytes(_gz(gzip.decompress(p.read_bytes()) + b"\x01")), "more than"),
    "bad magic": ("train-labels-idx1-ubyte", lambda p: p.write_bytes(_gz(b"\x00\x00\x0d\x01" + bytes(8))),
                  "bad magic"),
    "absurd header": ("train-images-idx3-ubyte",
                      lambda p: p.write_bytes(_gz(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:4]
                                                  + struct.pack(">3I", 4_000_000, 28, 28) + bytes(100))),
                      "more than the 67,108,864"),
    "header product overflows int64": ("train-images-idx3-ubyte",  # 2**31 * 2**31 * 4 = 2**64
                                       lambda p: p.write_bytes(_gz(b"\x00\x00\x08\x03"
                                                                   + struct.pack(">3I", 2**31, 2**31, 4))),
                                       "(18,446,744,073,709,551,616 bytes), more than"),
    "label out of range": ("train-labels-idx1-ubyte",
                           lambda p: p.write_bytes(_gz(idx_bytes(np.full(40, 12, np.uint8)))), "labels outside 0..9"),
    "labels and images differ": ("train-labels-idx1-ubyte",
                                 lambda p: p.write_bytes(_gz(idx_bytes(np.zeros(39, np.uint8)))), "do not match"),
}


@pytest.mark.parametrize("damage", list(IDX_DAMAGE))
def test_damaged_idx_file_is_reported_with_the_file_and_the_fix(empty_root, damage):
    write_idx_dataset(empty_root / "MNIST" / "raw", 40, 10)
    stem, how, expected = IDX_DAMAGE[damage]
    path = empty_root / "MNIST" / "raw" / f"{stem}.gz"
    how(path)
    with pytest.raises(DatasetFormatError) as info:
        load_split("mnist", "train")
    msg = str(info.value)
    assert expected in msg and str(path) in msg and "download" in msg and "again" in msg


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
    assert np.array_equal(test.labels.numpy(), written["test_batch"][1])
    assert test.classes[0] == "airplane" and test.classes[9] == "truck"
    layout = {r["name"]: r for r in dataset_status()}["cifar10"]["layout"]
    assert layout == ("binary batches" if kind == "bin" else "python batches (restricted unpickler: runs nothing)")


def test_py2_pickle_writer_is_a_real_pickle():
    data, labels = cifar_arrays(3)
    stream = py2_cifar_pickle(data, labels, "x")
    ops = [op.name for op, _, _ in pickletools.genops(stream)]  # parses, runs nothing
    assert ops[0] == "PROTO" and ops[-1] == "STOP" and "BINSTRING" in ops
    globals_named = [arg for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL"]
    assert globals_named == ["numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"]


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


def test_command_line_status_and_bundled_download(empty_root, capsys):
    write_cifar(empty_root, per_batch=2, kind="py")
    assert datasets._main([]) == 0
    out = capsys.readouterr().out
    assert f"data root: {empty_root}" in out and "found   digits" in out
    assert f"found   cifar10        {empty_root / 'cifar-10-batches-py'}   (python batches" in out
    assert "found   photos" in out and "(bundled with scikit-learn)" in out
    assert "missing kmnist" in out and "python -m core.datasets download kmnist" in out
    assert "kmnist-train-imgs.npz" in out
    assert datasets._main(["download", "digits"]) == 0  # bundled: nothing to fetch
    assert capsys.readouterr().out.strip().endswith("digits.csv.gz")
    assert datasets._main(["download", "photos"]) == 0
    assert capsys.readouterr().out.strip().endswith("images")


def test_download_fetches_idx_archives_over_http_and_checks_them(empty_root, tmp_path, monkeypatch):
    """`download` against a real local HTTP server serving archives in the original format: the files
    land in torchvision's layout and load; a bad checksum or a dead mirror is refused with the fix."""
    import torchvision.datasets as tvd

    served = tmp_path / "mirror"
    arrays = write_idx_dataset(served, n_train=40, n_test=12)
    resources = [(f"{stem}.gz", hashlib.md5((served / f"{stem}.gz").read_bytes()).hexdigest()) for stem in arrays]
    with serve(served) as url:
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


def test_cifar10_download_is_the_binary_archive_with_its_published_md5():
    # The value on https://www.cs.toronto.edu/~kriz/cifar.html for "CIFAR-10 binary version".
    assert datasets.CIFAR10_BINARY_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert datasets.CIFAR10_BINARY_MD5 == "c32a1d4ab5d03f1284b67883e8d87530"


def test_download_cifar10_binary_archive_over_http(empty_root, tmp_path, monkeypatch):
    """The binary archive from a real local HTTP server: with the right checksum its six batches land in
    `cifar-10-batches-bin` and load, and nothing else in the archive is written; with a wrong one (the
    published MD5 against this small archive) nothing is kept; a dead server is refused with the fix."""
    served = tmp_path / "mirror"
    served.mkdir()
    archive = served / "cifar-10-binary.tar.gz"
    written = write_cifar_tarball(archive, per_batch=6,
                                  members={"../escaped.txt": b"x", "cifar-10-batches-bin/x.sh": b"x"})
    with serve(served) as url:
        monkeypatch.setattr(datasets, "CIFAR10_BINARY_URL", f"{url}cifar-10-binary.tar.gz")
        # wrong checksum: the published MD5 does not match this small archive
        with pytest.raises(DatasetMissing, match="failed its checksum") as info:
            datasets.download("cifar10", empty_root)
        assert "c32a1d4ab5d03f1284b67883e8d87530" in str(info.value)
        assert hashlib.md5(archive.read_bytes()).hexdigest() in str(info.value)
        assert sorted(p.name for p in empty_root.iterdir()) == []  # no archive, no partial file, no folder
        assert datasets._main(["download", "cifar10", "--root", str(empty_root)]) == 1  # the CLI says so

        monkeypatch.setattr(datasets, "CIFAR10_BINARY_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
        folder = datasets.download("cifar10", empty_root)
        assert folder == empty_root / "cifar-10-batches-bin"
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.bin" for n in CIFAR_NAMES)
        assert sorted(p.name for p in empty_root.iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
        assert not (empty_root.parent / "escaped.txt").exists()
        test = load_split("cifar10", "test")
        assert np.array_equal(test.images.numpy().reshape(-1, 3072), written["test_batch"][0])
        assert np.array_equal(test.labels.numpy(), written["test_batch"][1])
        assert len(load_split("cifar10", "train")) + len(load_split("cifar10", "val")) == 30

        # a second download reuses the kept archive (its checksum matches) even with the server gone
        (folder / "test_batch.bin").write_bytes(b"damaged")
        monkeypatch.setattr(datasets, "CIFAR10_BINARY_URL", "http://127.0.0.1:9/cifar-10-binary.tar.gz")
        datasets.download("cifar10", empty_root)
        assert (folder / "test_batch.bin").read_bytes() == cifar_records(*written["test_batch"])

    (empty_root / "cifar-10-binary.tar.gz").unlink()
    with pytest.raises(DatasetMissing, match=r"could not download http://127\.0\.0\.1:9/") as info:
        datasets.download("cifar10", empty_root)
    assert "python -m core.datasets download cifar10" in str(info.value)


def test_download_cifar10_refuses_a_damaged_archive(empty_root, tmp_path, monkeypatch):
    """An archive whose checksum matches but that is cut short, or lacks a batch, or holds a batch of
    the wrong size: DatasetFormatError naming the archive and the fix, no half-written batch left."""
    served = tmp_path / "mirror"
    served.mkdir()
    good = served / "good.tar.gz"
    write_cifar_tarball(good, per_batch=4)
    cases = {"cut short": good.read_bytes()[: good.stat().st_size // 2]}
    for case, members in {"no test batch": {"cifar-10-batches-bin/test_batch.bin": None},
                          "wrong size": {"cifar-10-batches-bin/data_batch_1.bin": b"\x00" * 3000}}.items():
        write_cifar_tarball(served / "case.tar.gz", per_batch=2, members=members)
        cases[case] = (served / "case.tar.gz").read_bytes()
    expected = {"cut short": "cannot unpack", "no test batch": "has no cifar-10-batches-bin/test_batch.bin",
                "wrong size": "not 1 to 10,000 whole 3,073-byte records"}
    with serve(served) as url:
        for case, payload in cases.items():
            (served / "cifar-10-binary.tar.gz").write_bytes(payload)
            monkeypatch.setattr(datasets, "CIFAR10_BINARY_URL", f"{url}cifar-10-binary.tar.gz")
            monkeypatch.setattr(datasets, "CIFAR10_BINARY_MD5", hashlib.md5(payload).hexdigest())
            with pytest.raises(DatasetFormatError) as info:
                datasets.download("cifar10", empty_root)
            msg = str(info.value)
            assert expected[case] in msg, case
            assert str(empty_root / "cifar-10-binary.tar.gz") in msg and "download cifar10 again" in msg
            assert not list((empty_root / "cifar-10-batches-bin").glob(".*")), case  # no temporary files left
            (empty_root / "cifar-10-binary.tar.gz").unlink()
