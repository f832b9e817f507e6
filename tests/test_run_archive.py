"""Run archives: export a trained run as a zip and import it back; every unsafe or malformed upload is
refused with a message that says why, and leaves the runs folder exactly as it was."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors

from core import run_archive
from core.engine import run_training
from core.families import load_objective
from core.run_archive import ArchiveError, export_run, import_run
from core.runs import create_run, list_runs, open_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished run (adaptive loss, so `loss.` tensors too), trained in this process: tiny."""
    root = tmp_path_factory.mktemp("source")
    run = create_run({"dataset": "digits", "loss": "adaptive", "epochs": 1, "latent_dim": 2, "width": 8,
                      "limit_train": 64, "batch_size": 32}, root=root)
    result = run_training(run)
    assert result.state == "finished"
    return run.path


@pytest.fixture()
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    user, shipped = tmp_path / "runs", tmp_path / "checkpoints"
    user.mkdir()
    shipped.mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(user))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(shipped))
    return user


def _tree(root: Path) -> list[str]:
    """Everything under root, hidden entries included (to prove nothing was written)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}


def _zip(entries: dict[str, bytes], prefix: str = "run/") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(prefix + name, data)
    return buffer.getvalue()


def _refused(data: bytes, root: Path, needle: str, **limits: int) -> str:
    before = _tree(root)
    with pytest.raises(ArchiveError) as caught:
        import_run(data, root, **limits)
    message = str(caught.value)
    assert needle.lower() in message.lower(), message
    assert _tree(root) == before, "a refused upload wrote something"
    return message


def test_export_then_import_round_trips_every_file(trained: Path, roots: Path) -> None:
    data = export_run(trained)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    run_id = open_run(trained).run_id
    assert all(name.startswith(f"{run_id}/") for name in names)
    assert f"{run_id}/.lock" not in names and f"{run_id}/model.safetensors" in names
    run = import_run(data)
    assert run.path == (roots / run_id).resolve()
    assert _files(run.path) == _files(trained)
    assert [info.run_id for info in list_runs([roots])] == [run_id]
    assert run.status()["state"] == "finished"
    source = open_run(trained)
    for (name, a), (_, b) in zip(sorted(run.model_tensors().items()), sorted(source.model_tensors().items()),
                                 strict=True):
        assert torch.equal(a, b), name
    assert any(k.startswith("loss.") for k in run.model_tensors())
    assert torch.equal(run.embeddings()["z"], source.embeddings()["z"])
    load_objective(run)
    assert not [p.name for p in roots.iterdir() if p.name.startswith(".")]  # the staging folder is gone
    _refused(data, roots, "already in")  # the same run again


def test_a_zipped_run_folder_is_accepted_at_any_depth_and_its_lock_skipped(trained: Path, roots: Path) -> None:
    entries = {name: (trained / name).read_bytes() for name in _files(trained)}
    entries[".lock"] = b"123@somewhere\n"
    run = import_run(_zip(entries, prefix="home/me/runs/some-run/"))
    assert not (run.path / ".lock").exists()
    assert _files(run.path) == _files(trained)
    flat = import_run(_zip(entries, prefix=""), roots / "other")
    assert flat.run_id == run.run_id


def test_oversized_archives_and_zip_bombs_are_refused(trained: Path, roots: Path) -> None:
    data = export_run(trained)
    _refused(data, roots, "over the", max_bytes=len(data) - 1)
    bomb = _zip({"config.json": (trained / "config.json").read_bytes(), "train.log": b"\0" * (8 << 20)})
    assert len(bomb) < 64 << 10  # megabytes of zeros squeeze into a few kilobytes
    _refused(bomb, roots, "unpack", max_unpacked=4 << 20)
    many = _zip({f"projections/p{i}.safetensors": b"" for i in range(40)} | {"config.json": b"{}"})
    _refused(many, roots, "entries", max_members=20)


def test_a_zip_comment_or_a_stub_before_the_zip_does_not_hide_the_entry_count(trained: Path, roots: Path) -> None:
    buffer = io.BytesIO(export_run(trained))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = b"exported for a colleague " * 20  # the end record is no longer the last 22 bytes
    data = b"#!/bin/sh a self-extractor's stub\n" + buffer.getvalue()
    entries = len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    assert run_archive._end_record(io.BytesIO(data))[0] == entries
    assert run_archive._end_record(io.BytesIO(data[:-100]))[0] == entries  # a cut-off comment: searched for
    import_run(data, roots)


@pytest.mark.parametrize("name", ["/etc/passwd", "../evil.json", "run/../../evil.json", "..\\evil.json",
                                  "C:/evil.json", "run/./config.json"])
def test_unsafe_paths_are_refused(trained: Path, roots: Path, name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("run/config.json", (trained / "config.json").read_bytes())
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # ZipInfo() normalises some names; the attacker's zip would not
        archive.writestr(info, b"{}")
    _refused(buffer.getvalue(), roots, "unsafe path")


def test_symlinks_are_refused(trained: Path, roots: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("run/config.json", (trained / "config.json").read_bytes())
        link = zipfile.ZipInfo("run/history.jsonl")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    _refused(buffer.getvalue(), roots, "symlink")


def test_pickled_content_is_refused_whatever_its_name(trained: Path, roots: Path, tmp_path: Path) -> None:
    config = (trained / "config.json").read_bytes()
    tensors = {"w": torch.ones(3)}
    for suffix in (".pt", ".pth", ".pkl", ".ckpt"):
        _refused(_zip({"config.json": config, f"model{suffix}": b"anything"}), roots, "pickle")
    pickled = pickle.dumps({"w": [1.0, 2.0]}, protocol=4)
    assert pickled[:2] == b"\x80\x04"
    _refused(_zip({"config.json": config, "model.safetensors": pickled}), roots, "pickle")
    _refused(_zip({"config.json": config, "probes.json": pickled}), roots, "pickle")
    torch_file = tmp_path / "weights"
    torch.save(tensors, torch_file)  # written here, never loaded: it is the upload's content
    _refused(_zip({"config.json": config, "model.safetensors": torch_file.read_bytes()}), roots, "torch.save")
    # A real safetensors file whose header length happens to start with 0x80 0x02 is not a pickle.
    real = save_safetensors(tensors)
    run_archive._check_safetensors("x.safetensors", real)


def test_files_outside_the_run_format_are_refused(trained: Path, roots: Path) -> None:
    config = (trained / "config.json").read_bytes()
    _refused(_zip({"config.json": config, "notes.txt": b"hello"}), roots, "not a file of the run format")
    _refused(_zip({"config.json": config, "sub/model.safetensors": b"x"}), roots, "not a file of the run format")
    _refused(_zip({"config.json": config, "projections/a b.safetensors": b"x"}), roots, "not a file of the run")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("run/config.json", config)
        archive.writestr("elsewhere/history.jsonl", b"")
    _refused(buffer.getvalue(), roots, "outside the run's folder")
    _refused(_zip({"a/config.json": config, "b/config.json": config}), roots, "one run per zip")
    _refused(_zip({"status.json": b"{}"}), roots, "no config.json")
    _refused(b"this is not a zip", roots, "not a readable zip")
    _refused(_zip({}), roots, "empty")


@pytest.mark.parametrize(("change", "needle"), [
    (lambda c: "{not json", "not valid JSON"),
    (lambda c: json.dumps([1, 2]), "JSON object"),
    (lambda c: json.dumps({**c, "format": "someone-else/run"}), "not a robust-loss-lab run"),
    (lambda c: json.dumps({**c, "version": 99}), "version 99"),
    (lambda c: json.dumps({**c, "run_id": "../../escape"}), "not a valid run name"),
    (lambda c: json.dumps({**c, "loss": "nope"}), "'nope'"),
    (lambda c: json.dumps({**c, "latent_dim": -3}), "latent_dim"),
    (lambda c: json.dumps({**c, "surprise": 1}), "unknown configuration field"),
    (lambda c: json.dumps({**c, "model": {**c["model"], "latent_dim": 7}}), "does not match"),
])
def test_malformed_config_is_refused(trained: Path, roots: Path, change, needle: str) -> None:
    entries = {name: (trained / name).read_bytes() for name in _files(trained)}
    entries["config.json"] = change(json.loads(entries["config.json"])).encode()
    _refused(_zip(entries), roots, needle)


def _format_1_checkpoint(trained: Path) -> dict[str, bytes]:
    """The trained run's checkpoint as run format 1 writes it: optimizer.safetensors + trainer_state.json,
    stamped with the step (model.safetensors carries the same stamp)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = trained / "checkpoint.safetensors"
    if not file.is_file():  # the trainer still writes format 1
        return {name: (trained / name).read_bytes() for name in ("optimizer.safetensors", "trainer_state.json")}
    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(file))
    optimizer = {k[len("optimizer/"):]: v for k, v in tensors.items() if k.startswith("optimizer/")}
    return {"optimizer.safetensors": save_safetensors(optimizer, metadata={"global_step": meta["global_step"]}),
            "trainer_state.json": meta["trainer_state"].encode()}


