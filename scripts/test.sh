#!/usr/bin/env bash
# Sets up .venv and the Debian packages the tests use, checks style, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
bash scripts/setup.sh --dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
