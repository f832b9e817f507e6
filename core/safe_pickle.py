"""Read the plain-data subset of a pickle without executing it (for CIFAR-10's python batches).

`pickle.load` runs whatever the file names; a downloaded or user-supplied file must never get that far.
This module walks the opcode stream with `pickletools.genops` (a parser that builds nothing) and
interprets it on its own small stack machine that knows only plain values:

    None, bool, int, float, str, bytes, list, tuple, dict, and numpy arrays of plain dtypes

A pickle may name callables ("globals"); we never import them. Four names are recognised as tokens and
rebuilt by our own code from their (plain) arguments, which is all numpy and Python 3 need to store an
array or a bytes object:

    numpy.core.multiarray._reconstruct(ndarray, (0,), b"b") + BUILD (1, shape, dtype, fortran, raw)
    numpy._core.numeric._frombuffer(raw, dtype, shape, order)            (protocol 5)
    numpy.dtype("u1", False, True) + BUILD (3, "|", ...)                 (plain codes only)
    _codecs.encode(text, "latin1")                                      (bytes under protocol 2)

Any other global, object construction opcode (INST, OBJ, NEWOBJ, PERSID, EXT*) or an object-dtype
array raises `UnsafePickleError`. Strings written by Python 2 (`STRING`, `BINSTRING`) come back as
bytes, like `pickle.load(..., encoding="bytes")`, which is how CIFAR-10's batches were written.
"""

from __future__ import annotations

import io
import pickletools
import re
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "load_plain"]


class UnsafePickleError(ValueError):
    """The pickle holds something other than plain data, or is malformed."""


_MARK = object()

# Codes a dtype may have: booleans, integers, floats of fixed size. No objects, no structured dtypes.
_PLAIN_DTYPE = re.compile(r"^(b1|[iu][1248]|f[248])$")
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")


class _Global:
    """A callable named by the pickle; only a token, never imported."""

    def __init__(self, module: str, name: str) -> None:
        self.key = f"{module}.{name}"
        allowed = {
            "numpy.ndarray",
            "numpy.dtype",
            "_codecs.encode",
        }
        allowed |= {f"{m}._reconstruct" for m in _NUMPY_MODULES}
        allowed |= {f"{m}._frombuffer" for m in _NUMPY_MODULES}
        if self.key not in allowed:
            raise UnsafePickleError(f"the pickle names {self.key!r}; only plain data is read from pickles")

    @property
    def short(self) -> str:
        return self.key.rsplit(".", 1)[-1]


class _ArrayStub:
    """`_reconstruct(ndarray, ...)` waiting for its BUILD state."""


class _DtypeStub:
    """`numpy.dtype(code, ...)` waiting for its BUILD state (the byte order)."""

    def __init__(self, code: str) -> None:
        if not _PLAIN_DTYPE.match(code):
            raise UnsafePickleError(f"dtype {code!r} is not a plain numeric dtype")
        self.dtype = np.dtype(code)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise UnsafePickleError(f"expected a string, got {type(value).__name__}")


def _as_dtype(value: Any) -> np.dtype:
    if isinstance(value, _DtypeStub):
        return value.dtype
    raise UnsafePickleError("array without a plain dtype")


def _call(func: Any, args: Any) -> Any:
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        raise UnsafePickleError("REDUCE on something that is not an allowed global")
    name = func.short
    if name == "encode":
        if len(args) != 2 or _text(args[1]).lower().replace("-", "") != "latin1":
            raise UnsafePickleError("_codecs.encode with unexpected arguments")
        return _text(args[0]).encode("latin-1")
    if name == "dtype":
        return _DtypeStub(_text(args[0]))
    if name == "_reconstruct":
        if not args or not isinstance(args[0], _Global) or args[0].key != "numpy.ndarray":
            raise UnsafePickleError("_reconstruct of something other than numpy.ndarray")
        return _ArrayStub()
    if name == "_frombuffer":
        if len(args) != 4:
            raise UnsafePickleError("_frombuffer with unexpected arguments")
        raw, dtype, shape, order = args
        return _array(raw, _as_dtype(dtype), shape, _text(order) == "F")
    raise UnsafePickleError(f"calling {func.key!r} is not allowed")


def _array(raw: Any, dtype: np.dtype, shape: Any, fortran: bool) -> np.ndarray:
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError("array data is not raw bytes (object arrays are refused)")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise UnsafePickleError(f"bad array shape {shape!r}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.itemsize != len(raw):
        raise UnsafePickleError(f"array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} "
                                f"bytes, the pickle holds {len(raw)}")
    flat = np.frombuffer(bytes(raw), dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


def _build(obj: Any, state: Any) -> Any:
    if isinstance(obj, _DtypeStub):
        if not isinstance(state, tuple) or len(state) < 2:
            raise UnsafePickleError("bad dtype state")
        order = _text(state[1])
        if order not in "<>|=":
            raise UnsafePickleError(f"bad byte order {order!r}")
        if order in "<>":
            obj.dtype = obj.dtype.newbyteorder(order)
        return obj
    if isinstance(obj, _ArrayStub):
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError("bad ndarray state")
        _version, shape, dtype, fortran, raw = state
        return _array(raw, _as_dtype(dtype), shape, bool(fortran))
    raise UnsafePickleError(f"BUILD on {type(obj).__name__} is not allowed")


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise UnsafePickleError("malformed pickle: no MARK")


def load_plain(data: bytes) -> Any:
    """Decode `data` (a whole pickle) into plain Python values and numpy arrays, running nothing.

    Raises `UnsafePickleError` when the stream asks for anything else or is malformed.
    """
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1:
                    raise UnsafePickleError("malformed pickle: stack not empty at STOP")
                result = stack.pop()
                if isinstance(result, (_ArrayStub, _DtypeStub, _Global)):
                    raise UnsafePickleError("pickle ends with an unfinished object")
                return result
            if name == "MARK":
                stack.append(_MARK)
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"):
                stack.append(arg)
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                # Python 2 str: raw bytes, as pickle.load(encoding="bytes") gives them.
                stack.append(arg.encode("latin-1") if isinstance(arg, str) else bytes(arg))
            elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                stack.append(bytes(arg))
            elif name in ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
                stack.append(arg)
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "LIST":
                stack.append(_pop_mark(stack))
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif name == "APPENDS":
                items = _pop_mark(stack)
                stack[-1].extend(items)
            elif name == "SETITEM":
                value = stack.pop()
                key = stack.pop()
                stack[-1][key] = value
            elif name == "SETITEMS":
                items = _pop_mark(stack)
                target = stack[-1]
                for key, value in zip(items[::2], items[1::2], strict=True):
                    target[key] = value
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                stack.append(_Global(module, attr))
            elif name == "STACK_GLOBAL":
                attr = stack.pop()
                module = stack.pop()
                stack.append(_Global(_text(module), _text(attr)))
            elif name == "REDUCE":
                args = stack.pop()
                func = stack.pop()
                stack.append(_call(func, args))
            elif name == "BUILD":
                state = stack.pop()
                stub = stack[-1]
                stack[-1] = built = _build(stub, state)
                if built is not stub:  # the memo may hold the stub: point it at the array
                    for key, value in memo.items():
                        if value is stub:
                            memo[key] = built
            else:
                raise UnsafePickleError(f"pickle opcode {name} is not plain data; refusing to run it")
    except UnsafePickleError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise UnsafePickleError(f"malformed pickle: {exc}") from exc
    raise UnsafePickleError("malformed pickle: no STOP opcode")
