"""Runs as zip files: export a run directory, and import an uploaded one safely.

    export_run(run) -> bytes                    a zip of `<run_id>/<file>` for the run-format files
    import_run(data, root=None) -> Run          check everything, then add the run under the runs root

An upload is untrusted, and a small one must not cost much: every size, shape and count is checked
against the limits and against what the uploaded config.json describes *before* anything is inflated,
allocated or written. `import_run` refuses, with an `ArchiveError` that names the file or field, says
what to do, and writes nothing, when:

- the archive is larger than `MAX_ARCHIVE_BYTES`; its end-of-central-directory record (read here,
  before `zipfile` parses the directory) counts more than `MAX_MEMBERS` entries or a central directory
  larger than `MAX_MEMBERS` entries can need; a member's declared size is over its file's limit
  (`FILE_LIMITS`, or the exact size its safetensors header implies), or all of them together over
  `MAX_UNPACKED_BYTES` or, past `INFLATION_ALLOWANCE`, over `MAX_INFLATION` times the zip's size (run
  files are floats, which hardly compress: such a zip holds zeros). zipfile never inflates a member
  past its declared size, and members are read in chunks with a running count, so the declared sizes
  bound what is read;
- a name is unsafe: absolute, with `..`, a backslash or a drive letter, a symlink or another special
  file, encrypted, or duplicated;
- anything could be a pickle: a `.pt`/`.pth`/`.pkl`/`.pickle`/`.ckpt`/`.bin`/`.npy`/`.npz`/`.joblib`
  member, or a member starting with pickle's protocol marker (0x80, 2..5) or with a zip header (what
  `torch.save` writes); nothing is ever unpickled;
- a file is not part of the run format (docs/RUN_FORMAT.md), a JSON file does not parse or nests deeper
  than `MAX_JSON_DEPTH` (config.json, status.json, probes.json, trainer_state.json, each history line,
  a safetensors header: never a RecursionError), or a history line is not a JSON object (a torn last
  line is tolerated); a zipped run folder's `.lock` and `launch.json`, this machine's runtime files,
  are skipped, not written;
- the zip holds no config.json, several, or files outside the folder that holds it;
- config.json is malformed (wrong format or version, a bad run id, a configuration core.config refuses,
  a split larger than its dataset's, a `created` time in the future) or describes a model of more than
  `MAX_MODEL_PARAMS` parameters (counted on the meta device: nothing allocated);
- a .safetensors header does not describe exactly the file's bytes, or its tensors are not what the
  config implies: model.safetensors (and the `model/` part of checkpoint.safetensors) must hold exactly
  the model's and the loss's state_dict shapes; optimiser state one tensor of its parameter's shape (or
  a scalar step) per moment; embeddings.safetensors the family's representations (a VAE's μ and log σ²) of
  (n, latent size) with n at most the
  config's validation split, labels/index/source_index of (n,), images of (n, C, H, W) uint8; a
  cached projection (m, 2 or 3) coordinates with m at most n, and the seconds it took; a cached
  evaluation (`evaluations/<name>.json`, a JSON object of at most 4 MB, and its `<name>.safetensors`
  beside it: at most 64 tensors of at most 6 dimensions and 64 MB, its header covering the file exactly);
- a run of that id exists, or the target is the shipped checkpoints folder.

Only then are the members written, streamed in chunks, into a hidden temporary directory inside the
runs root (`.import-<random>`, which `list_runs` skips); it is opened with `core.runs.open_run`, its
checkpoint and weights are loaded (safetensors only), and it is renamed to `<root>/<run_id>` in one
step. On any failure the temporary directory is removed.

Why a small safetensors header parser stays here instead of `safetensors.torch.load(bytes)`: that
call needs the whole member inflated into memory and copies every tensor out of it, which is exactly
the cost a hostile upload must not be able to cause. The header (a little-endian u64 length and a JSON
object of dtype, shape and data_offsets per tensor) is all the size checks need, so it is read alone,
from the start of the member's stream; `safetensors` itself loads the files once they are on disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
import shutil
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any

from core import run_check
from core.families import family_of, load_objective
from core.runs import (
    FORMAT,
    READABLE_VERSIONS,
    SAFE_NAME,
    STATES,
    Run,
    RunFormatError,
    open_run,
    runs_root,
    under_checkpoints,
    upgrade_config,
)

__all__ = [
    "FILE_LIMITS",
    "INFLATION_ALLOWANCE",
    "MAX_ARCHIVE_BYTES",
    "MAX_INFLATION",
    "MAX_JSON_DEPTH",
    "MAX_MEMBERS",
    "MAX_MODEL_PARAMS",
    "MAX_UNPACKED_BYTES",
    "ArchiveError",
    "SafetensorsLayout",
    "archive_name",
    "export_run",
    "import_run",
    "read_safetensors_header",
]

MAX_ARCHIVE_BYTES = 200 * 1024 * 1024  # matches .streamlit/config.toml's server.maxUploadSize (200 MB)
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 256
# A central-directory entry is 46 bytes plus its name, extra field and comment; a run's names are short.
MAX_DIRECTORY_ENTRY_BYTES = 1024
# float32 weights of this many parameters (200 MB) fill an upload: a model described as bigger cannot
# have come from one, and is refused before it is built (it is counted on the meta device).
MAX_MODEL_PARAMS = run_check.MAX_MODEL_PARAMS
MAX_JSON_DEPTH = 32  # a run's JSON nests 5 deep at most; this stops absurd nesting long before Python's stack
MAX_HEADER_BYTES = 8 * 1024 * 1024  # a safetensors header: a few hundred bytes per tensor
MAX_LINE_BYTES = 1024 * 1024  # one history.jsonl record
# Run files hardly compress (weights and embeddings are floats): past a small run's size, a zip that
# unpacks to more than this many times its own size holds padding (zeros), not a trained run.
MAX_INFLATION = 16
INFLATION_ALLOWANCE = 64 * 1024 * 1024
FUTURE_TOLERANCE = timedelta(days=1)  # clocks disagree a little; a run "created" later than this is refused
CHUNK = 1024 * 1024

CHECKPOINT_FILE = getattr(Run, "CHECKPOINT", "checkpoint.safetensors")  # the one-file checkpoint
JSON_FILES = (Run.CONFIG, Run.STATUS, Run.TRAINER, Run.PROBES)
JSONL_FILES = (Run.HISTORY,)
TENSOR_FILES = (Run.MODEL, CHECKPOINT_FILE, Run.OPTIMIZER, Run.EMBEDDINGS)
TEXT_FILES = ("train.log",)
RUN_FILES = JSON_FILES + JSONL_FILES + TENSOR_FILES + TEXT_FILES
SKIPPED_FILES = (Run.LOCK, "launch.json")  # per-machine runtime files a zipped run folder may hold
# The most each non-tensor file may unpack to (a tensor file's size is what its header implies).
FILE_LIMITS = {Run.CONFIG: 64 * 1024, Run.STATUS: 64 * 1024, Run.TRAINER: 4 * 1024 * 1024,
               Run.PROBES: 4 * 1024 * 1024, Run.HISTORY: 64 * 1024 * 1024, "train.log": 16 * 1024 * 1024}
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz", ".joblib")
_PROJECTION = re.compile(r"^projections/[A-Za-z0-9][A-Za-z0-9._-]{0,254}\.safetensors$")
# An evaluation a run caches (Run.save_evaluation): evaluations/<name>.json, and its tensors beside it.
_EVALUATION = re.compile(r"^evaluations/([A-Za-z0-9][A-Za-z0-9._-]{0,127})\.(json|safetensors)$")
MAX_EVALUATION_JSON_BYTES = 4 * 1024 * 1024  # an evaluation's results (grids' labels, per-class numbers, ...)
MAX_EVALUATION_TENSOR_BYTES = 64 * 1024 * 1024  # its tensors (neighbour-grid and gallery images, curves)
MAX_EVALUATION_TENSORS = 64
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8}

_END_RECORD = struct.Struct("<4s4H2LH")  # end of central directory: signature ... comment length
_END_RECORD_64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record
_END_LOCATOR_64 = struct.Struct("<4sLQL")  # zip64 end of central directory locator


class ArchiveError(ValueError):
    """An archive that is not a safe, well-formed run; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------------
