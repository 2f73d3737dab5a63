"""Named starting configs. Each gives the *full* model; variants switch components off from here.

Values are flat keys of `ModelConfig` / `TrainConfig` (see experiments.config). `variants` holds
per-variant training settings that differ from the preset's, keyed `experiment/variant` (the lecture
trains its bigram with a larger LR for fewer steps); like a variant's own switches, they win over
--set.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The lecture's small stage (gpt.py before the scale-up): minutes on a laptop CPU.
    "tutorial": {
        "settings": dict(
            batch_size=32, block_size=8, n_embd=32, n_head=4, n_layer=3, dropout=0.0,
            lr=1e-3, lr_schedule="constant", max_iters=5000, eval_interval=500, eval_iters=200,
            activation="relu", bias=True, weight_decay=0.01, beta2=0.999,
        ),
        "variants": {"ladder/bigram": dict(lr=1e-2, max_iters=3000, eval_interval=300)},
    },
    # nanoGPT's shakespeare_char recipe, shrunk for a CPU as its README suggests. dtype auto: bf16
    # autocast where the CPU has AVX512_BF16/AMX (1.89x the tokens/s of fp32 there, same val loss),
    # fp32 where bf16 is emulated (AVX2: bf16 runs at 0.07x, ~14x slower). docs/benchmarks.md has
    # both. The tutorial's tiny matmuls are overhead-bound and stay fp32 everywhere (bf16 measured
    # 0.87x even where native).
    "cpu": {
        "settings": dict(
            batch_size=12, block_size=64, n_embd=128, n_head=4, n_layer=4, dropout=0.0,
            lr=1e-3, lr_schedule="cosine", warmup_iters=100, min_lr=1e-4, lr_decay_iters=2000,
            max_iters=2000, eval_interval=250, eval_iters=20, beta2=0.99, weight_decay=0.1,
            grad_clip=1.0, activation="gelu", bias=False, weight_tying=True, dtype="auto",
        ),
        "variants": {},
    },
    # The lecture's scaled-up model (the seed experiment, on a GPU; bf16 autocast where native, as
    # nanoGPT does).
    "seed": {
        "settings": dict(
            batch_size=64, block_size=256, n_embd=384, n_head=6, n_layer=6, dropout=0.2,
            lr=3e-4, lr_schedule="constant", max_iters=2000, eval_interval=200, eval_iters=200,
            activation="relu", bias=True, weight_decay=0.01, dtype="auto",
            # tens of seconds of compile pay off over 2000 GPU steps; --set compile=false to skip
            compile=True,
        ),
        "variants": {},
    },
    # The modern-components experiments (modern, modern_leave_one_out, norms): a 64-character
    # context, long enough for positions to matter, at a width and length small enough that the
    # 7-rung modern ladder over 3 seeds trains on a laptop CPU. fp32: bf16 is emulated on AVX2-only
    # CPUs. lr 5e-3 rather than 1e-2, at which some seeds stall on a plateau. The full model is
    # GPT-2's block (pre-LayerNorm, GELU, learned positions, biases, tied embeddings).
    "modern": {
        "settings": dict(
            batch_size=16, block_size=64, n_embd=64, n_head=4, n_layer=4, dropout=0.0,
            lr=5e-3, lr_schedule="cosine", warmup_iters=50, min_lr=5e-4, lr_decay_iters=900,
            max_iters=900, eval_interval=300, eval_iters=20, beta2=0.99, weight_decay=0.1,
            grad_clip=1.0, activation="gelu", bias=True, weight_tying=True,
            scaled_residual_init=True,
        ),
        "variants": {},
    },
    # Seconds, for tests: a tiny model that still has every component.
    "smoke": {
        "settings": dict(
            batch_size=8, block_size=8, n_embd=16, n_head=2, n_layer=2, dropout=0.0,
            lr=1e-2, lr_schedule="constant", max_iters=20, eval_interval=10, eval_iters=2,
            log_interval=10, activation="relu", bias=True,
        ),
        "variants": {},
    },
}
