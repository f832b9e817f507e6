"""The repository's root: where `checkpoints/`, `pages/`, `.venv/` and the default `runs/` and `data/` live."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