# Export


def archive_name(run: Run) -> str:
    """The file name to offer for a run's zip."""
    return f"{run.run_id}.zip"


def _export_members(run: Run) -> list[tuple[str, Path]]:
    members = [(name, run.path / name) for name in RUN_FILES if (run.path / name).is_file()]
    for folder, pattern in (("projections", _PROJECTION), ("evaluations", _EVALUATION)):
        if not (run.path / folder).is_dir():
            continue
        for file in sorted((run.path / folder).iterdir()):
            name = f"{folder}/{file.name}"
            if pattern.match(name) and file.is_file() and not file.is_symlink():
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
# Import: the archive itself, before zipfile parses it


def _source(data: bytes | bytearray | IO[bytes] | str | Path, max_bytes: int) -> IO[bytes]:
    """A seekable binary file of the upload, refused when over max_bytes (a path is opened, not read)."""
    if isinstance(data, (str, Path)):
        size = Path(data).stat().st_size
        if size > max_bytes:
            raise ArchiveError(_too_big(size, max_bytes))
        return open(data, "rb")  # closed by import_run
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise ArchiveError(_too_big(len(data), max_bytes))
        return io.BytesIO(data)
    if hasattr(data, "seek") and hasattr(data, "tell"):
        data.seek(0, os.SEEK_END)
        size = data.tell()
        data.seek(0)
        if size > max_bytes:
            raise ArchiveError(_too_big(size, max_bytes))
        return data
    raw = data.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ArchiveError(_too_big(len(raw), max_bytes))
    return io.BytesIO(raw)


