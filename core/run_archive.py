"""Runs as zip files: export a run directory, and import an uploaded one safely.

    export_run(run) -> bytes                    a zip of `<run_id>/<file>` for the run-format files
    import_run(data, root=None) -> Run          check everything, then add the run under the runs root

An upload is untrusted. `import_run` refuses, with an `ArchiveError` that says what is wrong and
writes nothing, when:

- the archive is larger than `MAX_ARCHIVE_BYTES`, holds more than `MAX_MEMBERS` entries, or would unpack
  to more than `MAX_UNPACKED_BYTES` (sizes are counted while reading, not trusted from the headers);
- a name is unsafe: absolute, with `..`, a backslash or a drive letter, a symlink or another special
  file, encrypted, or duplicated;
- anything could be a pickle: a `.pt`/`.pth`/`.pkl`/`.pickle`/`.ckpt`/`.bin`/`.npy`/`.npz`/`.joblib`
  member, or a member starting with pickle's protocol marker (0x80, 2..5) or with a zip header (what
  `torch.save` writes); nothing is ever unpickled;
- a file is not part of the run format (docs/RUN_FORMAT.md: config.json, status.json, history.jsonl,
  model/optimizer/embeddings .safetensors, trainer_state.json, probes.json, projections/*.safetensors,
  and the app's train.log), a JSON file does not parse, or a .safetensors header is malformed (a
  zipped run folder's `.lock` and `launch.json`, this machine's runtime files, are skipped, not written);
- the zip holds no config.json, several, or files outside the folder that holds it;
- config.json is missing or malformed (wrong format or version, a bad run id, a configuration
  core.config refuses), the weights do not fit the model it describes, or a run of that id exists.

Only when the members pass these checks are they written, into a hidden temporary directory inside
the runs root (`.import-<random>`, which `list_runs` skips); it is opened with `core.runs.open_run`,
its checkpoint and weights are loaded (safetensors only), and it is renamed to `<root>/<run_id>` in one
step. On any failure the temporary directory is removed.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from core.runs import (
    FORMAT,
    SAFE_NAME,
    STATES,
    VERSION,
    Run,
    RunFormatError,
    open_run,
    runs_root,
    under_checkpoints,
)

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_MEMBERS",
    "MAX_UNPACKED_BYTES",
    "ArchiveError",
    "archive_name",
    "export_run",
    "import_run",
]

MAX_ARCHIVE_BYTES = 200 * 1024 * 1024  # matches .streamlit/config.toml's server.maxUploadSize (200 MB)
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 256
MAX_JSON_BYTES = 64 * 1024 * 1024  # a JSON/text member larger than this is not a run file

JSON_FILES = (Run.CONFIG, Run.STATUS, Run.TRAINER, Run.PROBES)
JSONL_FILES = (Run.HISTORY,)
TENSOR_FILES = (Run.MODEL, Run.OPTIMIZER, Run.EMBEDDINGS)
TEXT_FILES = ("train.log",)
RUN_FILES = JSON_FILES + JSONL_FILES + TENSOR_FILES + TEXT_FILES
SKIPPED_FILES = (Run.LOCK, "launch.json")  # per-machine runtime files a zipped run folder may hold
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz", ".joblib")
_PROJECTION = re.compile(r"^projections/[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.safetensors$")
_SAFETENSORS_DTYPES = {"BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32", "F32", "U64", "I64",
                       "F64", "F8_E4M3", "F8_E5M2", "C64"}


class ArchiveError(ValueError):
    """An archive that is not a safe, well-formed run; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------------
# Export


def archive_name(run: Run) -> str:
    """The file name to offer for a run's zip."""
    return f"{run.run_id}.zip"


def _export_members(run: Run) -> list[tuple[str, Path]]:
    members = [(name, run.path / name) for name in RUN_FILES if (run.path / name).is_file()]
    projections = run.path / "projections"
    if projections.is_dir():
        for file in sorted(projections.glob("*.safetensors")):
            name = f"projections/{file.name}"
            if _PROJECTION.match(name) and file.is_file() and not file.is_symlink():
                members.append((name, file))
    return members