def test_damaged_run_files_are_refused_and_nothing_is_left(trained: Path, roots: Path) -> None:
    entries = {name: (trained / name).read_bytes() for name in _files(trained)}
    _refused(_zip({**entries, "model.safetensors": b"\x08\0\0\0\0\0\0\0{}"}), roots, "safetensors")
    _refused(_zip({**entries, "history.jsonl": b"{}\nnot json\n{}\n"}), roots, "line 2")
    _refused(_zip({**entries, "history.jsonl": b"{}\n[1, 2]\n"}), roots, "line 2")
    truncated = entries["embeddings.safetensors"][:-7]
    _refused(_zip({**entries, "embeddings.safetensors": truncated}), roots, "truncated")
    # Weights from another step than trainer_state.json (run format 1): a torn checkpoint, caught once unpacked.
    v1 = {k: v for k, v in entries.items() if k != "checkpoint.safetensors"} | _format_1_checkpoint(trained)
    state = json.loads(v1["trainer_state.json"])
    torn = json.dumps({**state, "global_step": state["global_step"] + 1}).encode()
    _refused(_zip({**v1, "trainer_state.json": torn}), roots, "torn")
    # Weights that do not fit the model config.json describes: refused from the header, before unpacking.
    wrong = save_safetensors({"encoder.weight": torch.zeros(2, 2)}, metadata={"global_step": str(state["global_step"])})
    _refused(_zip({**entries, "model.safetensors": wrong}), roots, "does not fit")
    weights = run_archive._check_safetensors("model.safetensors", entries["model.safetensors"]).tensors
    name = next(k for k in weights if k.endswith(".weight") and len(weights[k].shape) == 2)
    tensors = {k: torch.zeros(weights[k].shape) for k in weights}
    tensors[name] = torch.zeros(weights[name].shape[0] + 1, weights[name].shape[1])
    _refused(_zip({**entries, "model.safetensors": save_safetensors(tensors)}), roots, f"{name} is F32")