def _size(fh: IO[bytes]) -> int:
    at = fh.tell()
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(at)
    return size


def _too_big(size: int, limit: int) -> str:
    return (f"the archive is {size / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB limit for an upload; "
            f"copy a large run into the runs folder directly instead")


def _not_a_zip(why: str) -> ArchiveError:
    return ArchiveError(f"the upload is not a readable zip file ({why}); export a run from the Train page to get "
                        f"one. Nothing was written")


def _end_record(fh: IO[bytes]) -> tuple[int, int]:
    """(entries, central directory bytes) from the end-of-central-directory record (zip64's when it
    points there), found where zipfile finds it: the last 22 bytes, else the last signature within the
    64 KB comment that may follow it. Reading it costs 64 KB, whatever the archive holds."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size < _END_RECORD.size:
        raise _not_a_zip("it is too short")
    fh.seek(size - _END_RECORD.size)
    tail = fh.read(_END_RECORD.size)
    start = size - _END_RECORD.size
    if not (tail[:4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
        span = min(size, _END_RECORD.size + (1 << 16))  # as zipfile searches
        fh.seek(size - span)
        tail = fh.read(span)
        found = tail.rfind(b"PK\x05\x06")
        if found < 0 or len(tail) - found < _END_RECORD.size:
            raise _not_a_zip("no end-of-central-directory record")
        start = size - span + found
        tail = tail[found:found + _END_RECORD.size]
    fields = _END_RECORD.unpack(tail)
    entries, directory, offset = fields[4], fields[5], fields[6]
    if (entries == 0xFFFF or directory == 0xFFFFFFFF or offset == 0xFFFFFFFF) and start >= _END_LOCATOR_64.size:
        fh.seek(start - _END_LOCATOR_64.size)
        locator = fh.read(_END_LOCATOR_64.size)
        if locator[:4] == b"PK\x06\x07" and start >= _END_LOCATOR_64.size + _END_RECORD_64.size:
            fh.seek(start - _END_LOCATOR_64.size - _END_RECORD_64.size)  # where zipfile reads it
            record = fh.read(_END_RECORD_64.size)
            if record[:4] == b"PK\x06\x06":
                fields64 = _END_RECORD_64.unpack(record)
                entries, directory = fields64[7], fields64[8]
    return entries, directory


def _check_end_record(fh: IO[bytes], max_members: int) -> None:
    entries, directory = _end_record(fh)
    if entries > max_members:
        raise ArchiveError(f"the archive holds {entries:,} entries, more than the {max_members} a run can have; "
                           f"zip one run folder (export it from the Train page). Nothing was written")
    if directory > max(max_members, 1) * MAX_DIRECTORY_ENTRY_BYTES:
        raise ArchiveError(f"the archive's central directory is {directory:,} bytes, more than {max_members} "
                           f"entries can need (its entry count is wrong, or it holds far more files than a run); "
                           f"zip one run folder. Nothing was written")
    fh.seek(0)


# ---------------------------------------------------------------------------------------------------
# Import: names and declared sizes


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


def _is_tensor_file(name: str) -> bool:
    return name in TENSOR_FILES or name.startswith("projections/") or _is_evaluation(name, "safetensors")


def _is_evaluation(name: str, suffix: str | None = None) -> bool:
    match = _EVALUATION.match(name)
    return match is not None and (suffix is None or match.group(2) == suffix)


def _plan(archive: zipfile.ZipFile, max_members: int, max_unpacked: int) -> dict[str, zipfile.ZipInfo]:
    """The members to import, by their path inside the run, after the name, type and declared-size checks."""
    infos = archive.infolist()
    if len(infos) > max_members:
        raise ArchiveError(f"the archive holds {len(infos)} entries, more than the {max_members} a run can have; "
                           f"nothing was written")
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
    configs = [path for path, _ in files if path.name == Run.CONFIG and "projections" not in path.parts
               and "evaluations" not in path.parts]
    if not configs:
        raise ArchiveError("the archive has no config.json, so it is not a run (export one from the Train page "
                           "or zip a run directory from runs/). Nothing was written")
    if len(configs) > 1:
        raise ArchiveError(f"the archive holds {len(configs)} config.json files ({', '.join(map(str, configs[:3]))}"
                           f"); upload one run per zip. Nothing was written")
    prefix = configs[0].parent
    plan: dict[str, zipfile.ZipInfo] = {}
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
        if name not in RUN_FILES and not _PROJECTION.match(name) and not _is_evaluation(name):
            raise ArchiveError(f"{info.filename} is not a file of the run format (expected {', '.join(RUN_FILES)}, "
                               f"projections/*.safetensors and evaluations/*.json with their .safetensors); nothing "
                               f"was written")
        limit = MAX_EVALUATION_JSON_BYTES if _is_evaluation(name, "json") else FILE_LIMITS.get(name)
        if limit is not None and info.file_size > limit:
            fix = ("leave it out of the zip: it is only the trainer's console output" if name == "train.log"
                   else "it cannot be a file this app wrote")
            raise ArchiveError(f"{name} unpacks to {info.file_size / 1e6:.1f} MB, over its {limit / 1e6:.1f} MB "
                               f"limit; {fix}. Nothing was written")
        total += info.file_size
        if total > max_unpacked:
            raise ArchiveError(f"the archive would unpack to more than the {max_unpacked / 1e6:.0f} MB limit (its "
                               f"members declare {sum(i.file_size for _, i in files) / 1e6:.0f} MB); copy a large "
                               f"run into the runs folder directly. Nothing was written")
        plan[name] = info
    return plan


def _check_inflation(plan: dict[str, zipfile.ZipInfo], archive_bytes: int) -> None:
    """Last of the checks (after the more telling ones on each file's shapes): a zip of zeros."""
    total = sum(info.file_size for info in plan.values())
    if total > INFLATION_ALLOWANCE and total > MAX_INFLATION * archive_bytes:
        raise ArchiveError(f"the archive's {archive_bytes / 1e6:.1f} MB would unpack to {total / 1e6:.0f} MB, "
                           f"{total / max(archive_bytes, 1):.0f} times its size; a run's weights and embeddings "
                           f"hardly compress, so this holds padding, not a trained run (export the run again). "
                           f"Nothing was written")


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Iterator[bytes]:
    """The member's bytes in chunks, never more than it declares (zipfile stops there; counted here too)."""
    read = 0
    try:
        with archive.open(info) as fh:
            while chunk := fh.read(CHUNK):
                read += len(chunk)
                if read > info.file_size:
                    raise ArchiveError(f"{name} unpacks to more than the {info.file_size:,} bytes it declares; "
                                       f"nothing was written")
                yield chunk
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{name} cannot be read from the archive ({exc}); export the run again. Nothing was "
                           f"written") from None
    if read != info.file_size:
        raise ArchiveError(f"{name} unpacks to {read:,} bytes, not the {info.file_size:,} it declares; export the "
                           f"run again. Nothing was written")