def export_run(run: Run | str | Path) -> bytes:
    """The run's files as a zip (`<run_id>/config.json`, ...): what `import_run` takes back.

    Only run-format files go in (not the lock, launch records or temporary files). Each file is read
    whole; the trainer replaces files by renaming, so a run exported while it trains is a consistent
    snapshot per file and reads as interrupted when imported."""
    run = run if isinstance(run, Run) else open_run(run)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, file in _export_members(run):
            archive.writestr(zipfile.ZipInfo(f"{run.run_id}/{name}", date_time=_zip_time(file)),
                             file.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _zip_time(file: Path) -> tuple[int, int, int, int, int, int]:
    import time

    t = time.gmtime(max(file.stat().st_mtime, 315532800))  # zip times start in 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


# ---------------------------------------------------------------------------------------------------
# Import: checks on the archive, in memory


def _archive_bytes(data: bytes | bytearray | IO[bytes] | str | Path, max_bytes: int) -> bytes:
    if isinstance(data, (str, Path)):
        size = Path(data).stat().st_size
        if size > max_bytes:
            raise ArchiveError(_too_big(size, max_bytes))
        return Path(data).read_bytes()
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise ArchiveError(_too_big(len(data), max_bytes))
        return bytes(data)
    if hasattr(data, "seek"):
        data.seek(0, os.SEEK_END)
        size = data.tell()
        data.seek(0)
        if size > max_bytes:
            raise ArchiveError(_too_big(size, max_bytes))
    raw = data.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ArchiveError(_too_big(len(raw), max_bytes))
    return raw


def _too_big(size: int, limit: int) -> str:
    return (f"the archive is {size / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB limit for an upload; "
            f"copy a large run into the runs folder directly instead")


def _safe_name(name: str) -> PurePosixPath:
    """The member's path if it is a plain relative path; ArchiveError otherwise."""
    if not name or "\\" in name or "\x00" in name:
        raise ArchiveError(f"unsafe path {name!r} in the archive (backslash or empty name); nothing was written")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"unsafe path {name!r} in the archive (absolute path); nothing was written")
    if any(part in ("", ".", "..") for part in name.split("/")):  # raw parts: PurePosixPath drops "." and ""
        raise ArchiveError(f"unsafe path {name!r} in the archive ('..', '.' or '//' in it); nothing was written")
    return PurePosixPath(name)


def _member_kind(info: zipfile.ZipInfo) -> str:
    """"dir", "file", or what else it is (symlink, device, ...) from the Unix mode in external_attr."""
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        return "symlink"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    return "dir" if info.is_dir() else "file"


def _looks_pickled(head: bytes) -> str | None:
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "it starts with pickle's protocol marker"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip inside the zip (the format torch.save writes, which holds a pickle)"
    return None


def _pickle_refusal(name: str, why: str) -> ArchiveError:
    return ArchiveError(f"{name}: {why}. Pickled files can run code when loaded, so they are never accepted; "
                        f"a run stores tensors as .safetensors and everything else as JSON. Nothing was written")


def _check_safetensors(name: str, data: bytes) -> None:
    """The header's structure: u64 length, a JSON object of {dtype, shape, data_offsets} inside the file."""
    if len(data) < 8:
        raise ArchiveError(f"{name} is too short to be a safetensors file; nothing was written")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len < 2 or 8 + header_len > len(data) or header_len > 100 * 1024 * 1024:
        why = _looks_pickled(data[:4])
        if why:
            raise _pickle_refusal(name, why)
        raise ArchiveError(f"{name} is not a safetensors file (bad header length); nothing was written")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        why = _looks_pickled(data[:4])
        if why:
            raise _pickle_refusal(name, why) from None
        raise ArchiveError(f"{name} is not a safetensors file (its header is not JSON); nothing was written") from None
    if not isinstance(header, dict):
        raise ArchiveError(f"{name} is not a safetensors file (its header is not an object); nothing was written")
    body = len(data) - 8 - header_len
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in _SAFETENSORS_DTYPES
              and isinstance(entry.get("shape"), list) and isinstance(entry.get("data_offsets"), list)
              and len(entry["data_offsets"]) == 2
              and all(isinstance(v, int) and 0 <= v <= body for v in entry["data_offsets"])
              and entry["data_offsets"][0] <= entry["data_offsets"][1])
        if not ok:
            raise ArchiveError(f"{name}: tensor {key!r} has a malformed safetensors entry; nothing was written")


