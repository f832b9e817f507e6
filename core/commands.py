"""Commands the app shows a person, written so that they work when pasted into a new shell.

A bare `python` on a fresh machine has no torch, and a new shell does not start in the repository, so
every `python -m core.…` the lab prints becomes

    cd <repo> && .venv/bin/python -m core.…      (or this interpreter's own path outside .venv)

and a message that ends in a command is split into its prose and the command, so a page can show the
command in a block of its own (never cut off, with a copy button):

    split_message("stopped after step 6 of 10 of epoch 5; continue with python -m core.train --resume runs/x")
    -> ("stopped after step 6 of 10 of epoch 5", "cd /repo && .venv/bin/python -m core.train --resume runs/x")

`fix_steps(text)` does the same for a dataset's fix (core.datasets' "fix": alternatives, one a line).
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from core.paths import REPO

__all__ = ["REPO", "FixStep", "fix_steps", "pasteable", "python_prefix", "split_message"]


# `python -m core.x …` as the lab's modules write it: a bare or a path-qualified python (3), then -m core.
_PYTHON_M = re.compile(r"(?:(?:\S*/)?python3?(?:\.\d+)?|\.venv/bin/python)\s+-m\s+core\.")
_PIP = re.compile(r"^pip3?\s+install\b")
_SHELL = re.compile(r"^(?:sudo\s+)?(?:apt-get|apt|torchrun|bash|cd|export)\b")
# What joins a message's prose to its command: "; continue with <command>", "; run <command>", "try `…`".
_LEAD_IN = re.compile(r"[;:,]?\s*(?:continue(?: it)? with|run|try|with)\s*[`'\"]?$")


def python_prefix(executable: str | None = None, repo: Path = REPO) -> str:
    """How a new shell reaches this interpreter from the repository: `.venv/bin/python` for the repo's own
    virtual environment (the path is kept relative: the command starts with `cd <repo>`), else its path."""
    exe = Path(executable or sys.executable)
    try:
        relative = exe.relative_to(repo)
    except ValueError:
        return shlex.quote(str(exe))
    return shlex.quote(relative.as_posix())


def _in_repo(path: str, repo: Path) -> str:
    """A path argument, relative to the repository when it lies inside it (shorter, and as valid after cd)."""
    try:
        return Path(path).resolve().relative_to(repo.resolve()).as_posix()
    except (ValueError, OSError):
        return path


def pasteable(command: str, *, executable: str | None = None, repo: Path = REPO) -> str:
    """`command` as a line that works in a new shell: `cd <repo> && <this python> -m core.…`.

    A `python -m core.…` or `pip install …` gets this interpreter and the `cd`; paths inside the repository
    are made relative to it; any other command (apt-get, torchrun) is returned as it is."""
    command = command.strip().strip("`").strip()
    match = _PYTHON_M.match(command)
    if match:
        rest = command[match.end() - len("core."):]
    elif _PIP.match(command):
        rest = "pip install" + command[_PIP.match(command).end():]
    else:
        return command
    words = [_in_repo(w, repo) if w.startswith("/") else w for w in rest.split(" ")]
    return f"cd {shlex.quote(str(repo))} && {python_prefix(executable, repo)} -m {' '.join(words)}"


def split_message(message: str, *, executable: str | None = None, repo: Path = REPO) -> tuple[str, str | None]:
    """(prose, pasteable command or None) of a status message whose tail is a `python -m core.…` command."""
    text = (message or "").strip()
    match = _PYTHON_M.search(text)
    if not match:
        return text, None
    end = len(text)
    if match.start() > 0 and text[match.start() - 1] == "`" and "`" in text[match.start():]:
        end = text.index("`", match.start())  # a quoted command: it ends at its closing backquote
    command = text[match.start():end].strip().rstrip("'\".")
    prose = _LEAD_IN.sub("", text[:match.start()].rstrip("` ")).rstrip(" ;:,(`")
    after = text[end + 1:].strip() if end < len(text) else ""
    if after and not after.startswith("in a terminal"):
        prose = f"{prose}; {after}"
    return prose, pasteable(command, executable=executable, repo=repo)


@dataclass(frozen=True)
class FixStep:
    """One way to fix something: what to do, in words, and the command that does it (None: no command)."""

    text: str
    command: str | None = None


def fix_steps(fix: str, *, executable: str | None = None, repo: Path = REPO) -> list[FixStep]:
    """A multi-line fix ("<command>   (note)\\nor copy …\\nor, on Debian/Ubuntu: sudo apt-get …") as steps.

    Each line is one alternative; a line that is a command (python -m, pip install, apt-get, …) becomes a
    pasteable command with its note as text, any other line stays prose."""
    steps: list[FixStep] = []
    for raw in (fix or "").splitlines():
        line = re.sub(r"^or\b,?\s*", "", raw.strip())
        if not line:
            continue
        lead, colon, tail = line.partition(": ")
        prefix = f"{lead}:" if colon and _is_command(tail) else ""
        body = tail if prefix else line
        # The note after a command: "<command>   (needs internet; …)" or "<command> (it ships the digits)".
        match = re.match(r"^(.*?)(?:\s{2,}|\s+(?=\())\(?(.*?)\)?$", body)
        command, note = (match.group(1), match.group(2)) if match else (body, "")
        if _is_command(command):
            text = " ".join(p for p in (prefix, note.strip()) if p)
            steps.append(FixStep(text, pasteable(command, executable=executable, repo=repo)))
        else:
            steps.append(FixStep(line))
    return steps


def _is_command(text: str) -> bool:
    return bool(_PYTHON_M.match(text) or _PIP.match(text) or _SHELL.match(text))
