#!/usr/bin/env bash
# Sets up .venv if needed (scripts/setup.sh says what it installs as it goes), then starts the app:
#   bash scripts/start.sh [streamlit options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "start: starting the app (streamlit run app.py); open the address it prints below"
exec .venv/bin/streamlit run app.py "$@"
