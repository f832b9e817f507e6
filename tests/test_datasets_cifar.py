"""CIFAR-10's batch files, damaged or hostile: every one gets a DatasetFormatError that names the file and
the fix, never a raw exception, and a pickle that asks for anything but numpy's array names runs nothing."""

from __future__ import annotations

import builtins
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from test_datasets import cifar_arrays, cifar_records, empty_root, py2_cifar_pickle, write_cifar

from core import datasets
from core.datasets import DatasetFormatError, load_split

__all__ = ["empty_root"]  # the fixture, shared with test_datasets.py


def _refused(root: Path, batch: str = "data_batch_3", split: str = "train") -> str:
    """Load `split` and return the DatasetFormatError's message; checks it names the file and the fix."""
    datasets._official.cache_clear()
    with pytest.raises(DatasetFormatError) as info:
        load_split("cifar10", split)
    msg = str(info.value)
    folder = "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else "cifar-10-batches-bin"
    suffix = "" if folder.endswith("py") else ".bin"
    assert str(root / folder / f"{batch}{suffix}") in msg
    assert "python -m core.datasets download cifar10" in msg
    return msg


# ---------------------------------------------------------------------------------------------------
# Hostile pickles: nothing they name is ever run


class _Reduce:
    """An object whose pickle calls func(*args) when loaded by plain pickle.load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "builtins.eval": _Reduce(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "pathlib.Path.touch": _Reduce(Path.touch, marker),
    }


def test_the_payloads_do_run_under_plain_pickle(tmp_path):
    """The hostile pickles below are real: plain pickle.loads runs each one (so refusing them means
    something)."""
    for name, payload in _payloads(tmp_path / "ran").items():
        (tmp_path / "ran").unlink(missing_ok=True)
        pickle.loads(pickle.dumps(payload, protocol=2))
        assert (tmp_path / "ran").exists(), name


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "builtins.exec", "pathlib.Path.touch"])
def test_a_batch_that_runs_code_is_refused_and_nothing_runs(empty_root, tmp_path, payload, protocol):
    write_cifar(empty_root, per_batch=4, kind="py")
    marker = tmp_path / "pwned"
    evil = _payloads(marker)[payload]
    data, labels = cifar_arrays(4)
    # str keys, and the payload before any bytes: under protocols 0-2 bytes are pickled through
    # _codecs.encode, which is refused too, and would hide whether the payload itself is.
    refused_name = {"os.system": f"{os.system.__module__}.system", "builtins.eval": "builtins.eval",
                    "builtins.exec": "builtins.exec",
                    "pathlib.Path.touch": "pathlib.Path.touch" if protocol >= 4 else "builtins.getattr"}[payload]
    if protocol < 3:  # pickle writes Python 2's module names there
        refused_name = refused_name.replace("builtins.", "__builtin__.")
    for batch in ({"data": evil}, {"labels": [*labels[:3], evil], "data": data}):
        (empty_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=protocol))
        msg = _refused(empty_root)
        assert f"refused: the pickle asks for {refused_name};" in msg and "nothing it names was run" in msg
        assert not marker.exists()


def test_hand_made_hostile_opcodes_are_refused(empty_root, tmp_path):
    """INST (protocol 0's class call), STACK_GLOBAL, a persistent id, numpy.ndarray called directly with
    a huge shape, and _reconstruct of something else: refused, nothing runs, nothing is allocated."""
    write_cifar(empty_root, per_batch=4, kind="py")
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    streams = {
        "INST os.system": (b"(V" + cmd + b"\nios\nsystem\n.", "asks for os.system"),
        "STACK_GLOBAL": (b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.",
                         "asks for os.system"),
        "persistent id": (b"\x80\x02X\x01\x00\x00\x00xQ.", "persistent"),
        "ndarray called": (b"\x80\x02cnumpy\nndarray\n\x8a\x05" + (10**10).to_bytes(5, "little") + b"\x85\x85R.",
                           "not callable"),
        "reconstruct of dtype": (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85U\x01b\x87R.",
                                 "_reconstruct called with arguments numpy never writes"),
        "object dtype": (pickle.dumps({b"data": np.array([None, 1], dtype=object)}, protocol=4),
                         "a numpy dtype other than uint8"),
        "float data": (pickle.dumps({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, protocol=4),
                       "a numpy dtype other than uint8"),
        "BUILD on a name": (b"\x80\x02cnumpy\ndtype\n}b.", "sets the state of _Dtype"),
    }
    for case, (stream, expected) in streams.items():
        (empty_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(stream)
        msg = _refused(empty_root)
        assert expected in msg, (case, msg)
        assert not marker.exists(), case


def test_python_batches_of_every_protocol_numpy_writes_without_a_helper_load(empty_root):
    """Python 2's batches (the real format) and a batch re-pickled by numpy 2 at protocols 3 and 4
    (numpy._core.multiarray._reconstruct) load; protocol 5's _frombuffer is refused with the fix."""
    write_cifar(empty_root, per_batch=4, kind="py")
    data, labels = cifar_arrays(4)
    folder = empty_root / "cifar-10-batches-py"
    for protocol in (3, 4):
        (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=protocol))
        datasets._official.cache_clear()
        test = load_split("cifar10", "test")
        assert np.array_equal(test.images.numpy().reshape(-1, 3072), data)
        assert test.labels.tolist() == labels
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": labels}, protocol=5))
    assert "asks for numpy._core.numeric._frombuffer" in _refused(empty_root, "test_batch", "test")


