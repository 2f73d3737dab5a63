"""Benchmarks, each run as `python -m benchmarks.X` from the project root: training speed
(`train_speed`, with its in-process A/B `interleave`), sweep throughput (`sweep_throughput`), the
peers side by side (`peers`) and the W&B mirror's overhead (`wandb_overhead`). They measure the
project's own entry points; nothing imports them."""