def test_embeddings_and_projections_must_fit_the_config(trained: Path, roots: Path) -> None:
    entries = {name: (trained / name).read_bytes() for name in _files(trained)}
    config = json.loads(entries["config.json"])
    n, d = config["split"]["val"], config["latent_dim"]
    base = {"z": torch.zeros(n, d), "logvar": torch.zeros(n, d), "labels": torch.zeros(n, dtype=torch.int64)}

    def embeddings(**change: torch.Tensor) -> bytes:
        return _zip({**entries, "embeddings.safetensors": save_safetensors({**base, **change})})

    _refused(embeddings(z=torch.zeros(n, d + 1)), roots, f"not float (n, {d})")
    _refused(embeddings(z=torch.zeros(n + 1, d), logvar=torch.zeros(n + 1, d),
                        labels=torch.zeros(n + 1, dtype=torch.int64)), roots, f"more than the {n:,} validation")
    _refused(embeddings(logvar=torch.zeros(n - 1, d)), roots, "logvar is F32")
    _refused(embeddings(images=torch.zeros(n, 3, 2, 2, dtype=torch.uint8)), roots, "images is U8")
    _refused(embeddings(extra=torch.zeros(n)), roots, "'extra'")
    projection = save_safetensors({"coords": torch.zeros(n + 5, 3), "seconds": torch.tensor(1.0)})
    _refused(_zip({**entries, "projections/pca-0123456789abcdef.safetensors": projection}), roots, "coords")
    projection = save_safetensors({"coords": torch.zeros(n, 3)})  # the page reads its seconds
    _refused(_zip({**entries, "projections/pca-0123456789abcdef.safetensors": projection}), roots, "seconds")
    import_run(embeddings(z=torch.ones(n, d)), roots)  # the same shapes, any values: accepted