# ---------------------------------------------------------------------------------------------------
# Damaged python batches


def _batch(data=None, labels=None, **extra) -> bytes:
    """A python batch as numpy 2 would pickle it (protocol 4); the defaults make a good one."""
    good_data, good_labels = cifar_arrays(4)
    value = {b"data": good_data if data is None else data, b"labels": good_labels if labels is None else labels}
    value.update(extra)
    return pickle.dumps({k: v for k, v in value.items() if not isinstance(v, _Drop)}, protocol=4)


class _Drop:
    """Leave this key out."""


_DATA4 = cifar_arrays(4)[0]
PY_DAMAGE: dict[str, tuple[bytes, str]] = {
    "integer labels": (_batch(labels=5), "'labels' is of type int, not a list of integers"),
    "string labels": (_batch(labels="0123"), "'labels' is of type str, not a list"),
    "array labels": (_batch(labels=np.arange(4, dtype=np.uint8)), "'labels' is a numpy array, not a list"),
    "labels of strings": (_batch(labels=[b"cat", b"dog", b"cat", b"dog"]), "label 0 is b'cat', not an integer"),
    "labels of floats": (_batch(labels=[1.0, 2.0, 3.0, 4.0]), "label 0 is 1.0, not an integer in 0..9"),
    "labels of bools": (_batch(labels=[True, False, True, False]), "label 0 is True, not an integer"),
    "label 10": (_batch(labels=[0, 1, 10, 2]), "label 2 is 10, not an integer in 0..9"),
    "label -1": (_batch(labels=[0, -1, 1, 2]), "label 1 is -1,"),
    "label 2**70": (_batch(labels=[0, 2**70, 1, 2]), "label 1 is 1180591620717411303424,"),
    "too few labels": (_batch(labels=[0, 1, 2]), "3 labels for 4 images"),
    "no labels": (_batch(labels=_Drop()), "'labels' is missing"),
    "no data": (_batch(data=_Drop()), "'data' is missing or not a uint8 array"),
    "data a list": (_batch(data=[[0] * 3072] * 4), "'data' is missing or not a uint8 array"),
    "data (4, 3071)": (_batch(data=np.zeros((4, 3071), np.uint8)), "'data' has shape (4, 3071), expected (N, 3072)"),
    "data 3-D": (_batch(data=np.zeros((4, 3, 1024), np.uint8)), "'data' has shape (4, 3, 1024)"),
    "data empty": (_batch(data=np.zeros((0, 3072), np.uint8), labels=[]), "'data' has shape (0, 3072)"),
    "absurd row count": (py2_cifar_pickle(_DATA4, [0, 1, 2, 3], "x", rows=2**31 - 1),
                         "array of shape (2147483647, 3072) needs 6,597,069,763,584 bytes, the file holds 12,288"),
    "not a dict": (pickle.dumps([_DATA4, [0, 1, 2, 3]], protocol=4), "holds a list, not a CIFAR-10 batch dict"),
    "truncated": (py2_cifar_pickle(_DATA4, [0, 1, 2, 3], "x")[:5000], "not a CIFAR-10 python batch"),
    "garbage": (bytes(range(256)) * 8, "not a CIFAR-10 python batch"),
    "empty file": (b"", "0 bytes is not the size of a CIFAR-10 python batch"),
    "too many opcodes": (_batch(labels=[0] * 250_000), "more than 200,000 pickle opcodes"),
}