def _read_whole(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """A small member (its declared size is already within its limit) in memory."""
    return b"".join(_chunks(archive, info, name))


@contextlib.contextmanager
def _member_head(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Iterator[Callable[[int], bytes]]:
    """`read(n)` over the member's first bytes, inflating only as far as asked."""
    errors = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError)
    try:
        fh = archive.open(info)
    except errors as exc:
        raise ArchiveError(f"{name} cannot be read from the archive ({exc}); nothing was written") from None

    def read(n: int) -> bytes:
        try:
            return fh.read(n)
        except errors as exc:
            raise ArchiveError(f"{name} cannot be read from the archive ({exc}); nothing was written") from None

    with fh:
        yield read


# ---------------------------------------------------------------------------------------------------
# Import: JSON and safetensors headers


def _json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep lists and objects nest in a parsed value (stops counting past `limit`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest if isinstance(value, (dict, list)) else 0


class _NotJSON(ArchiveError):
    """Text that does not parse as JSON (a torn history line may be that; nesting too deep never is)."""


def _parse_json(name: str, data: bytes) -> Any:
    """JSON text -> value. _NotJSON for bad UTF-8 or bad JSON; ArchiveError for nesting deeper than
    MAX_JSON_DEPTH (or than Python's parser recurses): a run's JSON nests a few levels at most."""
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _NotJSON(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start}); nothing was written") from None
    except RecursionError:
        value = None
        deep = True
    except ValueError as exc:  # json.JSONDecodeError, and integers longer than Python reads
        raise _NotJSON(f"{name} is not valid JSON ({exc}); nothing was written") from None
    else:
        deep = isinstance(value, (dict, list)) and _json_depth(value) > MAX_JSON_DEPTH
    if deep:
        raise ArchiveError(f"{name} nests lists or objects more than {MAX_JSON_DEPTH} levels deep; a run's JSON "
                           f"nests a few levels at most, so this is not a file this app wrote. Nothing was written")
    return value


def _check_json(name: str, data: bytes) -> dict:
    why = _looks_pickled(data[:4])
    if why:
        raise _pickle_refusal(name, why)
    value = _parse_json(name, data)
    if not isinstance(value, dict):
        raise ArchiveError(f"{name} must hold a JSON object; nothing was written")
    return value


def _check_jsonl(name: str, chunks: Iterator[bytes]) -> None:
    """history.jsonl line by line as it streams: each line a JSON object (a torn last line is tolerated,
    as core.runs does), no line over MAX_LINE_BYTES. Nothing is kept."""
    pending = b""
    number = 0
    bad: int | None = None  # the line that did not parse; only the last line may be torn
    first = True
    for chunk in chunks:
        if first:
            why = _looks_pickled(chunk[:4])
            if why:
                raise _pickle_refusal(name, why)
            first = False
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE_BYTES:
            raise ArchiveError(f"{name} line {number + len(lines) + 1} is over {MAX_LINE_BYTES // 1024} KB; a "
                               f"history record is a few hundred bytes. Nothing was written")
        for line in lines:
            number += 1
            bad = _history_line(name, number, line, bad)
    if pending.strip():
        _history_line(name, number + 1, pending, bad)
    # A bad line followed by another raised in _history_line; one left here was the last: a torn append.


def _history_line(name: str, number: int, line: bytes, bad: int | None) -> int | None:
    """None if the line is a JSON object; its number if it does not parse (a torn line, allowed last)."""
    if not line.strip():
        return bad
    if bad is not None:  # a bad line followed by another line: it was not a torn last line
        raise ArchiveError(f"{name} line {bad} is not a JSON object; nothing was written")
    if len(line) > MAX_LINE_BYTES:
        raise ArchiveError(f"{name} line {number} is over {MAX_LINE_BYTES // 1024} KB; a history record is a few "
                           f"hundred bytes. Nothing was written")
    try:
        value = _parse_json(f"{name} line {number}", line)
    except _NotJSON:
        return number
    if not isinstance(value, dict):
        raise ArchiveError(f"{name} line {number} is not a JSON object; nothing was written")
    return None


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsLayout:
    """What a safetensors header says: its tensors, metadata and the file size it implies."""

    header_bytes: int  # 8 + the JSON header's length
    data_bytes: int
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.data_bytes


def read_safetensors_header(name: str, read: Callable[[int], bytes], size: int) -> SafetensorsLayout:
    """Parse a safetensors header from `read(n)` (the file's first bytes) for a file of `size` bytes,
    reading no tensor data. ArchiveError unless the header is well formed and its tensors, laid end to
    end with byte counts that match dtype × shape, cover exactly the rest of the file."""
    head = read(8)
    if len(head) < 8:
        raise ArchiveError(f"{name} is too short to be a safetensors file; nothing was written")
    (header_len,) = struct.unpack("<Q", head)
    if header_len < 2 or header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        why = _looks_pickled(head[:4])
        if why:
            raise _pickle_refusal(name, why)
        raise ArchiveError(f"{name} is not a safetensors file (its header length {header_len:,} does not fit a "
                           f"{size:,}-byte file); nothing was written")
    text = read(header_len)
    if len(text) != header_len:
        raise ArchiveError(f"{name} ends inside its safetensors header; nothing was written")
    try:
        header = _parse_json(f"{name}'s header", text)
    except _NotJSON:
        why = _looks_pickled(head[:4])
        if why:
            raise _pickle_refusal(name, why) from None
        raise ArchiveError(f"{name} is not a safetensors file (its header is not JSON); nothing was written") from None
    if not isinstance(header, dict):
        raise ArchiveError(f"{name} is not a safetensors file (its header is not an object); nothing was written")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArchiveError(f"{name}: the safetensors metadata must map names to strings; nothing was written")
    tensors: dict[str, TensorEntry] = {}
    for key, entry in header.items():
        ok = (isinstance(entry, dict) and entry.get("dtype") in DTYPE_BYTES
              and isinstance(entry.get("shape"), list) and len(entry["shape"]) <= 8
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in entry["data_offsets"])
              and 0 <= entry["data_offsets"][0] <= entry["data_offsets"][1])
        if not ok:
            raise ArchiveError(f"{name}: tensor {key!r} has a malformed safetensors entry; nothing was written")
        shape = tuple(entry["shape"])
        start, end = entry["data_offsets"]
        if end - start != math.prod(shape) * DTYPE_BYTES[entry["dtype"]]:
            raise ArchiveError(f"{name}: tensor {key!r} declares {end - start:,} bytes, but {entry['dtype']} × "
                               f"{list(shape)} is {math.prod(shape) * DTYPE_BYTES[entry['dtype']]:,}; nothing was "
                               f"written")
        tensors[key] = TensorEntry(entry["dtype"], shape, start, end)
    position = 0
    for key, entry in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if entry.start != position:
            raise ArchiveError(f"{name}: tensor {key!r} does not start where the previous one ends (overlapping "
                               f"or gapped data); nothing was written")
        position = entry.end
    layout = SafetensorsLayout(8 + header_len, position, tensors, metadata)
    if layout.total_bytes != size:
        raise ArchiveError(f"{name} is {size:,} bytes but its header describes {layout.total_bytes:,} (truncated, "
                           f"or padded); export the run again. Nothing was written")
    return layout