def test_a_config_dated_in_the_future_or_with_an_impossible_split_is_refused(trained: Path, roots: Path) -> None:
    entries = {name: (trained / name).read_bytes() for name in _files(trained)}
    config = json.loads(entries["config.json"])
    for change, needle in (({"created": "2999-01-01T00:00:00+00:00"}, "in the future"),
                           ({"created": "yesterday"}, "not an ISO time"),
                           ({"split": {**config["split"], "val": 10**9}}, "split.val"),
                           ({"split": "x"}, "split")):
        _refused(_zip({**entries, "config.json": json.dumps({**config, **change}).encode()}), roots, needle)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [40, 5000])  # past MAX_JSON_DEPTH; past Python's recursion limit (1000)
def test_deeply_nested_json_is_refused_not_a_recursion_error(trained: Path, roots: Path, depth: int) -> None:
    entries = {name: (trained / name).read_bytes() for name in _files(trained)}
    config = json.loads(entries["config.json"])
    deep = _nested(depth)
    cases = {
        "config.json": '{"format": "robust-loss-lab/run", "version": 1, "x": ' + deep + "}",
        "probes.json": '{"probes": ' + deep + "}",
        "status.json": '{"state": "finished", "x": ' + deep + "}",
        "history.jsonl": '{"kind": "step"}\n{"kind": ' + deep + '}\n{"kind": "step"}\n',
    }
    for name, content in cases.items():
        _refused(_zip({**entries, name: content.encode()}), roots, "nests")
    _refused(_zip({**entries, "history.jsonl": ('{"kind": ' + deep + "}\n").encode()}), roots, "nests")  # last line
    header = ('{"x": ' + deep + "}").encode()
    bad_header = struct.pack("<Q", len(header)) + header
    for name in ("model.safetensors", "embeddings.safetensors"):
        _refused(_zip({**entries, name: bad_header}), roots, "nests")
    if "checkpoint.safetensors" in entries:
        layout = run_archive._check_safetensors("c", entries["checkpoint.safetensors"])
        assert "trainer_state" in layout.metadata
        from safetensors.torch import load
        tensors = load(entries["checkpoint.safetensors"])
        deep_state = save_safetensors(tensors, metadata={**layout.metadata, "trainer_state": deep})
        _refused(_zip({**entries, "checkpoint.safetensors": deep_state}), roots, "nests")
    assert config["format"] == "robust-loss-lab/run"


def test_import_into_the_shipped_folder_is_refused(trained: Path, roots: Path) -> None:
    shipped = Path(os.environ["ROBUST_LOSS_LAB_CHECKPOINTS"])
    _refused(export_run(trained), shipped, "read-only")