def _check_json(name: str, data: bytes) -> object:
    why = _looks_pickled(data[:4])
    if why:
        raise _pickle_refusal(name, why)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{name} is not valid JSON ({exc}); nothing was written") from None
    if not isinstance(value, dict):
        raise ArchiveError(f"{name} must hold a JSON object; nothing was written")
    return value


def _check_jsonl(name: str, data: bytes) -> None:
    why = _looks_pickled(data[:4])
    if why:
        raise _pickle_refusal(name, why)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError(f"{name} is not UTF-8 text; nothing was written") from None
    lines = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            ok = isinstance(json.loads(line), dict)
        except json.JSONDecodeError:
            ok = number == len(lines)  # a torn last line (a crash mid-append) is tolerated, as core.runs does
        if not ok:
            raise ArchiveError(f"{name} line {number} is not a JSON object; nothing was written")


def _check_config(config: dict) -> str:
    """config.json as a run of this format with a configuration core.config accepts; returns the run id."""
    if config.get("format") != FORMAT:
        raise ArchiveError(f"config.json is not a robust-loss-lab run (its \"format\" is {config.get('format')!r}, "
                           f"not {FORMAT!r}); nothing was written")
    if config.get("version") != VERSION:
        raise ArchiveError(f"config.json has format version {config.get('version')!r}; this app reads version "
                           f"{VERSION}; nothing was written")
    run_id = config.get("run_id")
    if not isinstance(run_id, str) or not SAFE_NAME.match(run_id):
        raise ArchiveError(f"config.json's run_id {run_id!r} is not a valid run name (letters, digits, '.', '_', "
                           f"'-'); nothing was written")
    from core.config import ConfigError, normalize_config

    split = config.get("split")
    try:
        normalized = normalize_config(config, split=split if isinstance(split, dict) else None)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"config.json is malformed: {exc}; nothing was written") from None
    if config.get("model") != normalized["model"]:
        raise ArchiveError(f"config.json's model {config.get('model')!r} does not match its dataset and latent "
                           f"size ({normalized['model']!r}); nothing was written")
    return run_id


def _read_members(archive: zipfile.ZipFile, max_members: int, max_unpacked: int) -> dict[str, bytes]:
    """Every file member's bytes by its path inside the run, after the name, type and size checks."""
    infos = archive.infolist()
    if len(infos) > max_members:
        raise ArchiveError(f"the archive holds {len(infos)} entries, more than the {max_members} a run can have; "
                           f"nothing was written")
    declared = sum(info.file_size for info in infos)
    if declared > max_unpacked:
        raise ArchiveError(f"the archive would unpack to {declared / 1e6:.0f} MB, over the {max_unpacked / 1e6:.0f} "
                           f"MB limit; nothing was written")
    files: list[tuple[PurePosixPath, zipfile.ZipInfo]] = []
    seen: set[str] = set()
    for info in infos:
        path = _safe_name(info.filename.rstrip("/") if info.is_dir() else info.filename)
        kind = _member_kind(info)
        if kind in ("symlink", "special file"):
            raise ArchiveError(f"{info.filename} is a {kind}; a run holds only plain files. Nothing was written")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{info.filename} is encrypted; upload an unencrypted zip. Nothing was written")
        key = str(path)
        if key in seen:
            raise ArchiveError(f"{info.filename} appears twice in the archive; nothing was written")
        seen.add(key)
        if kind == "file":
            files.append((path, info))
    if not files:
        raise ArchiveError("the archive is empty; export a run from the Train page to get one. Nothing was written")
    for path, info in files:
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _pickle_refusal(info.filename, f"a {path.suffix} file is a pickle (or may hold one)")
    # The run's files sit next to its config.json: at the top of the zip, in one folder (what export_run
    # writes), or deeper (`zip -r runs.zip runs/<id>`).
    configs = [path for path, _ in files if path.name == Run.CONFIG and "projections" not in path.parts]
    if not configs:
        raise ArchiveError("the archive has no config.json, so it is not a run (export one from the Train page "
                           "or zip a run directory from runs/). Nothing was written")
    if len(configs) > 1:
        raise ArchiveError(f"the archive holds {len(configs)} config.json files ({', '.join(map(str, configs[:3]))}"
                           f"); upload one run per zip. Nothing was written")
    prefix = configs[0].parent
    out: dict[str, bytes] = {}
    total = 0
    for path, info in files:
        try:
            inner = path.relative_to(prefix)
        except ValueError:
            raise ArchiveError(f"{info.filename} lies outside the run's folder ({prefix}/); a zip holds one run. "
                               f"Nothing was written") from None
        name = str(inner)
        if name in SKIPPED_FILES:
            continue  # this machine's lock and launch record mean nothing elsewhere: not written
        if name not in RUN_FILES and not _PROJECTION.match(name):
            raise ArchiveError(f"{info.filename} is not a file of the run format (expected {', '.join(RUN_FILES)} "
                               f"and projections/*.safetensors); nothing was written")
        limit = min(max_unpacked - total, MAX_JSON_BYTES if name not in TENSOR_FILES and not
                    name.startswith("projections/") else max_unpacked)
        try:
            with archive.open(info) as fh:
                data = fh.read(limit + 1)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
            raise ArchiveError(f"{info.filename} cannot be read from the archive ({exc}); nothing was "
                               f"written") from None
        if len(data) > limit:
            raise ArchiveError(f"{info.filename} unpacks to more than its {limit / 1e6:.0f} MB limit; nothing was "
                               f"written")
        total += len(data)
        out[name] = data
    return out


