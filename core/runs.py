"""The run store: one directory per training run (docs/RUN_FORMAT.md). The only code that touches one.

Roots: `runs_root()` (`$ROBUST_LOSS_LAB_RUNS`, else `<repo>/runs`: the user's) and `checkpoints_root()`
(`<repo>/checkpoints`: shipped with the app, read-only there; `Run.shipped` tells).

    create_run(config, root=None) -> Run     validate (core.config), make <root>/<run_id>/, write
                                             config.json and status.json {"state": "created"}
    open_run(path) -> Run                    RunFormatError for a foreign or malformed directory
    list_runs(roots=None) -> list[RunInfo]   newest first; foreign folders skipped, broken runs listed
                                             with `error` set
    delete_run(path, allow_shipped=False)    refuses non-runs, shipped runs and runs being trained

Run: `.path`, `.run_id`, `.config`, `.shipped`, `.status()`, `.history()`, `.embeddings()`,
`.load_model()`, `.load_loss()`, `.lock()`, `.lock_holder()`; writers used by the training engine: `write_status`,
`append_history`, `truncate_history`, `save_checkpoint`/`load_checkpoint`, `save_embeddings`; caches for
issues 5 and 7: `save_projection`/`load_projection`, `save_probes`/`probes`.

Every write goes to a temporary name in the same directory and is renamed over the target (`os.replace`
is atomic), so a reader sees the old file or the new one, never half of one. Nothing is pickled; tensors
are safetensors. The lock is `fcntl.flock` on `<run>/.lock`: the kernel drops it when the process dies,
so a crash never leaves a run stuck; a run whose status says "running" while nobody holds the lock reads
as "interrupted".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.paths import REPO

__all__ = [
    "FORMAT",
    "SAFE_NAME",
    "STATES",
    "VERSION",
    "Checkpoint",
    "LockHolder",
    "Run",
    "RunFormatError",
    "RunInfo",
    "RunLocked",
    "append_jsonl",
    "check_config_types",
    "checkpoints_root",
    "clean_record",
    "create_run",
    "delete_run",
    "list_runs",
    "new_run_id",
    "now_iso",
    "open_run",
    "read_jsonl",
    "remove_stale_temporaries",
    "runs_root",
    "shared_images",
    "under_checkpoints",
    "upgrade_config",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_safetensors_atomic",
]

FORMAT = "robust-loss-lab/run"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # run format 1: the VAE-only format, read through `upgrade_config`
STATES = ("created", "running", "finished", "stopped", "failed")
# A run id, or a cached projection's method/key: safe as one file name (no separators, no leading dot).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class RunFormatError(Exception):
    """A directory that is not a run of this format, or a run file that is damaged."""


class RunLocked(Exception):
    """Another process is training into this run."""


def runs_root() -> Path:
    """Where the user's runs live: `$ROBUST_LOSS_LAB_RUNS`, else `<repo>/runs`."""
    env = os.environ.get("ROBUST_LOSS_LAB_RUNS")
    return Path(env).expanduser() if env else REPO / "runs"


def checkpoints_root() -> Path:
    """Runs shipped with the app: `<repo>/checkpoints` (`$ROBUST_LOSS_LAB_CHECKPOINTS` overrides it)."""
    env = os.environ.get("ROBUST_LOSS_LAB_CHECKPOINTS")
    return Path(env).expanduser() if env else REPO / "checkpoints"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------
# Atomic file helpers


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")


