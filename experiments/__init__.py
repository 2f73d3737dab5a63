"""The runner, run store and experiment definitions (one floor above the nanogpt library)."""
