#!/usr/bin/env bash
# Creates .venv in the repository and installs what the app (or, with --dev, the tests) needs, saying what it
# does as it goes: each step numbered, pip's own lines for every package (with download bars on a terminal),
# and the time it took. Re-running is cheap: a stamp of the requirement files' hash skips pip when nothing
# changed. PYTHON picks the interpreter that makes the environment (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
want=requirements.txt
[ "${1:-}" = "--dev" ] && want=requirements-dev.txt
python=${PYTHON:-python3}
started=$SECONDS
stamp=".venv/.stamp-$(basename "$want" .txt)"
hash=$(cat requirements.txt "$want" | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  echo "setup: .venv is up to date ($want)"
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup [1/3]: creating .venv with $("$python" --version 2>&1)"
  "$python" -m venv .venv
else
  echo "setup [1/3]: .venv exists ($(.venv/bin/python --version 2>&1)); $want changed since the last install"
fi
# The pinned packages, counted from the files (a "-r other.txt" line pulls that file in).
count=$({ grep -hvE '^[[:space:]]*(#|-r|$)' requirements.txt "$want" || true; } | sort -u | wc -l | tr -d ' ')
echo "setup [2/3]: installing $count packages from $want into .venv. The first time this downloads PyTorch"
echo "             (a few GB) and takes minutes; pip lists each package as it goes."
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -r "$want"
echo "$hash" > "$stamp"
echo "setup [3/3]: done in $((SECONDS - started)) s"
