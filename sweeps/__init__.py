"""Sweeps: Optuna studies (ablation grids and hyperparameter searches) and W&B sweep configs.

Every trial is an ordinary run trained by `experiments.runner.train_run` into the run store, so the
analysis reads sweep runs like any other. Optuna is imported inside functions: a plain training
run never needs it.
"""
