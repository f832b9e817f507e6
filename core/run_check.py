"""What a run's files must hold, from its config, and what is wrong with a run when they do not.

The config decides every tensor a run's files may hold: the weights (the family's objective built on the
meta device, so a huge config costs nothing to check), the optimiser state (one to a few tensors per
parameter), the embeddings (the family's representations, labels, indices and images) and cached
projections. The checks here take tensor *headers* ({name: (safetensors dtype, shape)}), never tensor
data, so both the pages (a damaged run is listed with what is wrong and skipped) and the run archive
(an upload is refused before anything is inflated) use them:

    expected = expected_tensors(config)                       ValueError when the config cannot be built
    weights_mismatch(header, expected) -> str | None           "lacks encoder.0.weight, which ..."
    optimizer_mismatch(header, expected) / embeddings_mismatch(header, expected) / projection_mismatch(...)
    run_problem(info, checks) -> str | None                    a listed run's problem, naming file and fix
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.runs import Run, RunFormatError, RunInfo, check_config_types

__all__ = ["EMBEDDING_CHECKS", "FLOAT_DTYPES", "INT_DTYPES", "MAX_MODEL_PARAMS", "RUN_CHECKS", "Expected",
           "config_problem", "embeddings_mismatch", "expected_tensors", "header", "optimizer_mismatch",
           "projection_mismatch", "run_problem", "weights_mismatch"]

FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
INT_DTYPES = ("I64", "I32")
# The largest model a run may describe (uploads are refused past it): 50 M parameters, 200 MB of float32.
MAX_MODEL_PARAMS = 50_000_000
RUN_CHECKS = ("config", "embeddings", "model", "history", "probes")  # what the Compare page reads
EMBEDDING_CHECKS = ("config", "embeddings")  # what the Embeddings page reads (weights only on a click)
_COMMON_EMBEDDINGS = {"labels": ((), INT_DTYPES), "index": ((), INT_DTYPES), "source_index": ((), INT_DTYPES)}
_OPTIMIZER_KEY = re.compile(r"^state\.(\d{1,6})\.([A-Za-z_]{1,32})$")

Header = dict[str, tuple[str, tuple[int, ...]]]


@dataclass
class Expected:
    """What a config's files must hold."""

    weights: dict[str, tuple[int, ...]]  # model.safetensors: the network's and (under loss.) the loss's
    weight_dtypes: dict[str, tuple[str, ...]]  # the safetensors dtypes each may be stored as
    params: list[tuple[int, ...]]  # the optimiser's parameters, in order
    parameter_count: int
    embeddings: dict[str, tuple[tuple[int, ...], tuple[str, ...]]]  # key -> (shape after n, dtypes)
    required: tuple[str, ...]  # the embeddings' keys a run must have
    val_rows: int  # at most this many validation embeddings


def expected_tensors(config: dict) -> Expected:
    """The tensors a (normalised) config's files hold, from its objective built on the meta device."""
    import torch

    from core.families import family_of, weights_of

    family = family_of(config)
    with torch.device("meta"):  # shapes and counts only: nothing is allocated, however large
        objective = family.build(config)
    params = [tuple(p.shape) for p in objective.parameters()]
    state = weights_of(objective)
    weights = {k: tuple(v.shape) for k, v in state.items()}
    kinds = {k: FLOAT_DTYPES if v.is_floating_point() else (*INT_DTYPES, "U8", "BOOL") for k, v in state.items()}
    shapes = {**_COMMON_EMBEDDINGS, "images": (tuple(config["model"]["image_shape"]), ("U8",))}
    spec = family.embedding_shapes(config)
    shapes.update({k: (shape, FLOAT_DTYPES if kind == "float" else INT_DTYPES) for k, (shape, kind) in spec.items()})
    required = (*family.required_embeddings, "labels")
    if config.get("version") == 1:  # run format 1 called z "mu"
        shapes["mu"] = shapes.pop("z")
        required = tuple("mu" if k == "z" else k for k in required)
    return Expected(weights, kinds, params, sum(math.prod(s) for s in params), shapes, required,
                    int(config["split"]["val"]))