def _check_safetensors(name: str, data: bytes) -> SafetensorsLayout:
    """The header of a safetensors file held in memory (see read_safetensors_header)."""
    stream = io.BytesIO(data)
    return read_safetensors_header(name, stream.read, len(data))


# ---------------------------------------------------------------------------------------------------
# Import: what config.json implies


@dataclass
class Expected:
    """What the uploaded config describes: its run id and the tensors its files must hold."""

    run_id: str
    tensors: run_check.Expected


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _check_config(config: dict) -> Expected:
    """config.json as a run of this format with a configuration core.config accepts, and a model within
    MAX_MODEL_PARAMS; returns what the run's tensor files must hold."""
    if config.get("format") != FORMAT:
        raise ArchiveError(f"config.json is not a robust-loss-lab run (its \"format\" is {config.get('format')!r}, "
                           f"not {FORMAT!r}); nothing was written")
    if config.get("version") not in READABLE_VERSIONS:
        raise ArchiveError(f"config.json has format version {config.get('version')!r}; this app reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))}; nothing was written")
    run_id = config.get("run_id")
    if not isinstance(run_id, str) or not SAFE_NAME.match(run_id):
        raise ArchiveError(f"config.json's run_id {run_id!r} is not a valid run name (letters, digits, '.', '_', "
                           f"'-'); nothing was written")
    if "created" in config:
        created = _parse_time(config["created"])
        if created is None:
            raise ArchiveError(f"config.json's created {config['created']!r:.60} is not an ISO time such as "
                               f"2026-01-31T12:00:00+00:00; nothing was written")
        if created > datetime.now(timezone.utc) + FUTURE_TOLERANCE:
            raise ArchiveError(f"config.json's created ({config['created']}) is in the future; set it to when the "
                               f"run was made (the clock of the machine that made it is wrong). Nothing was written")
    split = config.get("split")
    if not isinstance(split, dict) or not all(isinstance(split.get(k), int) and not isinstance(split.get(k), bool)
                                              and split[k] >= 0 for k in ("train", "val", "test")):
        raise ArchiveError(f"config.json's split {split!r:.80} must hold the image counts train, val and test; "
                           f"nothing was written")
    from core import datasets
    from core.config import ConfigError, normalize_config

    try:
        normalized = normalize_config(upgrade_config(config), split=split)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"config.json is malformed: {exc}; nothing was written") from None
    if config.get("model") != normalized["model"]:
        raise ArchiveError(f"config.json's model {config.get('model')!r:.120} does not match its dataset and latent "
                           f"size ({normalized['model']!r}); nothing was written")
    info = datasets.dataset_info(normalized["dataset"])
    if split["val"] > info.val_size:
        raise ArchiveError(f"config.json's split.val is {split['val']:,}, more than the {info.val_size:,} validation "
                           f"images {normalized['dataset']} has; nothing was written")
    return _expected(normalized, run_id, split["val"])