@contextlib.contextmanager
def _atomic(path: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` if the block succeeds.
    durable: fsync before the rename (checkpoints); status updates skip it (they are rewritten often)."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # safetensors writes 0600; runs are shared and shipped
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (its directory entry reaches the disk)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


TMP_PATTERN = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (`.<name>.tmp-<pid>-<hex>`) that a killed writer left in `folder`.

    A file is stale when the process named in it is gone; one a live process is writing is left alone.
    Returns the files removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TMP_PATTERN.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` atomically (temporary file + rename)."""
    with _atomic(Path(path), durable) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True) -> None:
    """Write `obj` as JSON to `path` atomically (temporary file + rename)."""
    text = json.dumps(obj, indent=1, allow_nan=False, default=_json_default)
    with _atomic(Path(path), durable) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def write_safetensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
                             ) -> None:
    """Write tensors (moved to CPU, made contiguous) to a safetensors file atomically."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with _atomic(Path(path)) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _nan_to_null(record: dict) -> dict:
    """JSON has no NaN/Infinity: write them as null (and keep the lines parseable everywhere)."""
    return {k: (None if isinstance(v, float) and not (v == v and abs(v) != float("inf")) else v)
            for k, v in record.items()}


def append_jsonl(path: Path, records: dict | Iterable[dict]) -> None:
    """Append one JSON line per record. A crash may leave a torn last line; `read_jsonl` skips it."""
    if isinstance(records, dict):
        records = [records]
    text = "".join(json.dumps(_nan_to_null(r), allow_nan=False, default=_json_default) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; [] if absent. A line that is not a JSON object in UTF-8 (a torn
    write, a damaged byte, absurd nesting) is skipped: one bad line never hides the rest."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise RunFormatError(f"{path} is not valid JSON ({why})") from None
    except IsADirectoryError:
        raise RunFormatError(f"{path} is a directory, not a file; remove it") from None


def new_run_id(config: dict) -> str:
    """`<UTC time>-<dataset>-<family>-<loss>-z<latent>-<4 hex>`: sorts by time, says what it is (the family
    and its reconstruction loss), never collides."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parts = [stamp, config["dataset"], config.get("family", "vae")]
    if config.get("loss"):
        parts.append(config["loss"])
    return "-".join([*parts, f"z{config['latent_dim']}", secrets.token_hex(2)])


def under_checkpoints(path: str | Path) -> bool:
    """Whether `path` is the shipped checkpoints folder or inside it (read-only for the app)."""
    try:
        Path(path).resolve().relative_to(checkpoints_root().resolve())
        return True
    except (ValueError, OSError):
        return False


# ---------------------------------------------------------------------------------------------------
# Runs

# The fields every run's config.json has, with the JSON type each must be: a config that fails this is
# damaged, and is refused with the field named (never a traceback further in).
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {"run_id": (str,), "dataset": (str,), "loss": (str,),
                                              "latent_dim": (int,), "model": (dict,), "split": (dict,)}
_SPLIT_KEYS = ("train", "val", "test")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_config_types(config: dict, where: Path | str) -> None:
    """RunFormatError naming the field when a run config lacks a field or holds the wrong type in it."""
    wanted = dict(_CONFIG_TYPES)
    if config.get("version") != 1:
        wanted["family"] = (str,)
    for key, types in wanted.items():
        if key not in config:
            raise RunFormatError(f"{where} lacks the field {key!r}; the run is damaged (retrain it, or restore "
                                 f"config.json from a copy)")
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise RunFormatError(f"{where}: {key!r} should be {' or '.join(t.__name__ for t in types)}, not "
                                 f"{_type_name(value)} ({value!r:.60}); the run is damaged (retrain it, or restore "
                                 f"config.json from a copy)")
    for key in _SPLIT_KEYS:
        value = config["split"].get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RunFormatError(f"{where}: split.{key} should be a count of images, not {value!r:.60}; the run "
                                 f"is damaged")


def upgrade_config(config: dict) -> dict:
    """A run format 1 config read as format 2 (in memory; the file is left as it is): format 1 ran only
    VAEs with Adam and no weight decay, and kept Student's t's ν in `loss_alpha`."""
    if config.get("version") != 1:
        return config
    out = {"family": "vae", "optimizer": "adam", "weight_decay": 0.0, "loss_nu": None, **config}
    if out.get("loss") == "students_t":
        out["loss_nu"], out["loss_alpha"] = out.get("loss_alpha"), None
    return out


_RECORD_INTS = ("epoch", "step", "epoch_step")


def clean_record(record: dict) -> dict | None:
    """A history record fit to read, or None: "kind" must be "step" or "epoch" and its counters whole
    numbers; any other value that is not a number (or null) reads as null."""
    if record.get("kind") not in ("step", "epoch"):
        return None
    for key in _RECORD_INTS:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return None
    return {k: (v if k == "kind" or v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) else None)
            for k, v in record.items()}


# What a checkpoint's trainer state must hold for a resume, and the JSON type of each.
_TRAINER_TYPES: dict[str, tuple[type, ...]] = {"global_step": (int,), "epoch": (int,), "epoch_step": (int,),
                                               "steps_per_epoch": (int,), "epoch_acc": (list,),
                                               "optimizer": (dict,)}


def _check_trainer_state(trainer: dict, where: Path) -> None:
    for key, types in _TRAINER_TYPES.items():
        value = trainer.get(key)
        if isinstance(value, bool) or not isinstance(value, types):
            raise RunFormatError(f"{where}: the trainer state's {key!r} is {_type_name(value)}, not "
                                 f"{' or '.join(t.__name__ for t in types)}; the checkpoint is damaged: start a "
                                 f"new run (or restore the run directory from a copy)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in trainer["epoch_acc"]):
        raise RunFormatError(f"{where}: the trainer state's 'epoch_acc' should hold numbers; the checkpoint is "
                             f"damaged: start a new run")


@dataclass
class Checkpoint:
    """What a checkpoint holds: model (and `loss.`) tensors, optimiser tensors, trainer state (JSON), and the
    family's per-epoch counts so far (e.g. a VQ-VAE's code histogram)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    trainer: dict[str, Any]
    counts: dict[str, torch.Tensor] = field(default_factory=dict)


class LockHolder(NamedTuple):
    """What a run's lock file says: `pid@host` of the process that holds (or last held) the lock."""

    pid: int
    host: str | None  # None when the file names no host


class Run:
    """An opened run directory. Construct with `open_run(path)` or `create_run(config)`."""

    CONFIG = "config.json"
    STATUS = "status.json"
    HISTORY = "history.jsonl"
    MODEL = "model.safetensors"
    CHECKPOINT = "checkpoint.safetensors"
    OPTIMIZER = "optimizer.safetensors"  # run format 1's checkpoint (with trainer_state.json)
    TRAINER = "trainer_state.json"
    EMBEDDINGS = "embeddings.safetensors"
    PROBES = "probes.json"
    LOCK = ".lock"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise RunFormatError(f"{self.path} is not a directory, so not a run")
        config_path = self.path / self.CONFIG
        try:
            config = _read_json(config_path)
        except FileNotFoundError:
            raise RunFormatError(f"{self.path} is not a run: it has no {self.CONFIG} (a run directory is made "
                                 f"by `python -m core.train`; see docs/RUN_FORMAT.md)") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise RunFormatError(f"{config_path} is not a robust-loss-lab run config (its \"format\" should be "
                                 f"{FORMAT!r}); this directory belongs to something else")
        if config.get("version") not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise RunFormatError(f"{config_path} has format version {config.get('version')!r}; this code reads "
                                 f"versions {readable}: update the app or retrain the run")
        check_config_types(config, config_path)
        self.format_version: int = int(config["version"])
        self.config: dict = upgrade_config(config)
        self.run_id: str = str(config["run_id"])
        self.shipped: bool = under_checkpoints(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # -- status and history ------------------------------------------------------------------------
    def status(self) -> dict:
        """status.json, with state "interrupted" when it says running but no process holds the lock."""
        try:
            status = _read_json(self.path / self.STATUS)
        except FileNotFoundError:
            status = {"state": "created"}
        if not isinstance(status, dict):
            raise RunFormatError(f"{self.path / self.STATUS} is not a JSON object")
        if status.get("state") == "running" and not self.is_locked():
            status = {**status, "state": "interrupted",
                      "message": f"the training process (pid {status.get('pid')}) is gone; continue with "
                                 f".venv/bin/python -m core.train --resume {self.path}"}
        return status

    def write_status(self, status: dict) -> None:
        """Replace status.json (atomically); `updated` is stamped here."""
        write_json_atomic(self.path / self.STATUS, _nan_to_null({**status, "updated": now_iso()}), durable=False)

    def history(self, kind: str | None = None) -> list[dict]:
        """history.jsonl's records (kind "step" or "epoch" to filter). Damaged lines are skipped (see
        `read_jsonl` and `clean_record`): a torn or corrupted line reads as absent."""
        records = [r for r in map(clean_record, read_jsonl(self.path / self.HISTORY)) if r is not None]
        return records if kind is None else [r for r in records if r["kind"] == kind]

    def append_history(self, records: dict | Iterable[dict]) -> None:
        append_jsonl(self.path / self.HISTORY, records)

    def truncate_history(self, keep: Callable[[dict], bool]) -> None:
        """Rewrite history keeping the records `keep` accepts (resume drops what came after its checkpoint)."""
        kept = [r for r in self.history() if keep(r)]
        text = "".join(json.dumps(_nan_to_null(r), allow_nan=False) + "\n" for r in kept)
        with _atomic(self.path / self.HISTORY) as tmp:
            tmp.write_text(text, encoding="utf-8")

    # -- checkpoints -------------------------------------------------------------------------------
    @property
    def has_checkpoint(self) -> bool:
        return (self.path / self.CHECKPOINT).is_file() or (self.path / self.TRAINER).is_file()

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Commit a checkpoint in one step, then refresh the weights file readers use.

        The commit: model, loss and optimiser tensors and the trainer state (JSON, in the safetensors
        metadata) go into one file, written under a temporary name, fsynced and renamed over
        checkpoint.safetensors. Until that rename the previous checkpoint is the whole of it; after it,
        the new one is. Then model.safetensors (the weights alone) is rewritten from it; a crash between
        the two leaves that file one checkpoint behind, which the next save or the end of training mends.
        """
        step = str(checkpoint.trainer["global_step"])
        tensors = {f"model/{k}": v for k, v in checkpoint.model.items()}
        tensors.update({f"optimizer/{k}": v for k, v in checkpoint.optimizer.items()})
        tensors.update({f"counts/{k}": v for k, v in checkpoint.counts.items()})
        metadata = {"format": FORMAT, "kind": "checkpoint", "global_step": step,
                    "trainer_state": json.dumps(checkpoint.trainer, allow_nan=False, default=_json_default)}
        write_safetensors_atomic(self.path / self.CHECKPOINT, tensors, metadata)
        for old in (self.TRAINER, self.OPTIMIZER):  # a run-format-1 checkpoint this one replaces
            with contextlib.suppress(FileNotFoundError):
                (self.path / old).unlink()
        self.save_weights(checkpoint.model, int(step))

    def save_weights(self, model: dict[str, torch.Tensor], step: int) -> None:
        """model.safetensors: the weights as of optimiser step `step` (the model's and, under `loss.`, the
        loss's tensors)."""
        write_safetensors_atomic(self.path / self.MODEL, model, {"format": FORMAT, "global_step": str(step)})

    def load_checkpoint(self) -> Checkpoint | None:
        """The last committed checkpoint, or None if the run has none; RunFormatError, naming the file and
        the fix, if it cannot be read. Reads run format 1's three-file checkpoint too."""
        file = self.path / self.CHECKPOINT
        if not file.is_file():
            return self._load_checkpoint_v1()
        meta = self._metadata(file)
        try:
            trainer = json.loads(meta.get("trainer_state", ""))
        except (json.JSONDecodeError, RecursionError):
            trainer = None
        if not isinstance(trainer, dict):
            raise RunFormatError(f"{file} holds no readable trainer state; the checkpoint is damaged: start a new "
                                 f"run (or restore the run directory from a copy)")
        _check_trainer_state(trainer, file)
        tensors = self._load_tensors(file)
        model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        optimizer = {k[len("optimizer/"):]: v for k, v in tensors.items() if k.startswith("optimizer/")}
        counts = {k[len("counts/"):]: v for k, v in tensors.items() if k.startswith("counts/")}
        return Checkpoint(model, optimizer, trainer, counts)

    def _load_checkpoint_v1(self) -> Checkpoint | None:
        """Run format 1: optimizer.safetensors, model.safetensors and trainer_state.json, stamped with one
        global step (written in turn, so a crash could leave them from different steps: refused)."""
        try:
            trainer = _read_json(self.path / self.TRAINER)
        except FileNotFoundError:
            return None
        if not isinstance(trainer, dict):
            raise RunFormatError(f"{self.path / self.TRAINER} is not a JSON object; the checkpoint is damaged")
        _check_trainer_state(trainer, self.path / self.TRAINER)
        step = str(trainer.get("global_step"))
        tensors = {}
        for name in (self.MODEL, self.OPTIMIZER):
            file = self.path / name
            meta = self._metadata(file)
            if meta.get("global_step") != step:
                raise RunFormatError(f"{file} is from step {meta.get('global_step')} but {self.TRAINER} from step "
                                     f"{step}: the checkpoint is torn (a crash while saving?); start a new run")
            tensors[name] = self._load_tensors(file)
        return Checkpoint(tensors[self.MODEL], tensors[self.OPTIMIZER], trainer)

    @staticmethod
    def _metadata(file: Path) -> dict:
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt") as fh:
                return fh.metadata() or {}
        except FileNotFoundError:
            raise RunFormatError(f"{file} is missing; the run's checkpoint is incomplete") from None
        except (SafetensorError, OSError) as exc:
            raise RunFormatError(f"{file} is not a readable safetensors file ({exc})") from exc

    @staticmethod
    def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(file), device="cpu")
        except FileNotFoundError:
            raise RunFormatError(f"{file} is missing") from None
        except (SafetensorError, OSError) as exc:
            raise RunFormatError(f"{file} is not a readable safetensors file ({exc})") from exc

    def model_tensors(self) -> dict[str, torch.Tensor]:
        """model.safetensors as saved: the network's weights, and the loss's under `loss.` (a trained model is
        rebuilt from them by `core.families.load_objective`)."""
        if not (self.path / self.MODEL).is_file():
            raise RunFormatError(f"run {self.run_id} has no weights yet ({self.MODEL} is written at each epoch end)")
        return self._load_tensors(self.path / self.MODEL)

    # -- embeddings, projections, probes ---------------------------------------------------------------
    @property
    def has_embeddings(self) -> bool:
        return (self.path / self.EMBEDDINGS).is_file()

    def embeddings(self) -> dict[str, torch.Tensor]:
        """The validation set's representation z (n, d) and the family's extras (a VAE's logvar, a
        VQ-VAE's z_q and codes), labels (n,), index (n,), source_index (n,) and, when small, images
        (n, C, H, W) uint8. Written when training finishes. (Run format 1 called z "mu".)"""
        if not self.has_embeddings:
            raise RunFormatError(f"run {self.run_id} has no embeddings yet (state {self.status().get('state')!r}); "
                                 f"they are written when training finishes")
        tensors = self._load_tensors(self.path / self.EMBEDDINGS)
        if "z" not in tensors and "mu" in tensors:
            tensors["z"] = tensors.pop("mu")
        if "images" not in tensors and "index" in tensors:
            images = shared_images(self.path.parent, self.config.get("dataset"), tensors["index"])
            if images is not None:
                tensors["images"] = images
        return tensors

    def save_embeddings(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.format_version == 1 and "z" in tensors:  # a format-1 run keeps its files in format 1
            tensors = {("mu" if k == "z" else k): v for k, v in tensors.items()}
        write_safetensors_atomic(self.path / self.EMBEDDINGS, tensors, {"format": FORMAT})

    @property
    def projections_dir(self) -> Path:
        """Where cached projections go: the run's `projections/`; for a shipped (read-only) run, a folder
        under the user's runs root (`<runs_root>/.shipped-cache/<run_id>/projections`)."""
        if self.shipped:
            return runs_root() / ".shipped-cache" / self.run_id / "projections"
        return self.path / "projections"

    def _projection_file(self, method: str, key: str) -> Path:
        for part in (method, key):
            if not SAFE_NAME.match(part):
                raise ValueError(f"projection method/key {part!r} must be letters, digits, '.', '_' or '-'")
        return self.projections_dir / f"{method}-{key}.safetensors"

    def save_projection(self, method: str, key: str, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> Path:
        file = self._projection_file(method, key)
        file.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors_atomic(file, tensors, metadata)
        return file

    def load_projection(self, method: str, key: str) -> dict[str, torch.Tensor] | None:
        """A cached projection, or None when there is none (or it is unreadable: recompute it). A shipped
        run's own projections/ (written when it was shipped) is looked in before the user's cache."""
        file = self._projection_file(method, key)
        for candidate in dict.fromkeys((self.path / "projections" / file.name, file)):
            if not candidate.is_file():
                continue
            try:
                return load_file(str(candidate), device="cpu")
            except (SafetensorError, OSError):
                continue
        return None

    # -- evaluations: results computed from a finished run and cached with it (neighbour grids, ROC, ...) --
    EVALUATIONS = "evaluations"

    def _evaluation_dir(self) -> Path:
        """The run's `evaluations/`; for a shipped run, the user's cache (`<runs_root>/.shipped-cache/...`)."""
        if self.shipped:
            return runs_root() / ".shipped-cache" / self.run_id / self.EVALUATIONS
        return self.path / self.EVALUATIONS

    def _evaluation_files(self, name: str, suffix: str) -> list[Path]:
        if not SAFE_NAME.match(name):
            raise ValueError(f"evaluation name {name!r} must be letters, digits, '.', '_' or '-'")
        file = f"{name}{suffix}"
        return list(dict.fromkeys((self.path / self.EVALUATIONS / file, self._evaluation_dir() / file)))

    def save_evaluation(self, name: str, results: dict, tensors: dict[str, torch.Tensor] | None = None,
                        folder: Path | None = None) -> None:
        """Cache an evaluation: `<name>.json` (results) and, with tensors, `<name>.safetensors`; `folder`
        instead of the usual place (`core.ship` writes a shipped run's own evaluations/)."""
        target = Path(folder) if folder is not None else self._evaluation_dir()
        target.mkdir(parents=True, exist_ok=True)
        if tensors:
            write_safetensors_atomic(target / f"{name}.safetensors", tensors, {"format": FORMAT})
        write_json_atomic(target / f"{name}.json", results)

    def evaluation(self, name: str) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """A cached evaluation (its results and tensors), or None when there is none or it is unreadable.
        A shipped run's own evaluations/ is looked in before the user's cache."""
        for file in self._evaluation_files(name, ".json"):
            try:
                results = _read_json(file)
            except (FileNotFoundError, RunFormatError):
                continue
            if not isinstance(results, dict):
                continue
            tensor_file = file.with_suffix(".safetensors")
            tensors: dict[str, torch.Tensor] = {}
            if tensor_file.is_file():
                try:
                    tensors = load_file(str(tensor_file), device="cpu")
                except (SafetensorError, OSError):
                    continue
            return results, tensors
        return None

    def probes(self) -> dict | None:
        try:
            data = _read_json(self.path / self.PROBES)
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def save_probes(self, results: dict) -> None:
        write_json_atomic(self.path / self.PROBES, results)

    # -- the lock ----------------------------------------------------------------------------------
    def is_locked(self) -> bool:
        """True while a process holds the run's lock (trains into it)."""
        try:
            fd = os.open(self.path / self.LOCK, os.O_RDONLY)
        except (FileNotFoundError, PermissionError):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, wait_s: float = 1.0) -> Iterator[None]:
        """Hold the run's exclusive lock for the block; RunLocked if another process holds it.

        `fcntl.flock`: the kernel releases it when this process exits, however it exits. `wait_s`
        rides out a reader's momentary shared lock (`is_locked`)."""
        if self.shipped:
            raise RunFormatError(f"{self.path} is a shipped run (under checkpoints/), read-only; train a new run")
        try:
            fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise RunFormatError(f"{self.path / self.LOCK} is a directory, where the run's lock file belongs; "
                                 f"remove it (nothing of the run is in it) and try again") from None
        except PermissionError as exc:
            raise RunFormatError(f"cannot write {self.path / self.LOCK} ({exc.strerror}); the run folder must be "
                                 f"writable to train into it") from None
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = self.lock_holder()
                        owner = f" (pid {holder.pid}@{holder.host or '?'})" if holder else ""
                        raise RunLocked(f"run {self.run_id} is being trained by another process{owner}; stop "
                                        f"that process (or wait for it) before training into {self.path}") from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
            # Holding the lock, this process is the run's only writer: what a killed one left half-written
            # (never renamed into place, so never part of the run) can go.
            remove_stale_temporaries(self.path)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def lock_holder(self) -> LockHolder | None:
        """The process the lock file names (`pid@host`, written by `lock()`), or None if there is no readable
        one. The file is not cleared on release: whether the lock is held now is `is_locked()`."""
        try:
            text = (self.path / self.LOCK).read_text().strip()
        except OSError:
            return None
        pid, _, host = text.partition("@")
        return LockHolder(int(pid), host or None) if pid.isdigit() else None


# ---------------------------------------------------------------------------------------------------
# The store


@dataclass
class RunInfo:
    """A run as `list_runs` sees it. `error` is set (and config/status may be None) for a damaged run."""

    path: Path
    run_id: str
    shipped: bool
    config: dict | None
    status: dict | None
    error: str | None = None

    @property
    def state(self) -> str:
        return (self.status or {}).get("state", "broken" if self.error else "created")

    @property
    def created(self) -> str:
        return str((self.config or {}).get("created", ""))

    @property
    def dataset(self) -> str | None:
        return (self.config or {}).get("dataset")

    @property
    def family(self) -> str | None:
        return (self.config or {}).get("family", "vae" if self.config else None)

    @property
    def loss(self) -> str | None:
        return (self.config or {}).get("loss")

    @property
    def latent_dim(self) -> int | None:
        return (self.config or {}).get("latent_dim")

    def open(self) -> Run:
        return open_run(self.path)


SHARED_IMAGES = "images"  # <root>/images/<dataset>-val.safetensors: validation images stored once per root


def shared_images(root: Path, dataset: Any, index: torch.Tensor) -> torch.Tensor | None:
    """The validation images at `index` (positions in the validation split) from the copy stored once per
    dataset in `<root>/images/` (what core.ship writes beside shipped runs, so they need not each carry
    them), or None when there is none."""
    if not isinstance(dataset, str) or not SAFE_NAME.match(dataset):
        return None
    file = Path(root) / SHARED_IMAGES / f"{dataset}-val.safetensors"
    try:
        shared = load_file(str(file), device="cpu")
    except (FileNotFoundError, SafetensorError, OSError):
        return None
    row_of = {int(v): r for r, v in enumerate(shared.get("index", torch.zeros(0)).tolist())}
    rows = [row_of.get(int(v)) for v in index.tolist()]
    if "images" not in shared or None in rows:
        return None
    return shared["images"][torch.tensor(rows, dtype=torch.int64)]


def open_run(path: str | Path) -> Run:
    """Open an existing run; RunFormatError (with what is wrong) for anything else."""
    return Run(path)


def create_run(config: dict, root: str | Path | None = None) -> Run:
    """Make a new run directory under `root` (default `runs_root()`) from a training config.

    The config is validated and completed by `core.config.normalize_config`; `run_id` may be given in it
    (letters, digits, '.', '_', '-'), else one is made. The directory must not exist yet.
    """
    from core.config import normalize_config

    split = config.get("split")
    cfg = normalize_config({k: v for k, v in config.items() if k not in ("format", "version", "created")},
                           split=split if isinstance(split, dict) else None)
    run_id = config.get("run_id") or new_run_id(cfg)
    if not SAFE_NAME.match(str(run_id)):
        raise ValueError(f"run id {run_id!r} must start with a letter or digit and hold only letters, digits, "
                         f"'.', '_' or '-' (at most 128)")
    root = Path(root).expanduser() if root is not None else runs_root()
    if under_checkpoints(root):
        raise ValueError(f"{root} is the shipped checkpoints folder; train into runs/ and copy the run there")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create the runs folder {root} ({exc.strerror}); choose a writable one "
                              f"(--runs-root or $ROBUST_LOSS_LAB_RUNS)") from None
    path = root / str(run_id)
    if path.exists():
        raise FileExistsError(f"{path} already exists; pick another --run-id or continue it with --resume {path}")
    cfg = {"format": FORMAT, "version": VERSION, "run_id": str(run_id), "created": now_iso(), **cfg}
    # Built under a hidden name and renamed into place, so a run directory never shows without its
    # config.json (list_runs skips hidden folders).
    staging = root / f".creating-{run_id}-{secrets.token_hex(3)}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise PermissionError(f"cannot create a run in {root} ({exc.strerror}); choose a writable folder "
                              f"(--runs-root or $ROBUST_LOSS_LAB_RUNS)") from None
    try:
        write_json_atomic(staging / Run.CONFIG, cfg)
        status = {"state": "created", "epoch": 0, "epochs": cfg["epochs"], "step": 0, "steps_per_epoch": None,
                  "pid": None, "host": None, "started": None, "finished": None, "message": "", "eta_s": None,
                  "images_per_s": None, "updated": now_iso()}
        write_json_atomic(staging / Run.STATUS, status, durable=False)
        if path.exists():
            raise FileExistsError(f"{path} already exists; pick another --run-id")
        try:
            os.rename(staging, path)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another process made it a moment ago
                raise FileExistsError(f"{path} already exists; pick another --run-id") from None
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Run(path)


def list_runs(roots: Iterable[str | Path] | None = None) -> list[RunInfo]:
    """Runs under `roots` (default: runs_root() and checkpoints_root()), newest first.

    Folders without a config.json (or hidden ones) are not runs and are skipped; a folder whose
    config.json is malformed is listed with `error` set so the app can say so.
    """
    roots = [runs_root(), checkpoints_root()] if roots is None else [Path(r) for r in roots]
    out: list[RunInfo] = []
    for root in roots:
        try:
            children = sorted(Path(root).expanduser().iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            if child.name.startswith(".") or not child.is_dir() or not (child / Run.CONFIG).exists():
                continue
            try:
                run = Run(child)
                out.append(RunInfo(run.path, run.run_id, run.shipped, run.config, run.status()))
            except (RunFormatError, OSError) as exc:
                out.append(RunInfo(child.resolve(), child.name, under_checkpoints(child), None, None,
                                   str(exc)))
    out.sort(key=lambda r: (r.created, r.run_id), reverse=True)
    return out


def delete_run(path: str | Path, *, allow_shipped: bool = False) -> None:
    """Delete a run directory. Refuses a non-run (RunFormatError), a shipped run unless allow_shipped,
    and a run a process is training into (RunLocked)."""
    run = open_run(path)
    if run.shipped and not allow_shipped:
        raise PermissionError(f"{run.path} is a shipped run (under checkpoints/); it is not deleted from the app")
    if run.is_locked():
        raise RunLocked(f"run {run.run_id} is being trained; stop it before deleting {run.path}")
    # Rename first so a half-deleted run never lists as a (broken) run.
    doomed = run.path.with_name(f".deleting-{run.path.name}-{secrets.token_hex(2)}")
    os.replace(run.path, doomed)
    shutil.rmtree(doomed)
