#!/usr/bin/env bash
# Creates .venv in the repository and installs what the app (or, with --dev, the tests) needs.
# Re-running is cheap: a stamp of the requirement files' hash skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
want=requirements.txt
[ "${1:-}" = "--dev" ] && want=requirements-dev.txt
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=".venv/.stamp-$(basename "$want" .txt)"
hash=$(cat requirements.txt "$want" | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  echo "setup: installing $want into .venv (first time: torch is a few GB)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$want"
  echo "$hash" > "$stamp"
fi