def _expected(config: dict, run_id: str, val_rows: int) -> Expected:
    try:
        expected = run_check.expected_tensors({**config, "split": {**config["split"], "val": val_rows}})
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ArchiveError(f"config.json describes a model that cannot be built ({exc}); nothing was written") from None
    if expected.parameter_count > run_check.MAX_MODEL_PARAMS:
        raise ArchiveError(f"config.json describes a model of {expected.parameter_count:,} parameters "
                           f"({config['dataset']}, width {config.get('width')}, latent_dim {config['latent_dim']}: a "
                           f"{family_of(config).title}), "
                           f"more than the {run_check.MAX_MODEL_PARAMS:,} an upload can hold; train it here, or copy "
                           f"the run folder into the runs folder directly. Nothing was written")
    return Expected(run_id, expected)


def _headers(tensors: dict[str, TensorEntry]) -> run_check.Header:
    return {k: (v.dtype, v.shape) for k, v in tensors.items()}


def _refuse(name: str, why: str | None, fix: str) -> None:
    if why:
        raise ArchiveError(f"{name} does not fit config.json: {why}; {fix}. Nothing was written")


_WEIGHTS_FIX = "upload the weights trained with this config"


def _check_checkpoint(name: str, layout: SafetensorsLayout, expected: Expected) -> None:
    prefixes = ("model/", "optimizer/", "counts/")
    other = [k for k in layout.tensors if not k.startswith(prefixes)]
    if other:
        raise ArchiveError(f"{name} holds {', '.join(map(repr, other[:4]))}, neither model/, optimizer/ nor counts/ "
                           f"state; nothing was written")
    part = {p: {k[len(p):]: v for k, v in layout.tensors.items() if k.startswith(p)} for p in prefixes}
    _refuse(name, run_check.weights_mismatch(_headers(part["model/"]), expected.tensors), _WEIGHTS_FIX)
    _refuse(name, run_check.optimizer_mismatch(_headers(part["optimizer/"]), expected.tensors), _WEIGHTS_FIX)
    if any(len(v.shape) > 1 or math.prod(v.shape) > 1 << 20 for v in part["counts/"].values()):
        raise ArchiveError(f"{name}: its counts/ tensors are not per-epoch counts; nothing was written")
    if "trainer_state" in layout.metadata:
        state = _parse_json(f"{name}'s trainer_state", layout.metadata["trainer_state"].encode("utf-8"))
        if not isinstance(state, dict):
            raise ArchiveError(f"{name}'s trainer_state must be a JSON object; nothing was written")


