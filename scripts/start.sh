#!/usr/bin/env bash
# Sets up .venv if needed, then starts the app: bash scripts/start.sh [streamlit options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamlit run app.py "$@"
