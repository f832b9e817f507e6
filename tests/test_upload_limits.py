"""Hostile uploads cost next to nothing: each is refused, naming the file or field at fault, before its
declared sizes are inflated, allocated or written. Measured in a fresh process (tests/upload_probe.py):
peak resident memory above the level before the call, Python's own peak allocations, bytes written,
and what is left in the runs folder.

The zips are small (kilobytes to a few megabytes) and unpack, as declared, to hundreds of megabytes:
zero-filled embeddings far beyond the validation split, a junk model file, a console log, a config
describing a 1.2-billion-parameter model, zero weights shaped right for a model at the parameter bound,
and central directories of 200,000 entries (one with an end record that lies about the count)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from core.config import make_config
from core.families import family_of, weights_of
from core.runs import FORMAT, VERSION

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "upload_probe.py"
ZERO_CHUNK = bytes(1 << 20)
PEAK_LIMIT_MB = 48  # above the process's level before the call; the hostile sizes are 190 MB and up
PYTHON_PEAK_LIMIT_MB = 8
WRITTEN_LIMIT_MB = 0.1


def _config(**fields) -> dict:
    cfg = make_config(**fields)
    return {"format": FORMAT, "version": VERSION, "run_id": f"hostile-{fields.get('dataset', 'digits')}",
            "created": "2026-01-01T00:00:00+00:00", **cfg}


def _safetensors_header(tensors: dict[str, tuple[str, list[int]]]) -> tuple[bytes, int]:
    """A safetensors header for zero-filled tensors (dtype, shape) and the data bytes it declares."""
    sizes = {"F32": 4, "I64": 8, "U8": 1}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for v in shape:
            n *= v
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offset


def _write_zip(path: Path, members: dict[str, bytes | tuple[bytes, int]]) -> Path:
    """members: name -> bytes, or (head, n): head followed by n zero bytes, streamed (never in memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in members.items():
            if isinstance(content, bytes):
                archive.writestr(f"run/{name}", content)
                continue
            head, zeros = content
            info = zipfile.ZipInfo(f"run/{name}")
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as fh:
                fh.write(head)
                while zeros > 0:
                    fh.write(ZERO_CHUNK[:min(zeros, len(ZERO_CHUNK))])
                    zeros -= len(ZERO_CHUNK)
    return path


def _many_entries_zip(path: Path, entries: int, claimed: int | None = None) -> Path:
    """A stored zip of `entries` empty files, written with struct (zipfile would take seconds); the end
    record claims `claimed` entries when given (a lie zipfile does not check: it parses the directory)."""
    local, central = bytearray(), bytearray()
    for i in range(entries):
        name = f"run/projections/p{i:07d}.safetensors".encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0, 0, 0,
                               0, 0, len(local)) + name
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0) + name
    count = entries if claimed is None else claimed
    end = b""
    if count > 0xFFFE:  # zip64 end record and its locator, as zip tools write past 65,534 entries
        at = len(local) + len(central)
        end = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), len(local))
        end += struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), len(central),
                       len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """name -> (zip, what the refusal must name)."""
    folder = tmp_path_factory.mktemp("hostile")
    digits = json.dumps(_config(dataset="digits", latent_dim=2, width=8)).encode()
    rows = 8_000_000  # digits has 180 validation images; 8 M rows of zeros is 192 MB
    head, size = _safetensors_header({"z": ("F32", [rows, 2]), "logvar": ("F32", [rows, 2]),
                                      "labels": ("I64", [rows])})
    junk_head, junk_size = _safetensors_header({"junk": ("F32", [75_000_000])})  # 300 MB
    huge = json.dumps(_config(dataset="cifar10", width=512, latent_dim=4096)).encode()
    # At the parameter bound (47 M), shaped right, zero-filled: 189 MB in a zip of 185 KB.
    bound = _config(dataset="cifar10", width=128, latent_dim=512)
    with torch.device("meta"):
        shapes = {k: ("F32", list(v.shape)) for k, v in weights_of(family_of(bound).build(bound)).items()}
    bound_head, bound_size = _safetensors_header(shapes)
    tiny_head, tiny_size = _safetensors_header({"w": ("F32", [4])})
    return {
        "zero_embeddings": (_write_zip(folder / "zero_embeddings.zip", {
            "config.json": digits, "embeddings.safetensors": (head, size)}), "8,000,000 rows"),
        "junk_model": (_write_zip(folder / "junk_model.zip", {
            "config.json": digits, "model.safetensors": (junk_head, junk_size)}), "model.safetensors"),
        "big_log": (_write_zip(folder / "big_log.zip", {
            "config.json": digits, "train.log": (b"", 200 << 20)}), "train.log"),
        "huge_model": (_write_zip(folder / "huge_model.zip", {
            "config.json": huge, "model.safetensors": tiny_head + bytes(tiny_size)}), "1,157,771,267 parameters"),
        "huge_model_without_weights": (_write_zip(folder / "huge_model_without_weights.zip", {
            "config.json": huge}), "parameters"),
        "zero_weights": (_write_zip(folder / "zero_weights.zip", {
            "config.json": json.dumps(bound).encode(), "model.safetensors": (bound_head, bound_size)}),
            "times its size"),
        "many_entries": (_many_entries_zip(folder / "many_entries.zip", 200_000), "200,000 entries"),
        "lying_entry_count": (_many_entries_zip(folder / "lying_entry_count.zip", 200_000, claimed=3),
                              "central directory"),
    }


def _probe(root: Path, zips: list[Path]) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(PROBE), str(root), *map(str, zips)], capture_output=True, text=True,
                          timeout=240, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_hostile_uploads_are_refused_before_they_cost_memory_or_disk(hostile: dict, tmp_path: Path) -> None:
    for path, _ in hostile.values():
        assert path.stat().st_size < 32 << 20  # each is a small upload
    root = tmp_path / "runs"
    results = _probe(root, [path for path, _ in hostile.values()])
    assert [r["zip"] for r in results] == [path.name for path, _ in hostile.values()]
    for (name, (_, needle)), result in zip(hostile.items(), results, strict=True):
        assert result["error"] and result["error"].startswith("ArchiveError: "), (name, result)
        assert needle.lower() in result["error"].lower(), (name, result["error"])
        assert "nothing was written" in result["error"].lower(), (name, result["error"])
        assert result["left"] == [], (name, result["left"])
        assert result["written_mb"] < WRITTEN_LIMIT_MB, (name, result)
        assert result["python_peak_mb"] < PYTHON_PEAK_LIMIT_MB, (name, result)
        if result["peak_reset"]:  # a kernel without clear_refs leaves VmHWM at the process's earlier peak
            assert result["rss_peak_mb"] < PEAK_LIMIT_MB, (name, result)


def test_a_config_only_upload_of_a_huge_model_is_refused_without_building_it(tmp_path: Path) -> None:
    """The same check in-process (fast): the parameter count comes from the meta device."""
    from core.run_archive import ArchiveError, import_run

    huge = json.dumps(_config(dataset="cifar10", width=512, latent_dim=4096)).encode()
    path = _write_zip(tmp_path / "huge.zip", {"config.json": huge})
    with pytest.raises(ArchiveError, match=r"1,157,771,267 parameters .*cifar10, width 512, latent_dim 4096"):
        import_run(path.read_bytes(), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