def _check_tensors(archive: zipfile.ZipFile, plan: dict[str, zipfile.ZipInfo], expected: Expected) -> None:
    """Every tensor file's header against the config, reading no tensor data."""
    layouts: dict[str, SafetensorsLayout] = {}
    for name, info in plan.items():
        if not _is_tensor_file(name):
            continue
        with _member_head(archive, info, name) as read:
            layouts[name] = read_safetensors_header(name, read, info.file_size)
    rows = expected.tensors.val_rows
    for name, layout in layouts.items():
        if name == Run.MODEL:
            _refuse(name, run_check.weights_mismatch(_headers(layout.tensors), expected.tensors), _WEIGHTS_FIX)
        elif name == CHECKPOINT_FILE:
            _check_checkpoint(name, layout, expected)
        elif name == Run.OPTIMIZER:
            _refuse(name, run_check.optimizer_mismatch(_headers(layout.tensors), expected.tensors), _WEIGHTS_FIX)
        elif name == Run.EMBEDDINGS:
            why, rows = run_check.embeddings_mismatch(_headers(layout.tensors), expected.tensors)
            _refuse(name, why, "export the run again")
    for name, layout in layouts.items():
        if name.startswith("projections/"):
            _refuse(name, run_check.projection_mismatch(_headers(layout.tensors), rows),
                    "leave the projections out of the zip (they are recomputed)")
        elif _is_evaluation(name, "safetensors"):
            _refuse(name, _evaluation_mismatch(name, layout, plan),
                    "leave the evaluations out of the zip (they are recomputed)")


def _evaluation_mismatch(name: str, layout: SafetensorsLayout, plan: dict[str, zipfile.ZipInfo]) -> str | None:
    """What is wrong with an evaluation's tensors: no results file beside them, too many, too large, or of
    too many dimensions (the header has been checked against the file's size already)."""
    if name.removesuffix(".safetensors") + ".json" not in plan:
        return f"it has no {Path(name).stem}.json beside it (an evaluation's results)"
    if len(layout.tensors) > MAX_EVALUATION_TENSORS:
        return f"it holds {len(layout.tensors)} tensors, more than the {MAX_EVALUATION_TENSORS} an evaluation has"
    if layout.data_bytes > MAX_EVALUATION_TENSOR_BYTES:
        return (f"its tensors take {layout.data_bytes / 1e6:.1f} MB, over the "
                f"{MAX_EVALUATION_TENSOR_BYTES / 1e6:.0f} MB an evaluation may hold")
    deep = next((k for k, v in layout.tensors.items() if len(v.shape) > 6), None)
    if deep is not None:
        return f"{deep} has {len(layout.tensors[deep].shape)} dimensions; an evaluation's tensors have at most 6"
    return None