def header(file: Path) -> tuple[Header, str | None]:
    """A safetensors file's tensors {name: (dtype, shape)} from its header, or why it cannot be read.
    safe_open maps the file and checks that the header covers it exactly; it reads no tensor data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            return {k: (fh.get_slice(k).get_dtype(), tuple(fh.get_slice(k).get_shape()))
                    for k in fh.keys()}, None  # noqa: SIM118 (a safe_open handle is no dict)
    except (SafetensorError, OSError, ValueError) as exc:
        return {}, str(exc)


def weights_mismatch(tensors: Header, expected: Expected) -> str | None:
    """How weights (model.safetensors, a checkpoint's model/) differ from the config's model, or None."""
    missing = sorted(set(expected.weights) - set(tensors))
    extra = sorted(set(tensors) - set(expected.weights))
    if missing:
        return f"it lacks {', '.join(missing[:4])}, which config.json's model has"
    if extra:
        return f"it holds {', '.join(map(repr, extra[:4]))}, which config.json's model has not"
    for key, (dtype, shape) in tensors.items():
        if shape != expected.weights[key] or dtype not in expected.weight_dtypes[key]:
            kind = "float" if expected.weight_dtypes[key] == FLOAT_DTYPES else "integer"
            return f"{key} is {dtype} {list(shape)}, config.json's model has {kind} {list(expected.weights[key])}"
    return None


def optimizer_mismatch(tensors: Header, expected: Expected) -> str | None:
    """How optimiser state differs from one to four tensors shaped like each parameter (or scalars)."""
    per_param: dict[int, int] = {}
    for key, (dtype, shape) in tensors.items():
        match = _OPTIMIZER_KEY.match(key)
        pid = int(match.group(1)) if match else -1
        if not 0 <= pid < len(expected.params):
            return f"{key!r} is not the optimiser state of one of the model's {len(expected.params)} parameters"
        per_param[pid] = per_param.get(pid, 0) + 1
        if shape not in (expected.params[pid], ()) or per_param[pid] > 4 or dtype not in FLOAT_DTYPES:
            return f"{key} is {dtype} {list(shape)}, not the shape of parameter {pid} {list(expected.params[pid])}"
    return None


def embeddings_mismatch(tensors: Header, expected: Expected) -> tuple[str | None, int]:
    """How validation embeddings differ from what the config implies (rows n ≤ the validation split,
    each tensor (n, ...) of its kind), and n."""
    for key in expected.required:
        if key not in tensors:
            return f"it lacks {key!r}", 0
    first = expected.required[0]
    dtype, shape = tensors[first]
    want = expected.embeddings[first][0]
    if len(shape) != 1 + len(want) or tuple(shape[1:]) != want or dtype not in FLOAT_DTYPES:
        return (f"{first} is {dtype} {list(shape)}, not float (n, {', '.join(map(str, want))}) for config.json's "
                f"latent size"), 0
    n = shape[0]
    if n > expected.val_rows:
        return (f"it holds {n:,} rows, more than the {expected.val_rows:,} validation images in config.json's split "
                f"(the embeddings are of the validation split)"), n
    if n < 1:
        return "it holds no rows", n
    for key, (dtype, shape) in tensors.items():
        if key not in expected.embeddings:
            return f"it holds {key!r}, which is not part of this run's embeddings ({', '.join(expected.embeddings)})", n
        want, dtypes = expected.embeddings[key]
        if shape != (n, *want) or dtype not in dtypes:
            return f"{key} is {dtype} {list(shape)}, not {'/'.join(dtypes)} {[n, *want]}", n
    return None, n


def projection_mismatch(tensors: Header, rows: int) -> str | None:
    """How a cached projection differs from coords (m ≤ rows, 2 or 3), seconds and quality_* numbers."""
    coords = tensors.get("coords")
    if coords is None or len(coords[1]) != 2 or coords[1][1] not in (2, 3) or coords[1][0] > rows:
        return f"coords is {list(coords[1]) if coords else None}, not (n, 2 or 3) with n at most {rows:,}"
    if "seconds" not in tensors:
        return "it lacks 'seconds'"
    for key, (_, shape) in tensors.items():
        if key != "coords" and (shape != () or not (key == "seconds" or key.startswith("quality_"))):
            return f"it holds {key!r} {list(shape)}; a cached projection holds coords, seconds and quality_* numbers"
    return None


# ---------------------------------------------------------------------------------------------------
# A listed run


def _redo(folder: Path, shipped: bool, *files: str) -> str:
    """How to get damaged files back: shipped runs from the repository; others from their checkpoint
    (a resume of a finished run rewrites its weights and embeddings once they are gone), else retrain."""
    if shipped:
        return "restore checkpoints/ from the repository (git checkout checkpoints/)"
    if (folder / Run.CHECKPOINT).is_file() or (folder / Run.TRAINER).is_file():
        return (f"delete {' and '.join(files)} and run `.venv/bin/python -m core.train --resume {folder}` to write "
                f"{'it' if len(files) == 1 else 'them'} again from the checkpoint")
    return "the run has no checkpoint to rebuild it from: retrain it"


def config_problem(config: Any) -> str | None:
    """What is wrong with a run's config.json (None if nothing): the fields' types, values the config
    module accepts, and a model that builds within MAX_MODEL_PARAMS."""
    if not isinstance(config, dict):
        return "config.json does not hold an object; restore it from a copy or retrain the run"
    try:
        check_config_types(config, "config.json")
    except RunFormatError as exc:
        return str(exc)
    from core.config import normalize_config
    from core.fields import ConfigError

    try:
        normalized = normalize_config(config, split=config["split"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        return f"config.json: {exc}; correct it, or retrain the run"
    if config.get("model") != normalized["model"]:
        return (f"config.json: 'model' {config.get('model')!r:.120} does not match the rest of the config "
                f"({normalized['model']!r:.120}); correct it, or retrain the run")
    try:
        count = expected_tensors(normalized).parameter_count
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        return f"config.json describes a model that cannot be built ({exc}); correct it, or retrain the run"
    if count > MAX_MODEL_PARAMS:
        return (f"config.json describes a model of {count:,} parameters, more than the {MAX_MODEL_PARAMS:,} the "
                f"lab takes; correct it, or retrain the run")
    return None


def run_problem(info: RunInfo, checks: Collection[str] = RUN_CHECKS) -> str | None:
    """What is wrong with a listed run, naming the file (and field) and the fix, or None when the pages
    can show it. checks: "config", "embeddings", "model" (safetensors headers against the config; absent
    files are not damage), "history" (readable), "probes" (the numbers the table reads). No tensor data
    is read."""
    if info.error:
        return info.error
    problem = config_problem(info.config)
    if problem or info.config is None:
        return problem
    expected = expected_tensors(_normalized(info.config))
    for check, name in (("embeddings", Run.EMBEDDINGS), ("model", Run.MODEL)):
        file = info.path / name
        if check not in checks or not file.is_file():
            continue
        tensors, error = header(file)
        fix = _redo(info.path, info.shipped, name, *((Run.EMBEDDINGS,) if name == Run.MODEL else ()))
        if error is not None:
            return f"{name} cannot be read ({error}): it is damaged or cut short; {fix}"
        why = embeddings_mismatch(tensors, expected)[0] if name == Run.EMBEDDINGS else weights_mismatch(tensors,
                                                                                                          expected)
        if why:
            return f"{name}: {why}; {fix}"
    if not ({"history", "probes"} & set(checks)):
        return None
    try:
        run = info.open()
    except (RunFormatError, OSError, RecursionError) as exc:
        return str(exc)
    if "probes" in checks and (info.path / Run.PROBES).is_file():
        from core.probes import well_formed

        try:
            ok = well_formed(run.probes())
        except (RunFormatError, OSError, ValueError, RecursionError):
            ok = False
        if not ok:
            return (f"probes.json is damaged (not the numbers the probes write); delete it and compute the probes "
                    f"again (.venv/bin/python -m core.probes {info.path})")
    return None


def _normalized(config: dict) -> dict:
    from core.config import normalize_config

    return {**normalize_config(config, split=config["split"]), "version": config.get("version")}