@pytest.mark.parametrize("damage", list(PY_DAMAGE))
def test_damaged_python_batch_names_the_file_and_the_fix(empty_root, damage):
    write_cifar(empty_root, per_batch=4, kind="py")
    stream, expected = PY_DAMAGE[damage]
    (empty_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(stream)
    msg = _refused(empty_root)
    assert expected in msg, msg


def test_an_implausibly_large_python_batch_is_refused_unread(empty_root):
    write_cifar(empty_root, per_batch=4, kind="py")
    path = empty_root / "cifar-10-batches-py" / "data_batch_3"
    with path.open("r+b") as fh:
        fh.truncate(41_000_000)  # sparse: costs no disk, would cost 41 MB to read
    assert "41,000,000 bytes is not the size of a CIFAR-10 python batch (about 31 MB" in _refused(empty_root)


# ---------------------------------------------------------------------------------------------------
# Damaged binary batches


def _bin(n: int, label: int | None = None) -> bytes:
    data, labels = cifar_arrays(n)
    if label is not None:
        labels[n // 2] = label
    return cifar_records(data, labels)


BIN_DAMAGE = {
    "cut mid-record": (_bin(4)[:-5], "12,287 bytes is not 1 to 10,000 whole 3,073-byte records"),
    "empty file": (b"", "0 bytes is not 1 to 10,000 whole"),
    "label 10": (_bin(4, label=10), "record 2 has label 10, outside 0..9"),
    "label 255": (_bin(6, label=255), "record 3 has label 255"),
}


@pytest.mark.parametrize("damage", list(BIN_DAMAGE))
def test_damaged_binary_batch_names_the_file_and_the_fix(empty_root, damage):
    write_cifar(empty_root, per_batch=4, kind="bin")
    payload, expected = BIN_DAMAGE[damage]
    (empty_root / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(payload)
    msg = _refused(empty_root)
    assert expected in msg and "download it again" in msg, msg


def test_an_implausibly_large_binary_batch_is_refused_unread(empty_root):
    write_cifar(empty_root, per_batch=4, kind="bin")
    path = empty_root / "cifar-10-batches-bin" / "data_batch_3.bin"
    with path.open("r+b") as fh:
        fh.truncate(10_001 * 3073)  # whole records, one batch too many; sparse
    assert "30,733,073 bytes is not 1 to 10,000 whole 3,073-byte records" in _refused(empty_root)


def test_binary_batches_are_read_in_preference_to_python_ones(empty_root):
    """With both folders there, the binary one is read: a damaged python folder is no obstacle after
    `download cifar10`, as the messages promise."""
    written = write_cifar(empty_root, per_batch=4, kind="bin")
    write_cifar(empty_root, per_batch=4, kind="py")
    (empty_root / "cifar-10-batches-py" / "test_batch").write_bytes(struct.pack("<I", 7))
    test = load_split("cifar10", "test")
    assert np.array_equal(test.images.numpy().reshape(-1, 3072), written["test_batch"][0])