def _check_members(archive: zipfile.ZipFile, plan: dict[str, zipfile.ZipInfo]) -> tuple[str, dict[str, bytes]]:
    """Content checks (pickles, JSON, config, tensor headers); returns the run id and the small files read."""
    kept: dict[str, bytes] = {}
    for name in JSON_FILES:
        if name in plan:
            kept[name] = _read_whole(archive, plan[name], name)
            value = _check_json(name, kept[name])
            if name == Run.STATUS and value.get("state", "created") not in STATES:
                raise ArchiveError(f"status.json's state {value.get('state')!r:.40} is not one of "
                                   f"{', '.join(STATES)}; nothing was written")
    expected = _check_config(_check_json(Run.CONFIG, kept[Run.CONFIG]))
    for name, info in plan.items():
        if _is_evaluation(name, "json"):
            kept[name] = _read_whole(archive, info, name)
            _check_json(name, kept[name])
    if Run.HISTORY in plan:
        _check_jsonl(Run.HISTORY, _chunks(archive, plan[Run.HISTORY], Run.HISTORY))
    for name in TEXT_FILES:
        if name in plan:
            with _member_head(archive, plan[name], name) as read:
                why = _looks_pickled(read(4))
            if why:
                raise _pickle_refusal(name, why)
    _check_tensors(archive, plan, expected)
    return expected.run_id, kept


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
            load_objective(run)
        if run.has_embeddings:
            tensors = run.embeddings()
            missing = [k for k in family_of(run.config).required_embeddings if k not in tensors]
            if missing:
                raise RunFormatError(f"embeddings.safetensors lacks {', '.join(missing)}")
        for file in sorted((path / Run.EVALUATIONS).glob("*.json")):
            if run.evaluation(file.stem) is None:
                raise RunFormatError(f"evaluations/{file.name} (or its tensors) cannot be read")
    except RunFormatError as exc:
        raise ArchiveError(f"the uploaded run is damaged: {exc}. Nothing was written") from None
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ArchiveError(f"the uploaded run cannot be loaded ({type(exc).__name__}: {exc}). Nothing was "
                           f"written") from None
    return run


def _write_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, file: Path,
                  content: bytes | None) -> None:
    with open(file, "xb") as fh:
        if content is not None:
            fh.write(content)
        else:
            for chunk in _chunks(archive, info, name):
                fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


def import_run(data: bytes | bytearray | IO[bytes] | str | Path, root: str | Path | None = None, *,
               max_bytes: int = MAX_ARCHIVE_BYTES, max_members: int = MAX_MEMBERS,
               max_unpacked: int = MAX_UNPACKED_BYTES) -> Run:
    """Add the run in a zip (bytes, a binary file or a path) under `root` (default the runs root).

    ArchiveError (with what is wrong) for anything unsafe or malformed; then nothing is left behind."""
    source = _source(data, max_bytes)
    try:
        _check_end_record(source, max_members)
        try:
            archive = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise _not_a_zip(str(exc)) from None
        with archive:
            plan = _plan(archive, max_members, max_unpacked)
            run_id, kept = _check_members(archive, plan)
            _check_inflation(plan, _size(source))
            root = Path(root).expanduser() if root is not None else runs_root()
            if under_checkpoints(root):
                raise ArchiveError(f"{root} is the shipped checkpoints folder, read-only in the app; import into "
                                   f"runs/")
            target = root / run_id
            if target.exists():
                raise ArchiveError(f"a run named {run_id} is already in {root}; delete it first if you want to "
                                   f"replace it. Nothing was written")
            staging = root / f".import-{secrets.token_hex(6)}"
            try:
                root.mkdir(parents=True, exist_ok=True)
                staging.mkdir()
                for name, info in plan.items():
                    file = staging / name
                    file.parent.mkdir(parents=True, exist_ok=True)
                    _write_member(archive, info, name, file, kept.get(name))
                _verify_on_disk(staging)
                os.rename(staging, target)  # one step: the run appears whole or not at all
            except OSError as exc:  # an unwritable or full runs folder, or a run of that id made meanwhile
                shutil.rmtree(staging, ignore_errors=True)
                raise ArchiveError(f"could not add {run_id} to {root} ({exc.strerror or exc}); free space or make "
                                   f"the runs folder writable ($ROBUST_LOSS_LAB_RUNS). Nothing was written") from None
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    finally:
        if source is not data:
            source.close()
    return open_run(target)