def _check_members(members: dict[str, bytes]) -> str:
    """Content checks (pickles, JSON, safetensors headers, config); returns the run id."""
    for name, data in members.items():
        if name in TENSOR_FILES or name.startswith("projections/"):
            _check_safetensors(name, data)
        elif name in JSON_FILES:
            _check_json(name, data)
        elif name in JSONL_FILES:
            _check_jsonl(name, data)
        else:
            why = _looks_pickled(data[:4])
            if why:
                raise _pickle_refusal(name, why)
    return _check_config(json.loads(members[Run.CONFIG].decode("utf-8")))


# ---------------------------------------------------------------------------------------------------
# Import: write, verify, rename


def _verify_on_disk(path: Path) -> Run:
    """Open the unpacked run and load what it holds (safetensors only) to prove it is usable."""
    try:
        run = open_run(path)
        status = run.status()
        if status.get("state") not in (*STATES, "interrupted"):
            raise RunFormatError(f"status.json has an unknown state {status.get('state')!r}")
        run.history()
        if run.has_checkpoint:
            run.load_checkpoint()
        if (path / Run.MODEL).is_file():
            run.load_model()
            run.load_loss()
        if run.has_embeddings:
            tensors = run.embeddings()
            missing = [k for k in ("mu", "logvar", "labels") if k not in tensors]
            if missing:
                raise RunFormatError(f"embeddings.safetensors lacks {', '.join(missing)}")
    except RunFormatError as exc:
        raise ArchiveError(f"the uploaded run is damaged: {exc}. Nothing was written") from None
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"the uploaded run cannot be loaded ({type(exc).__name__}: {exc}). Nothing was "
                           f"written") from None
    return run


def import_run(data: bytes | bytearray | IO[bytes] | str | Path, root: str | Path | None = None, *,
               max_bytes: int = MAX_ARCHIVE_BYTES, max_members: int = MAX_MEMBERS,
               max_unpacked: int = MAX_UNPACKED_BYTES) -> Run:
    """Add the run in a zip (bytes, a binary file or a path) under `root` (default the runs root).

    ArchiveError (with what is wrong) for anything unsafe or malformed; then nothing is left behind."""
    raw = _archive_bytes(data, max_bytes)
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"the upload is not a readable zip file ({exc}); export a run from the Train page to "
                           f"get one. Nothing was written") from None
    with archive:
        members = _read_members(archive, max_members, max_unpacked)
    run_id = _check_members(members)

    root = Path(root).expanduser() if root is not None else runs_root()
    if under_checkpoints(root):
        raise ArchiveError(f"{root} is the shipped checkpoints folder, read-only in the app; import into runs/")
    target = root / run_id
    if target.exists():
        raise ArchiveError(f"a run named {run_id} is already in {root}; delete it first if you want to replace it. "
                           f"Nothing was written")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".import-{secrets.token_hex(6)}"
    try:
        staging.mkdir()
        for name, content in members.items():
            file = staging / name
            file.parent.mkdir(parents=True, exist_ok=True)
            with open(file, "xb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
        _verify_on_disk(staging)
        try:
            os.rename(staging, target)  # one step: the run appears whole or not at all
        except OSError as exc:
            raise ArchiveError(f"could not add {run_id} to {root} ({exc}); nothing was written") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return open_run(target)
