"""The runner, run store and experiment definitions (one floor above the nanogpt library)."""

from pathlib import Path

# the checkout: git commits, docs/, `python -m` of benchmarks
PROJECT_ROOT = Path(__file__).resolve().parent.parent
